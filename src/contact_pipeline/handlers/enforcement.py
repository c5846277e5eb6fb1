"""May this contact be contacted on this channel for this list now? One decision, many reasons.

:func:`decide_contactability` is pure and combines contact status, consent,
membership, channel preferences (the membership's override first) and the
frequency limit. :func:`check_contactability` loads the documents for it.
Connectors call it directly, and the contactability agent calls it to reply
to requests from the contactability-requests topic.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from contact_pipeline.handlers.consent import consent_state
from contact_pipeline.store.mongo import Store, utcnow

FREQUENCY_WINDOWS = {
    "daily": timedelta(days=1),
    "weekly": timedelta(days=7),
    "monthly": timedelta(days=30),
    "quarterly": timedelta(days=91),
}
"""Rolling window per frequency preference: at most one send per list and channel in it."""

REASONS = {
    "contact_not_found": "the contact does not exist or was deleted",
    "contact_unsubscribed": "the contact unsubscribed from everything",
    "contact_inactive": "the contact is inactive",
    "list_not_found": "the list does not exist or was deleted",
    "list_channel_mismatch": "the list sends on another channel",
    "not_a_member": "the contact is not on the list",
    "membership_pending": "the contact has not confirmed the list (double opt-in)",
    "membership_unsubscribed": "the contact unsubscribed from the list",
    "no_consent": "the contact never gave consent for this channel",
    "consent_withdrawn": "the contact withdrew consent for this channel",
    "channel_disabled": "the contact turned this channel off",
    "channel_disabled_for_list": "the contact turned this channel off for this list",
    "frequency_limit": "a message on this channel went to the contact for this list within "
    "its frequency window",
}
"""Every deny reason code, with what it means."""


@dataclass(frozen=True)
class ContactabilityDecision:
    """Allow or deny, with every reason that denies."""

    tenant_id: str
    contact_id: str
    channel: str
    list_id: str
    decided_at: datetime
    reasons: list[str] = field(default_factory=list)
    next_allowed_at: datetime | None = None

    @property
    def allowed(self) -> bool:
        return not self.reasons

    def to_dict(self) -> dict[str, Any]:
        """Return the decision as a JSON-ready reply."""
        reply: dict[str, Any] = {
            "tenantId": self.tenant_id,
            "contactId": self.contact_id,
            "channel": self.channel,
            "listId": self.list_id,
            "decision": "allow" if self.allowed else "deny",
            "reasons": self.reasons,
            "explanations": [REASONS[reason] for reason in self.reasons],
            "decidedAt": self.decided_at.isoformat(),
        }
        if self.next_allowed_at is not None:
            reply["nextAllowedAt"] = self.next_allowed_at.isoformat()
        return reply


def decide_contactability(
    contact: dict[str, Any] | None,
    list_doc: dict[str, Any] | None,
    tenant_id: str,
    contact_id: str,
    channel: str,
    list_id: str,
    now: datetime,
) -> ContactabilityDecision:
    """Decide from the stored contact and list; lists every reason that denies."""
    reasons: list[str] = []
    next_allowed: datetime | None = None

    def decision() -> ContactabilityDecision:
        return ContactabilityDecision(
            tenant_id, contact_id, channel, list_id, now, reasons, next_allowed
        )

    if contact is None or contact.get("deleted"):
        reasons.append("contact_not_found")
        return decision()
    if contact.get("status") == "unsubscribed":
        reasons.append("contact_unsubscribed")
    elif contact.get("status") == "inactive":
        reasons.append("contact_inactive")

    if list_doc is None or list_doc.get("deleted"):
        reasons.append("list_not_found")
    elif list_doc.get("communicationMethod", {}).get("type", channel) != channel:
        reasons.append("list_channel_mismatch")

    membership = contact.get("lists", {}).get(list_id)
    status = membership.get("status") if membership else None
    if status is None:
        reasons.append("not_a_member")
    elif status == "pending":
        reasons.append("membership_pending")
    elif status == "unsubscribed":
        reasons.append("membership_unsubscribed")

    consent = consent_state(contact, channel, list_id)
    if consent is None:
        reasons.append("no_consent")
    elif consent["status"] != "granted":
        reasons.append("consent_withdrawn")

    preferences = contact.get("preferences", {})
    overrides = (membership or {}).get("preferences", {})
    list_switch = overrides.get("communicationChannels", {}).get(channel)
    if list_switch is False:
        reasons.append("channel_disabled_for_list")
    elif list_switch is None and preferences.get("communicationChannels", {}).get(channel) is False:
        reasons.append("channel_disabled")

    frequency = overrides.get("frequency") or preferences.get("frequency")
    window = FREQUENCY_WINDOWS.get(frequency or "")
    sends = contact.get("sends", {}).get(list_id, {}).get(channel, [])
    if window is not None and sends:
        last = max(sends)
        if now - last < window:
            reasons.append("frequency_limit")
            next_allowed = last + window
    return decision()


Recorder = Callable[[dict[str, Any]], Awaitable[None]]
"""Publishes a decision so the audit trail records it."""


async def check_contactability(
    store: Store,
    tenant_id: str,
    contact_id: str,
    channel: str,
    list_id: str,
    *,
    now: datetime | None = None,
    record: Recorder | None = None,
) -> ContactabilityDecision:
    """Load the contact and list and decide; pass ``record`` to put the decision on the audit trail.

    This is the function connectors call before they send. ``record`` is
    usually :func:`contact_pipeline.kafka.client.decision_recorder`, which
    publishes to the contactability-replies topic that the audit agent reads.
    """
    contact = (await store.load_contacts([f"{tenant_id}:{contact_id}"])).get(
        f"{tenant_id}:{contact_id}"
    )
    list_doc = await store.load_list(f"{tenant_id}:{list_id}")
    result = decide_contactability(
        contact, list_doc, tenant_id, contact_id, channel, list_id, now or utcnow()
    )
    if record is not None:
        await record(result.to_dict())
    return result


CHANNELS = ("email", "sms", "social")
ID_FIELDS = ("requestId", "tenantId", "contactId", "listId")


def parse_request(raw: bytes | None) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """Read a contactability request; return it, or the errors that name each bad field.

    A request is ``{"requestId", "tenantId", "contactId", "listId", "channel",
    "actor"?: {"type", "id"}}``. A request without a readable requestId gets no
    reply (it has no address) and is dead-lettered by the agent.
    """
    import json

    try:
        request = json.loads(raw or b"")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, [{"field": "(message)", "value": None, "reason": f"not JSON: {exc}"}]
    if not isinstance(request, dict):
        return None, [{"field": "(message)", "value": None, "reason": "expected a JSON object"}]
    errors = []
    for name in ID_FIELDS:
        value = request.get(name)
        if not isinstance(value, str) or not value or len(value) > 128:
            errors.append(
                {"field": name, "value": value, "reason": "required; a string of 1 to 128 chars"}
            )
    if request.get("channel") not in CHANNELS:
        errors.append(
            {
                "field": "channel",
                "value": request.get("channel"),
                "reason": f"unknown channel; use one of {', '.join(CHANNELS)}",
            }
        )
    return request, errors
