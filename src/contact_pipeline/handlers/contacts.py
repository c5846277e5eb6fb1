"""Decisions for contact commands: pure functions from (stored contact, command) to an outcome.

Nothing here touches Kafka or the store, so the rules can be tested directly.
The batch applier in ``handlers/batch.py`` loads the documents, calls
:func:`decide` and writes what it returns.
"""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from contact_pipeline.domain.commands import Envelope
from contact_pipeline.domain.contact import DEFAULT_PREFERENCES
from contact_pipeline.domain.errors import CommandRejected
from contact_pipeline.domain.events import change_event
from contact_pipeline.handlers.consent import apply_consent, consent_event, record_send
from contact_pipeline.handlers.memberships import (
    MembershipChange,
    TenantLists,
    apply_membership_command,
    drop_on_delete,
    evaluate_dynamic,
    list_delta,
    membership_events,
)

COMMAND_HISTORY_SIZE = 50
"""Command ids kept on each contact document. They make a redelivery that
arrives after a crash, between the contact write and the result write, a no-op."""

CLOCK_SKEW = timedelta(minutes=5)
"""How far a producer's clock may run ahead of the worker's before a send time is rejected."""

HISTORY_EVENTS_KEPT = 10
"""History entries that keep their membership and consent events for republishing."""

EVENT_NAMESPACE = uuid.UUID("6f1c7b7e-4a53-4c5e-9a43-3c1f0d1f5b2a")
CONTACT_ID_NAMESPACE = uuid.UUID("0b8f3a9e-2f5d-4e0c-8a8e-5d7c1e2b9f41")

OPTIONAL_FIELDS = ("title", "company", "phone", "socialProfiles")
INTERNAL_FIELDS = ("_id", "_commands", "emailKey")


@dataclass(frozen=True)
class ContactCommand:
    """A validated, normalised contact command ready to apply."""

    envelope: Envelope
    contact_id: str
    fields: dict[str, Any]
    """Normalised contact fields in JSON (camelCase) form: create payload or update patch."""

    email_key: str | None = None
    """Uniqueness key of the e-mail address in ``fields``, when it has one."""

    expected_version: int | None = None
    if_exists: str = "reject"
    list_id: str | None = None
    """The list of a membership command."""

    @property
    def type(self) -> str:
        return self.envelope.type

    @property
    def tenant_id(self) -> str:
        return self.envelope.tenant_id

    @property
    def doc_id(self) -> str:
        return contact_doc_id(self.tenant_id, self.contact_id)


@dataclass
class Write:
    """A change to store: the new document and what to publish once it is stored."""

    command: ContactCommand
    document: dict[str, Any]
    previous_version: int | None
    """Version the stored document must still have; None when the contact is new."""

    code: str
    changed_fields: list[str]
    event: dict[str, Any] | None
    claim_email_key: str | None = None
    release_email_key: str | None = None
    merged: bool = False
    ignored_fields: list[str] = field(default_factory=list)
    membership_events: list[dict[str, Any]] = field(default_factory=list)
    consent_events: list[dict[str, Any]] = field(default_factory=list)
    list_delta: dict[str, int] = field(default_factory=dict)
    """Change of each list's active member count that this write makes."""


@dataclass
class AlreadyApplied:
    """The contact document already records this command id: nothing to write."""

    command: ContactCommand
    entry: dict[str, Any]


Decision = Write | AlreadyApplied


def contact_doc_id(tenant_id: str, contact_id: str) -> str:
    """Return the document id of a contact; tenant first, so ids never collide across tenants."""
    return f"{tenant_id}:{contact_id}"


def derive_contact_id(tenant_id: str, email_key: str) -> str:
    """Return the contact id the CLI uses for an e-mail address.

    Deriving it from tenant and normalised e-mail gives a re-import of the same
    address the same partition key, so its commands are ordered with the first one.
    """
    return str(uuid.uuid5(CONTACT_ID_NAMESPACE, f"{tenant_id}\n{email_key}"))


def event_id(tenant_id: str, command_id: str) -> str:
    """Return the change event id of a command; a republished event keeps the same id."""
    return str(uuid.uuid5(EVENT_NAMESPACE, f"{tenant_id}\n{command_id}"))


