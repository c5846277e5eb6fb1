"""Membership decisions: pure functions over a contact document and its tenant's lists.

Memberships live in the contact document under ``lists``, keyed by list id:

    {"status": "active" | "pending" | "unsubscribed",
     "source": "manual" | "import" | "dynamic" | "integration",
     "reason": {"type": "rule", "criteriaVersion": 3} or {"type": "manual", "actor": {...}},
     "notes": ..., "preferences": {...}, "joinedAt": ..., "updatedAt": ...,
     "unsubscribedAt": ..., "unsubscribedBy": {...}, "unsubscribeReason": ...}

Admin removals delete the entry. Unsubscribes keep it with status
``unsubscribed``, so that no rule, import, admin add or sync puts the
contact back. Only the contact's own ``membership.add``
(actor type ``contact``) clears it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from contact_pipeline.domain.commands import Envelope
from contact_pipeline.domain.criteria import Group, matches, parse_criteria
from contact_pipeline.domain.errors import CommandRejected
from contact_pipeline.domain.events import change_event

MEMBERSHIP_EVENT_NAMESPACE = uuid.UUID("3d5e8a0c-7b1f-4c9a-9e2d-6a4f1b8c0d17")


@dataclass(frozen=True)
class ListDef:
    """The fields of one list that the contact worker evaluates and checks."""

    tenant_id: str
    list_id: str
    type: str
    version: int
    criteria_version: int
    criteria: Group | None
    deleted: bool
    require_confirmation: bool = False

    @property
    def is_dynamic(self) -> bool:
        return self.type == "dynamic"

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> ListDef:
        """Build from a stored list document; its criteria were validated when stored."""
        raw = doc.get("criteria")
        return cls(
            tenant_id=doc["tenantId"],
            list_id=doc["id"],
            type=doc["type"],
            version=doc["version"],
            criteria_version=doc.get("criteriaVersion", 0),
            criteria=parse_criteria(raw) if raw else None,
            deleted=bool(doc.get("deleted")),
            require_confirmation=bool(doc.get("requireConfirmation")),
        )


@dataclass(frozen=True)
class TenantLists:
    """The lists of one tenant, by list id."""

    lists: dict[str, ListDef] = field(default_factory=dict)

    def get(self, list_id: str) -> ListDef | None:
        return self.lists.get(list_id)

    def dynamic(self) -> list[ListDef]:
        """Return the live dynamic lists, which every contact change is evaluated against."""
        return [
            item
            for item in self.lists.values()
            if item.is_dynamic and not item.deleted and item.criteria is not None
        ]


@dataclass(frozen=True)
class MembershipChange:
    """One change of one membership, published as a membership event."""

    list_id: str
    event_type: str
    reason: str
    membership: dict[str, Any] | None
    delta: int
    """Change of the list's active member count: +1, 0 or -1."""


def evaluate_dynamic(
    doc: dict[str, Any], lists: Iterable[ListDef], now: datetime
) -> list[MembershipChange]:
    """Bring the contact's dynamic memberships in line with the lists' criteria, in place."""
    changes = []
    for list_def in lists:
        change = _evaluate_one(doc, list_def, now)
        if change is not None:
            changes.append(change)
    return changes


def apply_membership_command(
    doc: dict[str, Any],
    envelope: Envelope,
    list_id: str,
    payload: dict[str, Any],
    list_def: ListDef | None,
    now: datetime,
) -> list[MembershipChange]:
    """Apply membership.add, remove, unsubscribe or evaluate to a live contact, in place.

    Raises :class:`CommandRejected` when the list or the membership forbids it.
    """
    if envelope.type == "membership.evaluate":
        return _evaluate_command(doc, list_id, list_def, now)
    if list_def is None or list_def.deleted:
        raise CommandRejected(
            "list_not_found",
            f"list {list_id} does not exist in tenant {envelope.tenant_id} or was deleted; "
            "create it with list.create first",
            field="payload.listId",
            value=list_id,
        )
    if envelope.type == "membership.unsubscribe":
        return _unsubscribe(doc, envelope, list_id, payload, now)
    if envelope.type == "membership.add":
        return _add(doc, envelope, list_def, payload, now)
    if envelope.type == "membership.confirm":
        return _confirm(doc, list_def, payload, now)
    return _remove(doc, list_def, now)


def drop_on_delete(doc: dict[str, Any], tombstone: dict[str, Any]) -> list[MembershipChange]:
    """Carry the unsubscribes of a deleted contact over to its tombstone; end the rest.

    Unsubscribes stay so that a contact created again with this id is still
    off those lists.
    """
    changes = []
    unsubscribes = {}
    for list_id, entry in sorted(doc.get("lists", {}).items()):
        if entry.get("status") == "unsubscribed":
            unsubscribes[list_id] = entry
            continue
        changes.append(
            MembershipChange(
                list_id, "membership.removed", "contact_deleted", entry, -_active(entry)
            )
        )
    if unsubscribes:
        tombstone["lists"] = unsubscribes
    return changes


