"""List commands: decide list.create, list.update and list.delete, and apply them.

List commands are few next to contact commands, so they apply one at a time,
in partition order. Idempotency works as for contacts: a redelivered command
gets its stored outcome, and a command history on the list document covers a
crash between the list write and the outcome write.

A new dynamic list, new criteria or a deletion also records a backfill, which
:mod:`contact_pipeline.handlers.backfill` runs: it brings every affected
contact's membership in line, in order with the contact's other commands.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from contact_pipeline.domain.commands import Decoded, Envelope, Undecodable, decode
from contact_pipeline.domain.criteria import criteria_to_json, parse_criteria
from contact_pipeline.domain.errors import CommandRejected, FieldError
from contact_pipeline.domain.events import change_event
from contact_pipeline.domain.lists import DEFAULT_COMMUNICATION_METHOD, DEFAULT_VISIBILITY
from contact_pipeline.handlers.batch import RawMessage
from contact_pipeline.handlers.outcomes import build_outcome, rejection_errors, result_id
from contact_pipeline.handlers.validation import InvalidCommand, check_topic, parse_envelope
from contact_pipeline.schemas import LIST_COMMAND_TYPES, CommandSchemas
from contact_pipeline.store.mongo import Store, utcnow

LIST_EVENT_NAMESPACE = uuid.UUID("9a7c2e41-0b6d-4f3a-8c5e-1d2f3a4b5c6d")
COMMAND_HISTORY_SIZE = 50
WRITABLE_FIELDS = (
    "name",
    "description",
    "criteria",
    "communicationMethod",
    "integrations",
    "tags",
    "visibility",
    "requireConfirmation",
)


@dataclass
class ListWrite:
    """A list document to store, the event to publish and the backfill to start."""

    document: dict[str, Any]
    previous_version: int | None
    code: str
    changed_fields: list[str]
    event: dict[str, Any] | None
    backfill: dict[str, Any] | None = None


@dataclass
class ListOutput:
    """Results, list events, dead letters and backfills of a batch of list commands."""

    results: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[Undecodable] = field(default_factory=list)
    backfills: list[dict[str, Any]] = field(default_factory=list)


def list_doc_id(tenant_id: str, list_id: str) -> str:
    """Return the document id of a list; tenant first, so ids never collide across tenants."""
    return f"{tenant_id}:{list_id}"


def decide_list(
    doc: dict[str, Any] | None, envelope: Envelope, now: datetime
) -> ListWrite | dict[str, Any]:
    """Decide a list command; return the write, or the history entry if it was applied before.

    Raises :class:`CommandRejected` or :class:`FieldError` for commands that cannot apply.
    """
    if doc is not None:
        for entry in doc.get("_commands", []):
            if entry.get("id") == envelope.command_id:
                return entry
    payload = envelope.payload
    if envelope.type == "list.create":
        return _create(doc, envelope, payload, now)
    live = _require_live(doc, envelope, payload["listId"])
    _check_version(live, payload)
    if envelope.type == "list.update":
        return _update(live, envelope, payload["changes"], now)
    return _delete(live, envelope, now)


def _create(
    doc: dict[str, Any] | None, envelope: Envelope, payload: dict[str, Any], now: datetime
) -> ListWrite:
    list_id = payload["listId"]
    if doc is not None and not doc.get("deleted"):
        raise CommandRejected(
            "list_exists",
            f"list {list_id} already exists; send list.update to change it",
            field="payload.listId",
            value=list_id,
        )
    fields = {key: copy.deepcopy(payload[key]) for key in WRITABLE_FIELDS if key in payload}
    _check_criteria(payload["type"], fields, "payload.criteria", required=True)
    document: dict[str, Any] = {
        "_id": list_doc_id(envelope.tenant_id, list_id),
        "id": list_id,
        "tenantId": envelope.tenant_id,
        "type": payload["type"],
        "description": None,
        "communicationMethod": copy.deepcopy(DEFAULT_COMMUNICATION_METHOD),
        "integrations": [],
        "tags": [],
        "visibility": DEFAULT_VISIBILITY,
        "requireConfirmation": False,
        **fields,
        "metadata": {"createdAt": now, "updatedAt": now},
        "version": (doc["version"] if doc else 0) + 1,
        "criteriaVersion": 1 if payload["type"] == "dynamic" else 0,
        "_commands": list(doc.get("_commands", [])) if doc else [],
    }
    changed = sorted(key for key in document if not key.startswith("_"))
    write = _write(document, doc["version"] if doc else None, "created", changed, envelope, now)
    if document["type"] == "dynamic":
        write.backfill = _backfill(document, envelope, now, "list_created")
    return write


def _update(
    doc: dict[str, Any], envelope: Envelope, changes: dict[str, Any], now: datetime
) -> ListWrite:
    if "criteria" in changes:
        _check_criteria(doc["type"], changes, "payload.changes.criteria", required=False)
    document = copy.deepcopy(doc)
    changed = []
    for key, value in changes.items():
        new = copy.deepcopy(value)
        if document.get(key) != new:
            changed.append(key)
            document[key] = new
    if not changed:
        return _write(document, doc["version"], "unchanged", [], envelope, now, event=False)
    document["version"] = doc["version"] + 1
    document["metadata"]["updatedAt"] = now
    write = _write(document, doc["version"], "updated", sorted(changed), envelope, now)
    if "criteria" in changed:
        document["criteriaVersion"] = doc.get("criteriaVersion", 0) + 1
        write.backfill = _backfill(document, envelope, now, "criteria_changed")
    return write


def _delete(doc: dict[str, Any], envelope: Envelope, now: datetime) -> ListWrite:
    document = copy.deepcopy(doc)
    document["deleted"] = True
    document["version"] = doc["version"] + 1
    document["metadata"]["updatedAt"] = now
    document["metadata"]["deletedAt"] = now
    write = _write(document, doc["version"], "deleted", ["deleted"], envelope, now)
    write.backfill = _backfill(document, envelope, now, "list_deleted")
    return write


def _check_criteria(list_type: str, fields: dict[str, Any], path: str, *, required: bool) -> None:
    criteria = fields.get("criteria")
    if list_type == "static":
        if criteria is not None:
            raise FieldError(
                path,
                "(criteria)",
                "a static list takes no criteria; create a dynamic list for rule-based members",
                code="invalid_criteria",
            )
        return
    if criteria is None:
        if required or "criteria" in fields:
            raise FieldError(
                path,
                None,
                'a dynamic list needs criteria; give {"logic": "and", "conditions": [...]}',
                code="invalid_criteria",
            )
        return
    # Store the canonical form, so field aliases and date spellings compare equal.
    fields["criteria"] = criteria_to_json(parse_criteria(criteria, field=path))


def _require_live(doc: dict[str, Any] | None, envelope: Envelope, list_id: str) -> dict[str, Any]:
    if doc is None or doc.get("deleted"):
        raise CommandRejected(
            "list_not_found",
            f"list {list_id} does not exist in tenant {envelope.tenant_id} or was deleted",
            field="payload.listId",
            value=list_id,
        )
    return doc


def _check_version(doc: dict[str, Any], payload: dict[str, Any]) -> None:
    expected = payload.get("expectedVersion")
    if expected is None or expected == doc["version"]:
        return
    raise CommandRejected(
        "version_conflict",
        f"expectedVersion is {expected} but list {doc['id']} is at version {doc['version']}; "
        "retry with the version from the list's latest event or command result",
        field="payload.expectedVersion",
        value=expected,
        currentVersion=doc["version"],
    )


def _write(
    document: dict[str, Any],
    previous_version: int | None,
    code: str,
    changed: list[str],
    envelope: Envelope,
    now: datetime,
    *,
    event: bool = True,
) -> ListWrite:
    built = build_list_event(envelope, f"list.{code}", document, changed, now) if event else None
    entry = {
        "id": envelope.command_id,
        "code": code,
        "version": document["version"],
        "changedFields": changed,
        "at": now,
    }
    document["_commands"] = [*document.get("_commands", []), entry][-COMMAND_HISTORY_SIZE:]
    return ListWrite(document, previous_version, code, changed, built)


def _backfill(
    document: dict[str, Any], envelope: Envelope, now: datetime, reason: str
) -> dict[str, Any]:
    return {
        "_id": backfill_id(document["_id"], document["version"]),
        "tenantId": document["tenantId"],
        "listId": document["id"],
        "listVersion": document["version"],
        "criteriaVersion": document.get("criteriaVersion", 0),
        "reason": reason,
        "status": "queued",
        "commandId": envelope.command_id,
        "createdAt": now,
        "updatedAt": now,
        "scanned": 0,
        "queued": 0,
        "applied": 0,
    }


def backfill_id(list_doc_id: str, version: int) -> str:
    """Return the id of the backfill that a list version starts; it also correlates its commands."""
    source = f"{list_doc_id}\n{version}"
    return f"bf-{uuid.uuid5(LIST_EVENT_NAMESPACE, source)}"


def build_list_event(
    envelope: Envelope, event_type: str, document: dict[str, Any], changed: list[str], now: datetime
) -> dict[str, Any]:
    """Build a CloudEvents-style list event; its id derives from the command id."""
    return change_event(
        envelope,
        str(uuid.uuid5(LIST_EVENT_NAMESPACE, f"{envelope.tenant_id}\n{envelope.command_id}")),
        event_type,
        f"tenants/{envelope.tenant_id}/lists/{document['id']}",
        now,
        listId=document["id"],
        version=document["version"],
        changedFields=changed,
        data=public_list(document),
    )


def public_list(document: dict[str, Any]) -> dict[str, Any]:
    """Return a list document without internal fields, with dates as ISO strings."""
    return _jsonable({key: value for key, value in document.items() if not key.startswith("_")})


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_jsonable(item) for item in value]
    return value


class ListCommandApplier:
    """Applies list commands one at a time, idempotently, and records backfills."""

    def __init__(
        self, store: Store, schemas: CommandSchemas, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.store = store
        self.schemas = schemas
        self.clock = clock

    async def apply(self, messages: list[RawMessage]) -> ListOutput:
        """Apply a batch of list commands in order; raises StoreUnavailable to retry it."""
        output = ListOutput()
        for message in messages:
            item = decode(message.value, message.key, message.position)
            if isinstance(item, Undecodable):
                output.dead_letters.append(item)
                continue
            await self._apply_one(item, output)
        return output

    async def _apply_one(self, item: Decoded, output: ListOutput) -> None:
        stored = await self.store.load_results([result_id(item)])
        if result_id(item) in stored:
            _republish(output, stored[result_id(item)])
            return
        outcome = await self._decide_and_write(item)
        await self.store.save_results([outcome])
        _republish(output, outcome)
        if outcome.get("backfill"):
            output.backfills.append(outcome["backfill"])

    async def _decide_and_write(self, item: Decoded) -> dict[str, Any]:
        now = self.clock()
        try:
            check_topic(item, LIST_COMMAND_TYPES, "list-commands")
            envelope, _ = parse_envelope(item, self.schemas)
        except InvalidCommand as exc:
            return _outcome(item, "rejected", exc.code, exc.message, errors=exc.errors)
        list_id = envelope.payload["listId"]
        doc = await self.store.load_list(list_doc_id(envelope.tenant_id, list_id))
        try:
            decision = decide_list(doc, envelope, now)
        except FieldError as exc:
            return _outcome(item, "rejected", exc.code, str(exc), errors=[exc.to_dict()])
        except CommandRejected as exc:
            return _outcome(item, "rejected", exc.code, exc.message, errors=rejection_errors(exc))
        if isinstance(decision, dict):
            # Written before a crash that lost the outcome: reply from the history.
            assert doc is not None
            backfill = await self.store.load_backfill(backfill_id(doc["_id"], decision["version"]))
            event = None
            if doc["version"] == decision["version"]:
                event = build_list_event(
                    envelope,
                    f"list.{decision['code']}",
                    doc,
                    decision["changedFields"],
                    decision["at"],
                )
            return _outcome(
                item,
                "applied",
                decision["code"],
                "command was applied before; nothing changed this time",
                list_id=list_id,
                version=decision["version"],
                event=event,
                backfill=backfill,
            )
        if decision.code != "unchanged":
            if decision.backfill is not None:
                await self.store.save_backfill(decision.backfill)
            if not await self.store.save_list(decision.document, decision.previous_version):
                raise CommandRejected("concurrent_modification", "list changed meanwhile")
        return _outcome(
            item,
            "applied",
            decision.code,
            f"list {decision.code}",
            list_id=list_id,
            version=decision.document["version"],
            changed_fields=decision.changed_fields,
            event=decision.event,
            backfill=decision.backfill,
        )


def _outcome(
    item: Decoded,
    outcome: str,
    code: str,
    message: str,
    *,
    errors: list[dict[str, Any]] | None = None,
    list_id: str | None = None,
    version: int | None = None,
    changed_fields: list[str] | None = None,
    event: dict[str, Any] | None = None,
    backfill: dict[str, Any] | None = None,
) -> dict[str, Any]:
    stored = build_outcome(
        item,
        outcome,
        code,
        message,
        utcnow(),
        subject={"listId": list_id},
        errors=errors,
        version=version,
        changed_fields=changed_fields,
        event=event,
    )
    stored["backfill"] = backfill
    if backfill is not None:
        stored["result"]["backfillId"] = backfill["_id"]
    return stored


def _republish(output: ListOutput, stored: dict[str, Any]) -> None:
    output.results.append(stored["result"])
    if stored.get("event") is not None:
        output.events.append(stored["event"])