def decide(
    doc: dict[str, Any] | None,
    command: ContactCommand,
    now: datetime,
    lists: TenantLists | None = None,
) -> Decision:
    """Decide the outcome of one contact command against the stored document.

    ``lists`` are the tenant's lists: a contact change is evaluated against
    the dynamic ones in the same write, and membership commands check theirs.
    Raises :class:`CommandRejected` when the command cannot apply to this state.
    """
    if doc is not None:
        entry = _history_entry(doc, command.envelope.command_id)
        if entry is not None:
            return AlreadyApplied(command, entry)

    lists = lists or TenantLists()
    if command.type.startswith("membership."):
        return _decide_membership(doc, command, now, lists)
    if command.type.startswith("consent.") or command.type == "message.sent":
        return _decide_consent_or_send(doc, command, now, lists)
    if command.type == "contact.create":
        write = _decide_create(doc, command, now)
        if doc is not None and not is_live(doc) and doc.get("lists"):
            # A contact created again keeps the unsubscribes of the deleted one.
            write.document["lists"] = copy.deepcopy(doc["lists"])
        if doc is not None and not is_live(doc) and doc.get("consent"):
            write.document["consent"] = copy.deepcopy(doc["consent"])
    elif command.type == "contact.update":
        write = _decide_update(doc, command, now)
    elif command.type == "contact.delete":
        write = _decide_delete(doc, command, now)
        assert doc is not None  # a delete of a missing contact was rejected above
        _attach_memberships(write, drop_on_delete(doc, write.document), now)
        return write
    else:
        raise CommandRejected("invalid_command", f"unsupported command type {command.type!r}")

    if write.code != "unchanged":
        _attach_memberships(write, evaluate_dynamic(write.document, lists.dynamic(), now), now)
    return write


def _decide_membership(
    doc: dict[str, Any] | None, command: ContactCommand, now: datetime, lists: TenantLists
) -> Write:
    assert command.list_id is not None
    doc = _require_live(doc, command, "does not exist or was deleted; create it first")
    document = copy.deepcopy(doc)
    changes = apply_membership_command(
        document, command.envelope, command.list_id, command.fields, lists.get(command.list_id), now
    )
    if not changes:
        return _write(command, document, doc["version"], "unchanged", None, [], now)
    document["version"] = doc["version"] + 1
    own = [change for change in changes if change.list_id == command.list_id] or changes
    code = own[-1].event_type.removeprefix("membership.")
    write = _write(command, document, doc["version"], code, None, [], now)
    _attach_memberships(write, changes, now)
    return write


def _decide_consent_or_send(
    doc: dict[str, Any] | None, command: ContactCommand, now: datetime, lists: TenantLists
) -> Write:
    doc = _require_live(doc, command, "does not exist or was deleted; create it first")
    if command.list_id is not None:
        list_def = lists.get(command.list_id)
        if list_def is None or list_def.deleted:
            raise CommandRejected(
                "list_not_found",
                f"list {command.list_id} does not exist in tenant {command.tenant_id} "
                "or was deleted",
                field="payload.listId",
                value=command.list_id,
            )
    document = copy.deepcopy(doc)
    document["version"] = doc["version"] + 1
    if command.type == "message.sent":
        sent_at = command.fields.get("sentAt") or command.envelope.issued_at
        if sent_at > now + CLOCK_SKEW:
            raise CommandRejected(
                "invalid_value",
                f"sentAt {sent_at.isoformat()} is in the future; record a send after it "
                "happened, with the time it went out",
                field="payload.sentAt",
                value=sent_at.isoformat(),
            )
        record_send(document, {**command.fields, "listId": command.list_id}, sent_at)
        # A contact.updated event, so that consumers and the audit trail see the send.
        changed = [f"sends.{command.list_id}.{command.fields['channel']}"]
        return _write(
            command, document, doc["version"], "recorded", "contact.updated", changed, now
        )

    payload = {**command.fields, "listId": command.list_id}
    entry = apply_consent(document, command.envelope, payload, now)
    write = _write(command, document, doc["version"], entry["action"], None, [], now)
    write.consent_events = [
        consent_event(command.envelope, document["id"], document["version"], entry, now)
    ]
    document["_commands"][-1]["consentEvents"] = write.consent_events
    return write


def _attach_memberships(write: Write, changes: list[MembershipChange], now: datetime) -> None:
    """Record membership changes on a write and in the command's history entry."""
    if not changes:
        return
    document = write.document
    write.membership_events = membership_events(
        write.command.envelope, document["id"], document["version"], changes, now
    )
    write.list_delta = list_delta(changes)
    entry = document["_commands"][-1]
    entry["version"] = document["version"]
    entry["listDelta"] = write.list_delta
    entry["membershipEvents"] = write.membership_events


def is_live(doc: dict[str, Any] | None) -> bool:
    """Tell whether a stored contact exists and is not deleted."""
    return doc is not None and not doc.get("deleted", False)


