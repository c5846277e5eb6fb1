"""Consent ledger, preferences and the contactability decision through the real broker and store."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest

from contact_pipeline.kafka import topics as topic_names
from contact_pipeline.kafka.client import ask_contactability
from tests.factories import command, create, new_id
from tests.integration.test_lists import applied, contact_doc, membership, new_list

pytestmark = pytest.mark.asyncio(loop_scope="session")


def grant(
    tenant: str, contact_id: str, channel: str = "email", actor: str = "contact", **extra: Any
) -> dict[str, Any]:
    payload = {
        "contactId": contact_id,
        "channel": channel,
        "legalBasis": "consent",
        "source": "form",
        "noticeId": "privacy-notice-v3",
        **extra,
    }
    return command("consent.grant", payload, tenant=tenant, actor_type=actor)


def withdraw(
    tenant: str, contact_id: str, channel: str = "email", actor: str = "contact", **extra: Any
) -> dict[str, Any]:
    payload = {"contactId": contact_id, "channel": channel, "source": "form", **extra}
    return command("consent.withdraw", payload, tenant=tenant, actor_type=actor)


async def new_contact(pipeline: Any, tenant: str, **fields: Any) -> str:
    contact_id = new_id()
    await applied(
        pipeline,
        command(
            "contact.create",
            create(contact_id, f"{contact_id}@example.com", **fields),
            tenant=tenant,
        ),
    )
    return contact_id


async def test_consent_history_survives_reoptin(pipeline, tenant):
    contact = await new_contact(pipeline, tenant)
    results = await applied(
        pipeline,
        grant(tenant, contact, ipAddress="203.0.113.9", userAgent="Firefox/140"),
        withdraw(tenant, contact, reason="too many mails"),
        grant(tenant, contact, noticeId="privacy-notice-v4"),
    )
    assert [r["code"] for r in results] == ["granted", "withdrawn", "granted"]

    consent = (await contact_doc(pipeline, tenant, contact))["consent"]
    ledger = consent["ledger"]
    assert [entry["action"] for entry in ledger] == ["granted", "withdrawn", "granted"]
    assert ledger[0]["ipAddress"] == "203.0.113.9"
    assert ledger[0]["userAgent"] == "Firefox/140"
    assert ledger[0]["noticeId"] == "privacy-notice-v3"
    assert ledger[1]["reason"] == "too many mails"
    assert consent["state"]["email"]["status"] == "granted"
    assert consent["state"]["email"]["noticeId"] == "privacy-notice-v4"

    key = f"{tenant}:{contact}".encode()
    events = [
        json.loads(r.value)
        for r in await pipeline.read_topic(topic_names.CONSENT_EVENTS)
        if r.key == key
    ]
    assert [e["type"] for e in events] == [
        "consent.granted",
        "consent.withdrawn",
        "consent.granted",
    ]
    assert all("ipAddress" not in e["data"] for e in events)


async def test_import_never_regrants_consent(pipeline, tenant):
    contact = await new_contact(pipeline, tenant)
    await applied(pipeline, grant(tenant, contact), withdraw(tenant, contact))
    importer, sync, admin = await pipeline.send(
        [
            grant(tenant, contact, actor="import", source="import"),
            grant(tenant, contact, actor="service", source="integration"),
            grant(tenant, contact, actor="user", source="manual"),
        ]
    )
    for result in (importer, sync, admin):
        assert result["outcome"] == "rejected"
        assert result["code"] == "consent_withdrawn"
        assert result["errors"][0]["field"] == "payload.channel"
    consent = (await contact_doc(pipeline, tenant, contact))["consent"]
    assert consent["state"]["email"]["status"] == "withdrawn"
    assert len(consent["ledger"]) == 2


async def test_consent_per_list_leaves_the_channel_consent_alone(pipeline, tenant):
    contact = await new_contact(pipeline, tenant)
    await applied(pipeline, new_list(tenant, "news"))
    await applied(
        pipeline,
        grant(tenant, contact),
        grant(tenant, contact, listId="news"),
        withdraw(tenant, contact, listId="news"),
    )
    consent = (await contact_doc(pipeline, tenant, contact))["consent"]
    assert consent["state"]["email"]["status"] == "granted"
    assert consent["lists"]["news"]["email"]["status"] == "withdrawn"


async def test_bad_consent_values_rejected(pipeline, tenant):
    contact = await new_contact(pipeline, tenant)
    results = await pipeline.send(
        [
            grant(tenant, contact, channel="fax"),
            withdraw(tenant, contact, channel="sms"),
            grant(tenant, contact, listId="no-such-list"),
            command(
                "contact.update",
                {"contactId": contact, "changes": {"preferences": {"frequency": "hourly"}}},
                tenant=tenant,
            ),
            command(
                "contact.update",
                {"contactId": contact, "changes": {"preferences": {"timezone": "Mars/Olympus"}}},
                tenant=tenant,
            ),
        ]
    )
    found = [(r["code"], r["errors"][0]["field"], r["errors"][0]["value"]) for r in results]
    assert found == [
        ("invalid_command", "payload.channel", "fax"),
        ("consent_not_granted", "payload.channel", "sms"),
        ("list_not_found", "payload.listId", "no-such-list"),
        ("invalid_command", "payload.changes.preferences.frequency", "hourly"),
        ("invalid_value", "payload.changes.preferences.timezone", "Mars/Olympus"),
    ]
    assert all(r["errors"][0]["reason"] for r in results)
    assert "consent" not in await contact_doc(pipeline, tenant, contact)


async def ask(pipeline: Any, tenant: str, contact: str, list_id: str, channel: str = "email"):
    request = {
        "requestId": f"req-{uuid.uuid4()}",
        "tenantId": tenant,
        "contactId": contact,
        "listId": list_id,
        "channel": channel,
        "actor": {"type": "service", "id": "campaign-sender"},
    }
    replies = await ask_contactability(pipeline.servers.kafka, pipeline.prefix, [request])
    assert request["requestId"] in replies, f"no reply; worker log {pipeline.log_path}"
    return replies[request["requestId"]]


async def reachable_contact(pipeline: Any, tenant: str, list_id: str, **fields: Any) -> str:
    contact = await new_contact(pipeline, tenant, **fields)
    await applied(pipeline, grant(tenant, contact), membership(tenant, "add", contact, list_id))
    return contact


async def test_contactability_allows_then_enforces_the_weekly_limit(pipeline, tenant):
    await applied(pipeline, new_list(tenant, "news"))
    contact = await reachable_contact(pipeline, tenant, "news")

    allowed = await ask(pipeline, tenant, contact, "news")
    assert allowed["decision"] == "allow"
    assert allowed["reasons"] == []

    sent = command(
        "message.sent",
        {"contactId": contact, "listId": "news", "channel": "email", "messageId": "m-1"},
        tenant=tenant,
    )
    await applied(pipeline, sent)
    limited = await ask(pipeline, tenant, contact, "news")
    assert limited["decision"] == "deny"
    assert limited["reasons"] == ["frequency_limit"]
    assert limited["nextAllowedAt"].startswith("2026-12-08")  # issuedAt 2026-12-01 + 7 days

    deadline = asyncio.get_running_loop().time() + 60
    recorded = None
    while recorded is None:
        assert asyncio.get_running_loop().time() < deadline, "no audit entry for the send"
        recorded = await pipeline.db.audit_entries.find_one(
            {"tenantId": tenant, "entity.id": contact, "changes.fields": "sends.news.email"}
        )
        await asyncio.sleep(0.3)
    assert recorded["action"] == "contact.updated"


async def test_daily_frequency_allows_a_send_after_a_day(pipeline, tenant):
    await applied(pipeline, new_list(tenant, "news"))
    contact = await reachable_contact(pipeline, tenant, "news", preferences={"frequency": "daily"})
    old = command(
        "message.sent",
        {
            "contactId": contact,
            "listId": "news",
            "channel": "email",
            "sentAt": "2026-01-01T08:00:00Z",
        },
        tenant=tenant,
    )
    await applied(pipeline, old)
    assert (await ask(pipeline, tenant, contact, "news"))["decision"] == "allow"


async def test_each_deny_reason_is_reported(pipeline, tenant):
    await applied(
        pipeline,
        new_list(tenant, "news"),
        new_list(tenant, "confirmed", requireConfirmation=True),
        new_list(tenant, "texts", communicationMethod={"type": "sms"}),
    )
    cases: dict[str, tuple[str, str, str]] = {}

    plain = await new_contact(pipeline, tenant)
    cases["not_a_member"] = (plain, "news", "email")
    cases["contact_not_found"] = ("nobody", "news", "email")
    cases["list_not_found"] = (plain, "no-list", "email")

    no_consent = await new_contact(pipeline, tenant)
    await applied(pipeline, membership(tenant, "add", no_consent, "news"))
    cases["no_consent"] = (no_consent, "news", "email")

    withdrawn = await reachable_contact(pipeline, tenant, "news")
    await applied(pipeline, withdraw(tenant, withdrawn))
    cases["consent_withdrawn"] = (withdrawn, "news", "email")

    pending = await new_contact(pipeline, tenant)
    await applied(pipeline, grant(tenant, pending), membership(tenant, "add", pending, "confirmed"))
    cases["membership_pending"] = (pending, "confirmed", "email")

    left = await reachable_contact(pipeline, tenant, "news")
    await applied(pipeline, membership(tenant, "unsubscribe", left, "news", "contact"))
    cases["membership_unsubscribed"] = (left, "news", "email")

    muted = await reachable_contact(
        pipeline, tenant, "news", preferences={"communicationChannels": {"email": False}}
    )
    cases["channel_disabled"] = (muted, "news", "email")

    muted_here = await reachable_contact(pipeline, tenant, "news")
    await applied(
        pipeline,
        membership(
            tenant,
            "add",
            muted_here,
            "news",
            preferences={"communicationChannels": {"email": False}},
        ),
    )
    cases["channel_disabled_for_list"] = (muted_here, "news", "email")

    gone = await reachable_contact(pipeline, tenant, "news", status="unsubscribed")
    cases["contact_unsubscribed"] = (gone, "news", "email")
    idle = await reachable_contact(pipeline, tenant, "news", status="inactive")
    cases["contact_inactive"] = (idle, "news", "email")

    texter = await reachable_contact(pipeline, tenant, "texts")
    cases["list_channel_mismatch"] = (texter, "texts", "email")

    for reason, (contact, list_id, channel) in cases.items():
        reply = await ask(pipeline, tenant, contact, list_id, channel)
        assert reply["decision"] == "deny", (reason, reply)
        assert reason in reply["reasons"], (reason, reply)
        assert reply["actor"] == {"type": "service", "id": "campaign-sender"}


async def test_bad_contactability_request_gets_an_error_reply(pipeline, tenant):
    request = {"requestId": f"req-{uuid.uuid4()}", "tenantId": tenant, "channel": "pigeon"}
    replies = await ask_contactability(pipeline.servers.kafka, pipeline.prefix, [request])
    reply = replies[request["requestId"]]
    assert reply["decision"] == "error"
    fields = {error["field"] for error in reply["errors"]}
    assert fields == {"contactId", "listId", "channel"}


async def test_contactability_decision_is_recorded_in_the_audit_trail(pipeline, tenant):
    await applied(pipeline, new_list(tenant, "news"))
    contact = await reachable_contact(pipeline, tenant, "news")
    reply = await ask(pipeline, tenant, contact, "news")

    deadline = asyncio.get_running_loop().time() + 60
    entry = None
    while entry is None:
        assert asyncio.get_running_loop().time() < deadline, "no audit entry for the decision"
        entry = await pipeline.db.audit_entries.find_one(
            {"tenantId": tenant, "entity.type": "decision", "entity.id": reply["requestId"]}
        )
        await asyncio.sleep(0.3)
    assert entry["action"] == "contactability.decided"
    assert entry["entity"]["contactId"] == contact
    assert entry["changes"]["decision"] == "allow"
    assert entry["actor"] == {"type": "service", "id": "campaign-sender"}