def list_delta(changes: Iterable[MembershipChange]) -> dict[str, int]:
    """Sum the member count changes per list, leaving out lists that net to zero."""
    totals: dict[str, int] = {}
    for change in changes:
        totals[change.list_id] = totals.get(change.list_id, 0) + change.delta
    return {list_id: delta for list_id, delta in totals.items() if delta}


def membership_events(
    envelope: Envelope,
    contact_id: str,
    version: int,
    changes: list[MembershipChange],
    now: datetime,
) -> list[dict[str, Any]]:
    """Build one CloudEvents-style event per membership change.

    Event ids derive from the command and the list, so a republished event
    keeps its id.
    """
    events = []
    for change in changes:
        # One command may change one list twice (resubscribed, then added by its rule).
        source = (
            f"{envelope.tenant_id}\n{envelope.command_id}\n{change.list_id}\n{change.event_type}"
        )
        events.append(
            change_event(
                envelope,
                str(uuid.uuid5(MEMBERSHIP_EVENT_NAMESPACE, source)),
                change.event_type,
                f"tenants/{envelope.tenant_id}/lists/{change.list_id}/contacts/{contact_id}",
                now,
                contactId=contact_id,
                listId=change.list_id,
                reason=change.reason,
                contactVersion=version,
                data=_json_membership(change.membership),
            )
        )
    return events


def _evaluate_one(doc: dict[str, Any], list_def: ListDef, now: datetime) -> MembershipChange | None:
    assert list_def.criteria is not None
    memberships = doc.setdefault("lists", {})
    entry = memberships.get(list_def.list_id)
    if entry is not None and entry.get("status") == "unsubscribed":
        return None  # sticky: no rule re-adds a contact that unsubscribed
    matched = matches(list_def.criteria, doc)
    if matched and entry is None:
        entry = {
            "status": "active",
            "source": "dynamic",
            "reason": {"type": "rule", "criteriaVersion": list_def.criteria_version},
            "joinedAt": now,
            "updatedAt": now,
        }
        memberships[list_def.list_id] = entry
        return MembershipChange(list_def.list_id, "membership.added", "rule_matched", entry, 1)
    if not matched and entry is not None and entry.get("source") == "dynamic":
        del memberships[list_def.list_id]
        return MembershipChange(
            list_def.list_id, "membership.removed", "rule_unmatched", entry, -_active(entry)
        )
    return None


def _evaluate_command(
    doc: dict[str, Any], list_id: str, list_def: ListDef | None, now: datetime
) -> list[MembershipChange]:
    memberships = doc.get("lists", {})
    if list_def is None or list_def.deleted:
        entry = memberships.pop(list_id, None)
        if entry is None:
            return []
        return [
            MembershipChange(list_id, "membership.removed", "list_deleted", entry, -_active(entry))
        ]
    if not list_def.is_dynamic or list_def.criteria is None:
        return []
    change = _evaluate_one(doc, list_def, now)
    return [change] if change is not None else []


def _add(
    doc: dict[str, Any],
    envelope: Envelope,
    list_def: ListDef,
    payload: dict[str, Any],
    now: datetime,
) -> list[MembershipChange]:
    memberships = doc.setdefault("lists", {})
    entry = memberships.get(list_def.list_id)
    by_contact = envelope.actor.type == "contact"
    unsubscribed = entry is not None and entry.get("status") == "unsubscribed"
    if unsubscribed and not by_contact:
        raise CommandRejected(
            "unsubscribed_from_list",
            f"the contact unsubscribed from list {list_def.list_id} at "
            f"{_iso(entry.get('unsubscribedAt'))}; only the contact's own membership.add "  # type: ignore[union-attr]
            "(actor type contact) adds it back",
            field="payload.listId",
            value=list_def.list_id,
        )
    if list_def.is_dynamic:
        if unsubscribed:
            # The contact opts in again: its rule decides membership from now on.
            del memberships[list_def.list_id]
            change = _evaluate_one(doc, list_def, now)
            resubscribed = MembershipChange(
                list_def.list_id, "membership.resubscribed", "contact_opt_in", None, 0
            )
            return [resubscribed] + ([change] if change else [])
        raise CommandRejected(
            "list_is_dynamic",
            f"list {list_def.list_id} is dynamic: its members follow its criteria; change the "
            "criteria or the contact instead of adding it by hand",
            field="payload.listId",
            value=list_def.list_id,
        )

    reason = {
        "type": "manual",
        "actor": envelope.actor.model_dump(),
        "commandId": envelope.command_id,
    }
    if entry is None or unsubscribed:
        entry = {
            "status": "active",
            "source": payload.get("source") or "manual",
            "reason": reason,
            "joinedAt": now,
            "updatedAt": now,
        }
        _set_details(entry, payload)
        memberships[list_def.list_id] = entry
        if list_def.require_confirmation:
            # Double opt-in: the membership waits for the contact's signed confirmation.
            entry["status"] = "pending"
            entry["confirmation"] = {"nonce": envelope.command_id, "requestedAt": now}
            return [
                MembershipChange(
                    list_def.list_id, "membership.pending", "confirmation_required", entry, 0
                )
            ]
        event = "membership.resubscribed" if unsubscribed else "membership.added"
        cause = "contact_opt_in" if unsubscribed else "manual_add"
        return [MembershipChange(list_def.list_id, event, cause, entry, 1)]

    if entry.get("status") == "pending" and list_def.require_confirmation:
        # Joining again while unconfirmed sends a new link; the old one stops working.
        _set_details(entry, payload)
        entry["confirmation"] = {"nonce": envelope.command_id, "requestedAt": now}
        entry["updatedAt"] = now
        return [
            MembershipChange(
                list_def.list_id, "membership.pending", "confirmation_required", entry, 0
            )
        ]
    before = dict(entry)
    _set_details(entry, payload)
    if entry == before:
        return []
    entry["updatedAt"] = now
    return [MembershipChange(list_def.list_id, "membership.updated", "manual_update", entry, 0)]


