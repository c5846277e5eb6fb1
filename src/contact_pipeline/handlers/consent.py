"""Consent ledger and send records: pure functions over a contact document.

Consent lives in the contact document:

    "consent": {
      "ledger": [ {"id", "action": "granted" | "withdrawn", "channel", "listId"?,
                   "legalBasis"?, "noticeId"?, "source", "ipAddress"?, "userAgent"?,
                   "reason"?, "at", "recordedAt", "actor"}, ... ],
      "state": {"email": {"status", "at", "entryId", ...}, ...},
      "lists": {"<listId>": {"email": {...}}}
    }

The ledger only grows: a withdrawal is added after the grant, and a new grant
after the withdrawal, so the history survives every opt-out and re-opt-in.
``state`` and ``lists`` are derived from it and contain the consent in force now.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from contact_pipeline.domain.commands import Envelope
from contact_pipeline.domain.errors import CommandRejected
from contact_pipeline.domain.events import change_event

CONSENT_EVENT_NAMESPACE = uuid.UUID("7e2d4c1b-9a8f-4b3e-8d6c-5f4e3d2c1b0a")
SEND_HISTORY_SIZE = 10
"""Send times kept per list and channel; enough for any frequency window."""


def apply_consent(
    doc: dict[str, Any], envelope: Envelope, payload: dict[str, Any], now: datetime
) -> dict[str, Any]:
    """Add a grant or withdrawal to the ledger and update the derived state, in place.

    Returns the ledger entry. Raises :class:`CommandRejected` for a withdrawal
    of consent that is not granted, and for a grant after a withdrawal by anyone
    but the contact.
    """
    consent = doc.setdefault("consent", {"ledger": [], "state": {}, "lists": {}})
    channel = payload["channel"]
    list_id = payload.get("listId")
    current = _current(consent, channel, list_id)
    scope = f"{channel} consent" + (f" for list {list_id}" if list_id else "")
    granting = envelope.type == "consent.grant"

    if not granting and (current is None or current["status"] != "granted"):
        raise CommandRejected(
            "consent_not_granted",
            f"{scope} was never granted" if current is None else f"{scope} is already withdrawn",
            field="payload.channel",
            value=channel,
        )
    withdrawn = current is not None and current["status"] == "withdrawn"
    if granting and withdrawn and envelope.actor.type != "contact":
        raise CommandRejected(
            "consent_withdrawn",
            f"the contact withdrew {scope}; only the contact's own consent.grant "
            "(actor type contact) grants it again, never an import, sync or admin",
            field="payload.channel",
            value=channel,
        )

    entry: dict[str, Any] = {
        "id": envelope.command_id,
        "action": "granted" if granting else "withdrawn",
        "channel": channel,
        "source": payload["source"],
        "at": payload.get("at") or envelope.issued_at,
        "recordedAt": now,
        "actor": envelope.actor.model_dump(),
    }
    for key in ("listId", "legalBasis", "noticeId", "ipAddress", "userAgent", "reason"):
        if payload.get(key) is not None:
            entry[key] = payload[key]
    consent["ledger"].append(entry)

    state = {"status": entry["action"], "at": entry["at"], "entryId": entry["id"]}
    if granting:
        state.update(legalBasis=entry["legalBasis"], noticeId=entry["noticeId"])
    if list_id:
        consent.setdefault("lists", {}).setdefault(list_id, {})[channel] = state
    else:
        consent.setdefault("state", {})[channel] = state
    return entry


def consent_state(doc: dict[str, Any], channel: str, list_id: str | None) -> dict[str, Any] | None:
    """Return the consent that holds for a channel and list: the list's own, else the channel's."""
    return _current(doc.get("consent", {}), channel, list_id, fall_back=True)


def record_send(doc: dict[str, Any], payload: dict[str, Any], sent_at: datetime) -> None:
    """Keep the time of a send to a list on a channel, for frequency limits, in place."""
    sends = doc.setdefault("sends", {}).setdefault(payload["listId"], {})
    times = sorted([*sends.get(payload["channel"], []), sent_at])
    sends[payload["channel"]] = times[-SEND_HISTORY_SIZE:]


def consent_event(
    envelope: Envelope, contact_id: str, version: int, entry: dict[str, Any], now: datetime
) -> dict[str, Any]:
    """Build the consent event of one ledger entry; its id derives from the command id."""
    source = f"{envelope.tenant_id}\n{envelope.command_id}"
    data = {key: value for key, value in entry.items() if key not in ("ipAddress", "userAgent")}
    return change_event(
        envelope,
        str(uuid.uuid5(CONSENT_EVENT_NAMESPACE, source)),
        f"consent.{entry['action']}",
        f"tenants/{envelope.tenant_id}/contacts/{contact_id}",
        now,
        contactId=contact_id,
        listId=entry.get("listId"),
        channel=entry["channel"],
        contactVersion=version,
        data={
            key: value.isoformat() if isinstance(value, datetime) else value
            for key, value in data.items()
        },
    )


def _current(
    consent: dict[str, Any], channel: str, list_id: str | None, *, fall_back: bool = False
) -> dict[str, Any] | None:
    if list_id:
        scoped = consent.get("lists", {}).get(list_id, {}).get(channel)
        if scoped is not None or not fall_back:
            return scoped  # type: ignore[no-any-return]
    return consent.get("state", {}).get(channel)  # type: ignore[no-any-return]