def _decide_create(doc: dict[str, Any] | None, command: ContactCommand, now: datetime) -> Write:
    if is_live(doc):
        assert doc is not None
        if command.if_exists != "merge":
            raise CommandRejected(
                "contact_exists",
                f"contact {command.contact_id} already exists; send contact.update, "
                'or contact.create with "ifExists": "merge"',
                field="payload.contactId",
                value=command.contact_id,
                contactId=command.contact_id,
            )
        return _merge_into(doc, command, now)

    document: dict[str, Any] = {
        "_id": command.doc_id,
        "id": command.contact_id,
        "tenantId": command.tenant_id,
        "firstName": "",
        "lastName": "",
        "status": "active",
        "preferences": copy.deepcopy(DEFAULT_PREFERENCES),
        "customFields": {},
    }
    fields = copy.deepcopy(command.fields)
    metadata_patch = fields.pop("metadata", None) or {}
    _merge_patch(document, fields)
    document["metadata"] = {
        "createdAt": now,
        "updatedAt": now,
        "source": "manual",
        "tags": [],
    }
    _merge_patch(document["metadata"], metadata_patch)
    document["emailKey"] = command.email_key
    previous_version = doc["version"] if doc is not None else None
    document["version"] = (previous_version or 0) + 1
    changed = sorted(_leaf_paths(_public(document)) - {"id", "tenantId"})
    return _write(
        command,
        document,
        previous_version,
        "created",
        "contact.created",
        changed,
        now,
        claim=command.email_key,
    )


def _merge_into(doc: dict[str, Any], command: ContactCommand, now: datetime) -> Write:
    fields = copy.deepcopy(command.fields)
    ignored: list[str] = []
    # The same address in other letter case keeps the spelling already stored.
    if command.email_key == doc.get("emailKey"):
        fields.pop("email", None)
    # An opt-out is sticky: a merge from an import or a sync never re-subscribes.
    if (
        doc.get("status") == "unsubscribed"
        and fields.get("status", "unsubscribed") != "unsubscribed"
    ):
        fields.pop("status")
        ignored.append("status")
    metadata = fields.get("metadata")
    if isinstance(metadata, dict):
        metadata.pop("source", None)
        if metadata.get("tags"):
            existing = doc.get("metadata", {}).get("tags", [])
            metadata["tags"] = existing + [tag for tag in metadata["tags"] if tag not in existing]
    write = _patched(doc, command, fields, now, code="merged")
    write.merged = True
    write.ignored_fields = ignored
    return write


def _decide_update(doc: dict[str, Any] | None, command: ContactCommand, now: datetime) -> Write:
    doc = _require_live(doc, command, "does not exist or was deleted; create it first")
    _check_version(doc, command)

    new_status = command.fields.get("status")
    if (
        doc.get("status") == "unsubscribed"
        and new_status not in (None, "unsubscribed")
        and command.envelope.actor.type != "contact"
    ):
        raise CommandRejected(
            "opt_out_sticky",
            "the contact unsubscribed; only the contact's own command (actor type contact) "
            "can set status back to active or inactive",
            field="payload.changes.status",
            value=new_status,
        )
    return _patched(doc, command, copy.deepcopy(command.fields), now, code="updated")


def _decide_delete(doc: dict[str, Any] | None, command: ContactCommand, now: datetime) -> Write:
    doc = _require_live(doc, command, "does not exist or was already deleted")
    _check_version(doc, command)

    created_at = doc.get("metadata", {}).get("createdAt", now)
    tombstone: dict[str, Any] = {
        "_id": doc["_id"],
        "id": doc["id"],
        "tenantId": doc["tenantId"],
        "status": "deleted",
        "deleted": True,
        "metadata": {"createdAt": created_at, "updatedAt": now, "deletedAt": now},
        "version": doc["version"] + 1,
        "_commands": doc.get("_commands", []),
    }
    if doc.get("consent"):
        # The consent ledger is evidence of what the contact agreed to and withdrew, so it
        # outlives the profile: a contact created again with this id keeps it.
        tombstone["consent"] = copy.deepcopy(doc["consent"])
    changed = sorted(_leaf_paths(_public(doc)) - {"id", "tenantId", "version"})
    return _write(
        command,
        tombstone,
        doc["version"],
        "deleted",
        "contact.deleted",
        changed,
        now,
        release=doc.get("emailKey"),
    )


def _require_live(
    doc: dict[str, Any] | None, command: ContactCommand, problem: str
) -> dict[str, Any]:
    if doc is None or not is_live(doc):
        raise CommandRejected(
            "contact_not_found",
            f"contact {command.contact_id} {problem}",
            field="payload.contactId",
            value=command.contact_id,
            contactId=command.contact_id,
        )
    return doc