def _confirm(
    doc: dict[str, Any], list_def: ListDef, payload: dict[str, Any], now: datetime
) -> list[MembershipChange]:
    """Activate a pending membership; the batch applier checked the token's signature and age."""
    entry = doc.get("lists", {}).get(list_def.list_id)
    nonce = payload["nonce"]
    if entry is not None and nonce in entry.get("confirmedNonces", []):
        raise CommandRejected(
            "token_used",
            "this confirmation link was used already; the membership is confirmed",
            field="payload.token",
            value="(used token)",
        )
    pending = entry is not None and entry.get("status") == "pending"
    if not pending or entry.get("confirmation", {}).get("nonce") != nonce:  # type: ignore[union-attr]
        raise CommandRejected(
            "token_used",
            f"no confirmation of list {list_def.list_id} is waiting for this link; it was "
            "replaced by a newer one or the membership ended; join the list again",
            field="payload.token",
            value="(stale token)",
        )
    assert entry is not None
    entry["status"] = "active"
    entry["confirmedAt"] = now
    entry["updatedAt"] = now
    entry["confirmedNonces"] = [*entry.get("confirmedNonces", []), nonce][-5:]
    del entry["confirmation"]
    return [
        MembershipChange(list_def.list_id, "membership.confirmed", "contact_confirmed", entry, 1)
    ]


def _remove(doc: dict[str, Any], list_def: ListDef, now: datetime) -> list[MembershipChange]:
    if list_def.is_dynamic:
        raise CommandRejected(
            "list_is_dynamic",
            f"list {list_def.list_id} is dynamic: its members follow its criteria; change the "
            "criteria, or send membership.unsubscribe if the contact opted out",
            field="payload.listId",
            value=list_def.list_id,
        )
    memberships = doc.get("lists", {})
    entry = memberships.get(list_def.list_id)
    if entry is None or entry.get("status") == "unsubscribed":
        return []
    del memberships[list_def.list_id]
    return [
        MembershipChange(
            list_def.list_id, "membership.removed", "admin_removed", entry, -_active(entry)
        )
    ]


def _unsubscribe(
    doc: dict[str, Any],
    envelope: Envelope,
    list_id: str,
    payload: dict[str, Any],
    now: datetime,
) -> list[MembershipChange]:
    memberships = doc.setdefault("lists", {})
    entry = memberships.get(list_id)
    if entry is not None and entry.get("status") == "unsubscribed":
        return []
    delta = -_active(entry) if entry is not None else 0
    updated = dict(entry or {"source": "manual", "joinedAt": now})
    updated.update(
        {
            "status": "unsubscribed",
            "updatedAt": now,
            "unsubscribedAt": now,
            "unsubscribedBy": envelope.actor.model_dump(),
        }
    )
    if payload.get("reason"):
        updated["unsubscribeReason"] = payload["reason"]
    memberships[list_id] = updated
    return [MembershipChange(list_id, "membership.unsubscribed", "unsubscribed", updated, delta)]


def _set_details(entry: dict[str, Any], payload: dict[str, Any]) -> None:
    if payload.get("notes") is not None:
        entry["notes"] = payload["notes"]
    preferences = payload.get("preferences")
    if isinstance(preferences, dict):
        merged = dict(entry.get("preferences", {}))
        for key, value in preferences.items():
            if value is None:
                merged.pop(key, None)
            elif isinstance(value, dict):
                channels = {**merged.get(key, {}), **value}
                merged[key] = {k: v for k, v in channels.items() if v is not None}
            else:
                merged[key] = value
        entry["preferences"] = merged


def _active(entry: dict[str, Any] | None) -> int:
    return 1 if entry is not None and entry.get("status") == "active" else 0


def _iso(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _json_membership(entry: dict[str, Any] | None) -> dict[str, Any] | None:
    if entry is None:
        return None
    return {
        key: (value.isoformat() if isinstance(value, datetime) else value)
        for key, value in entry.items()
    }
