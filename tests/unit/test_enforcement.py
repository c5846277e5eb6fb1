"""Consent ledger rules and the contactability decision, driven directly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from contact_pipeline.domain.commands import Envelope
from contact_pipeline.domain.errors import CommandRejected
from contact_pipeline.handlers.consent import apply_consent, consent_state, record_send
from contact_pipeline.handlers.enforcement import REASONS, decide_contactability
from tests.factories import command

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
LIST = {"id": "news", "communicationMethod": {"type": "email"}}


def envelope(kind: str, actor: str = "contact", **payload: Any) -> Envelope:
    body = {"contactId": "c1", "channel": "email", "source": "form", **payload}
    if kind == "grant":
        body.setdefault("legalBasis", "consent")
        body.setdefault("noticeId", "n1")
    return Envelope.model_validate(command(f"consent.{kind}", body, actor_type=actor))


def change(doc: dict[str, Any], kind: str, actor: str = "contact", **payload: Any) -> None:
    message = envelope(kind, actor, **payload)
    apply_consent(doc, message, message.payload, NOW)


def reachable(**extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": "c1",
        "status": "active",
        "preferences": {"communicationChannels": {"email": True}, "frequency": "weekly"},
        "lists": {"news": {"status": "active"}},
        **extra,
    }
    change(doc, "grant")
    return doc


def decide(doc: dict[str, Any] | None, list_doc: dict[str, Any] | None = LIST, **kw: Any):
    channel = kw.get("channel", "email")
    return decide_contactability(doc, list_doc, "t", "c1", channel, "news", kw.get("now", NOW))


def test_ledger_keeps_every_grant_and_withdrawal():
    doc: dict[str, Any] = {}
    change(doc, "grant", ipAddress="203.0.113.9")
    change(doc, "withdraw")
    change(doc, "grant", noticeId="n2")
    assert [entry["action"] for entry in doc["consent"]["ledger"]] == [
        "granted",
        "withdrawn",
        "granted",
    ]
    assert consent_state(doc, "email", None)["noticeId"] == "n2"


def test_withdrawal_of_consent_never_granted_is_rejected():
    with pytest.raises(CommandRejected) as info:
        change({}, "withdraw")
    assert info.value.code == "consent_not_granted"
    assert info.value.details["value"] == "email"


@pytest.mark.parametrize("actor", ["import", "service", "user", "system"])
def test_only_the_contact_grants_again_after_a_withdrawal(actor):
    doc: dict[str, Any] = {}
    change(doc, "grant")
    change(doc, "withdraw")
    with pytest.raises(CommandRejected) as info:
        change(doc, "grant", actor)
    assert info.value.code == "consent_withdrawn"
    change(doc, "grant", "contact")
    assert consent_state(doc, "email", None)["status"] == "granted"


def test_list_consent_overrides_channel():
    doc: dict[str, Any] = {}
    change(doc, "grant")
    change(doc, "grant", listId="news")
    change(doc, "withdraw", listId="news")
    assert consent_state(doc, "email", "news")["status"] == "withdrawn"
    assert consent_state(doc, "email", "other")["status"] == "granted"


def test_reachable_contact_is_allowed():
    result = decide(reachable())
    assert result.allowed
    assert result.to_dict()["decision"] == "allow"


@pytest.mark.parametrize(
    ("reason", "setup"),
    [
        ("contact_unsubscribed", lambda d: d.update(status="unsubscribed")),
        ("contact_inactive", lambda d: d.update(status="inactive")),
        ("not_a_member", lambda d: d.update(lists={})),
        ("membership_pending", lambda d: d["lists"]["news"].update(status="pending")),
        ("membership_unsubscribed", lambda d: d["lists"]["news"].update(status="unsubscribed")),
        ("no_consent", lambda d: d.pop("consent")),
        ("consent_withdrawn", lambda d: change(d, "withdraw")),
        (
            "channel_disabled",
            lambda d: d["preferences"]["communicationChannels"].update(email=False),
        ),
        (
            "channel_disabled_for_list",
            lambda d: d["lists"]["news"].update(
                preferences={"communicationChannels": {"email": False}}
            ),
        ),
        (
            "frequency_limit",
            lambda d: record_send(
                d, {"listId": "news", "channel": "email"}, NOW - timedelta(days=6)
            ),
        ),
    ],
)
def test_each_reason_denies(reason, setup):
    doc = reachable()
    setup(doc)
    result = decide(doc)
    assert not result.allowed
    assert reason in result.reasons
    assert reason in REASONS


def test_missing_contact_and_list_and_wrong_channel_deny():
    assert decide(None).reasons == ["contact_not_found"]
    assert "list_not_found" in decide(reachable(), None).reasons
    assert (
        "list_channel_mismatch"
        in decide(reachable(), {"communicationMethod": {"type": "sms"}}).reasons
    )


def test_list_override_enables_channel():
    doc = reachable()
    doc["preferences"]["communicationChannels"]["email"] = False
    doc["lists"]["news"]["preferences"] = {"communicationChannels": {"email": True}}
    assert decide(doc).allowed


@pytest.mark.parametrize(
    ("frequency", "days_ago", "allowed"),
    [
        ("daily", 0.5, False),
        ("daily", 1.1, True),
        ("weekly", 6.9, False),
        ("weekly", 7.1, True),
        ("monthly", 29, False),
        ("quarterly", 90, False),
        ("quarterly", 92, True),
    ],
)
def test_frequency_windows_roll(frequency, days_ago, allowed):
    doc = reachable()
    doc["preferences"]["frequency"] = frequency
    record_send(doc, {"listId": "news", "channel": "email"}, NOW - timedelta(days=days_ago))
    result = decide(doc)
    assert result.allowed is allowed
    if not allowed:
        assert result.next_allowed_at is not None and result.next_allowed_at > NOW


def test_membership_frequency_overrides_the_contacts():
    doc = reachable()
    doc["lists"]["news"]["preferences"] = {"frequency": "daily"}
    record_send(doc, {"listId": "news", "channel": "email"}, NOW - timedelta(days=2))
    assert decide(doc).allowed