def _check_version(doc: dict[str, Any], command: ContactCommand) -> None:
    if command.expected_version is None or command.expected_version == doc["version"]:
        return
    raise CommandRejected(
        "version_conflict",
        f"expectedVersion is {command.expected_version} but contact {command.contact_id} is at "
        f"version {doc['version']}; retry with the version from the contact's latest change event "
        "or command result",
        field="payload.expectedVersion",
        value=command.expected_version,
        currentVersion=doc["version"],
    )


def _patched(
    doc: dict[str, Any], command: ContactCommand, patch: dict[str, Any], now: datetime, code: str
) -> Write:
    document = copy.deepcopy(doc)
    document.pop("_commands", None)
    before = copy.deepcopy(_public(document))
    _merge_patch(document, patch)
    changed = sorted(_changed_paths(before, _public(document)))

    claim = release = None
    new_key = command.email_key
    if "email" in patch and new_key is not None and new_key != doc.get("emailKey"):
        claim, release = new_key, doc.get("emailKey")
        document["emailKey"] = new_key

    if not changed:
        document["_commands"] = doc.get("_commands", [])
        return _write(command, document, doc["version"], "unchanged", None, [], now)

    document["metadata"]["updatedAt"] = now
    document["version"] = doc["version"] + 1
    document["_commands"] = doc.get("_commands", [])
    event_type = "contact.updated"
    return _write(
        command,
        document,
        doc["version"],
        code,
        event_type,
        changed,
        now,
        claim=claim,
        release=release,
    )


def _write(
    command: ContactCommand,
    document: dict[str, Any],
    previous_version: int | None,
    code: str,
    event_type: str | None,
    changed: list[str],
    now: datetime,
    *,
    claim: str | None = None,
    release: str | None = None,
) -> Write:
    envelope = command.envelope
    event = None
    if event_type is not None:
        event = build_event(envelope, event_type, document, changed, now)
    entry = {
        "id": envelope.command_id,
        "type": envelope.type,
        "code": code,
        "version": document["version"],
        "changedFields": changed,
        "eventId": event["id"] if event else None,
        "at": now,
    }
    history = [*document.get("_commands", []), entry][-COMMAND_HISTORY_SIZE:]
    for older in history[:-HISTORY_EVENTS_KEPT]:
        # Events are only needed to republish after a crash in the latest batch, and
        # keeping them all made contacts large, which slows every scan of the store.
        older.pop("membershipEvents", None)
        older.pop("consentEvents", None)
    document["_commands"] = history
    return Write(
        command=command,
        document=document,
        previous_version=previous_version,
        code=code,
        changed_fields=changed,
        event=event,
        claim_email_key=claim,
        release_email_key=release,
    )


def build_event(
    envelope: Envelope,
    event_type: str,
    document: dict[str, Any],
    changed: list[str],
    now: datetime,
) -> dict[str, Any]:
    """Build a CloudEvents-style change event for an applied contact change."""
    contact_id = document["id"]
    data = None if document.get("deleted") else _public(document)
    return change_event(
        envelope,
        event_id(envelope.tenant_id, envelope.command_id),
        event_type,
        f"tenants/{envelope.tenant_id}/contacts/{contact_id}",
        now,
        contactId=contact_id,
        version=document["version"],
        changedFields=changed,
        data=data,
    )


def public_contact(doc: dict[str, Any]) -> dict[str, Any]:
    """Return a stored contact without the store's internal fields."""
    return _public(doc)


def _public(doc: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in doc.items() if key not in INTERNAL_FIELDS}


def _history_entry(doc: dict[str, Any], command_id: str) -> dict[str, Any] | None:
    for entry in doc.get("_commands", []):
        if entry.get("id") == command_id:
            return entry
    return None


def _merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """Apply a JSON merge patch (RFC 7396) to ``target`` in place."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict):
            child = target.get(key)
            if not isinstance(child, dict):
                child = {}
                target[key] = child
            _merge_patch(child, value)
        else:
            target[key] = copy.deepcopy(value)


def _leaf_paths(document: dict[str, Any], prefix: str = "") -> set[str]:
    paths: set[str] = set()
    for key, value in document.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            paths |= _leaf_paths(value, f"{path}.")
        else:
            paths.add(path)
    return paths


def _changed_paths(before: dict[str, Any], after: dict[str, Any], prefix: str = "") -> set[str]:
    changed: set[str] = set()
    for key in before.keys() | after.keys():
        path = f"{prefix}{key}"
        old, new = before.get(key), after.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changed |= _changed_paths(old, new, f"{path}.")
        elif old != new:
            changed.add(path)
    return changed
