"""Contact commands through the real broker, worker and document store."""

from __future__ import annotations

import asyncio
import json

from contact_pipeline.kafka import topics as topic_names
from tests.factories import command, create, new_id


async def test_create_update_delete(pipeline, tenant):
    contact_id = new_id()
    created = await pipeline.send_one(
        command(
            "contact.create",
            create(contact_id, " Anna@Example.COM ", firstName="Anna"),
            tenant=tenant,
        )
    )
    updated = await pipeline.send_one(
        command(
            "contact.update", {"contactId": contact_id, "changes": {"title": "CTO"}}, tenant=tenant
        )
    )
    deleted = await pipeline.send_one(
        command("contact.delete", {"contactId": contact_id}, tenant=tenant)
    )

    assert created["outcome"] == "applied"
    assert created["code"] == "created"
    assert updated["code"] == "updated"
    assert updated["version"] == 2
    assert updated["changedFields"] == ["title"]
    assert deleted["code"] == "deleted"
    doc = await pipeline.db.contacts.find_one({"_id": f"{tenant}:{contact_id}"})
    assert doc["deleted"] is True
    assert "email" not in doc
    events = await pipeline.events_for(tenant, contact_id)
    assert [e["type"] for e in events] == ["contact.created", "contact.updated", "contact.deleted"]
    assert [e["version"] for e in events] == [1, 2, 3]
    assert events[0]["data"]["email"] == "Anna@example.com"


async def test_same_command_twice_applies_once(pipeline, tenant):
    contact_id = new_id()
    message = command("contact.create", create(contact_id, "bo@example.com"), tenant=tenant)
    first = await pipeline.send_one(message)
    update = command(
        "contact.update", {"contactId": contact_id, "changes": {"company": "Acme"}}, tenant=tenant
    )
    await pipeline.send_one(update)
    again = await pipeline.send_again(update)
    create_again = await pipeline.send_again(message)

    assert again["version"] == 2
    assert again["eventId"] is not None
    assert create_again == first
    doc = await pipeline.db.contacts.find_one({"_id": f"{tenant}:{contact_id}"})
    assert doc["version"] == 2
    events = await pipeline.events_for(tenant, contact_id)
    assert len({e["id"] for e in events}) == 2


async def test_email_letter_case_variants_stay_one_contact(pipeline, tenant):
    first_id, second_id = new_id(), new_id()
    results = await pipeline.send(
        [
            command("contact.create", create(first_id, "Mia.Lee@Example.com"), tenant=tenant),
            command("contact.create", create(second_id, "mia.lee@EXAMPLE.COM"), tenant=tenant),
        ]
    )

    codes = sorted(result["code"] for result in results)
    assert codes == ["created", "duplicate_email"]
    rejected = next(r for r in results if r["outcome"] == "rejected")
    assert rejected["errors"][0]["field"] == "payload.email"
    assert await pipeline.db.contacts.count_documents({"tenantId": tenant}) == 1


async def test_idn_variant_merges_into_existing(pipeline, tenant):
    first_id = new_id()
    await pipeline.send_one(
        command("contact.create", create(first_id, "kai@bücher.example"), tenant=tenant)
    )
    merged = await pipeline.send_one(
        command(
            "contact.create",
            create(new_id(), "KAI@xn--bcher-kva.example", ifExists="merge", company="Bücher GmbH"),
            tenant=tenant,
        )
    )

    assert merged["code"] == "merged"
    assert merged["contactId"] == first_id
    doc = await pipeline.db.contacts.find_one({"_id": f"{tenant}:{first_id}"})
    assert doc["company"] == "Bücher GmbH"
    assert await pipeline.db.contacts.count_documents({"tenantId": tenant}) == 1


async def test_racing_creates_keep_one_contact_per_email(pipeline, tenant):
    pairs = [
        (
            command("contact.create", create(new_id(), f"race{i}@example.com"), tenant=tenant),
            command("contact.create", create(new_id(), f"RACE{i}@example.com"), tenant=tenant),
        )
        for i in range(40)
    ]
    results = await pipeline.send([message for pair in pairs for message in pair])

    created = [r for r in results if r["code"] == "created"]
    duplicates = [r for r in results if r["code"] == "duplicate_email"]
    assert len(created) == 40
    assert len(duplicates) == 40
    assert await pipeline.db.contacts.count_documents({"tenantId": tenant}) == 40


async def test_stale_expected_version_rejected(pipeline, tenant):
    contact_id = new_id()
    await pipeline.send_one(
        command("contact.create", create(contact_id, "v@example.com"), tenant=tenant)
    )
    await pipeline.send_one(
        command(
            "contact.update", {"contactId": contact_id, "changes": {"title": "A"}}, tenant=tenant
        )
    )
    stale = await pipeline.send_one(
        command(
            "contact.update",
            {"contactId": contact_id, "expectedVersion": 1, "changes": {"title": "B"}},
            tenant=tenant,
        )
    )

    assert stale["outcome"] == "rejected"
    assert stale["code"] == "version_conflict"
    assert stale["currentVersion"] == 2
    doc = await pipeline.db.contacts.find_one({"_id": f"{tenant}:{contact_id}"})
    assert doc["title"] == "A"


async def test_schema_failure_rejected_with_field(pipeline, tenant):
    result = await pipeline.send_one(
        command(
            "contact.create",
            create(new_id(), "s@example.com", preferences={"frequency": "hourly"}),
            tenant=tenant,
        )
    )

    assert result["outcome"] == "rejected"
    assert result["code"] == "invalid_command"
    assert result["errors"][0]["field"] == "payload.preferences.frequency"
    assert result["errors"][0]["value"] == "hourly"


async def test_invalid_phone_rejected_with_reason(pipeline, tenant):
    result = await pipeline.send_one(
        command(
            "contact.create", create(new_id(), "p@example.com", phone="not a phone"), tenant=tenant
        )
    )

    assert result["code"] == "invalid_value"
    assert result["errors"][0]["field"] == "payload.phone"
    assert result["errors"][0]["value"] == "not a phone"


async def test_garbage_is_dead_lettered_and_partition_moves_on(pipeline, tenant):
    contact_id = new_id()
    key = f"{tenant}:{contact_id}".encode()
    garbage = b"\x00\xffnot json at all"
    await pipeline.send_raw([(key, garbage), (key, b"[1, 2, 3]")])
    after = await pipeline.send_one(
        command("contact.create", create(contact_id, "g@example.com"), tenant=tenant)
    )

    assert after["code"] == "created"
    letters = await pipeline.read_topic(topic_names.DEAD_LETTERS)
    mine = [r for r in letters if r.key == key]
    assert [r.value for r in mine] == [garbage, b"[1, 2, 3]"]
    headers = dict(mine[0].headers)
    assert headers["source-topic"] == pipeline.topic(topic_names.COMMANDS).encode()
    assert int(headers["source-offset"]) >= 0
    assert b"not valid UTF-8 JSON" in headers["error"]


async def test_results_are_keyed_by_command_id(pipeline, tenant):
    message = command("contact.create", create(new_id(), "k@example.com"), tenant=tenant)
    await pipeline.send_one(message)
    records = await pipeline.read_topic(topic_names.RESULTS)

    mine = [r for r in records if r.key == message["commandId"].encode()]
    assert len(mine) >= 1
    assert json.loads(mine[0].value)["commandId"] == message["commandId"]


async def test_other_tenant_cannot_touch_contact(pipeline, tenant):
    contact_id = new_id()
    await pipeline.send_one(
        command("contact.create", create(contact_id, "iso@example.com"), tenant=tenant)
    )
    other = await pipeline.send_one(
        command(
            "contact.update",
            {"contactId": contact_id, "changes": {"title": "x"}},
            tenant=f"{tenant}x",
        )
    )

    assert other["code"] == "contact_not_found"
    doc = await pipeline.db.contacts.find_one({"_id": f"{tenant}:{contact_id}"})
    assert "title" not in doc


async def test_commands_for_one_contact_apply_in_order(pipeline, tenant):
    contact_id = new_id()
    messages = [command("contact.create", create(contact_id, "o@example.com"), tenant=tenant)]
    messages += [
        command(
            "contact.update",
            {"contactId": contact_id, "expectedVersion": n, "changes": {"title": f"t{n}"}},
            tenant=tenant,
        )
        for n in range(1, 30)
    ]
    results = await pipeline.send(messages)

    assert [r["outcome"] for r in results] == ["applied"] * 30
    doc = await pipeline.db.contacts.find_one({"_id": f"{tenant}:{contact_id}"})
    assert doc["version"] == 30
    assert doc["title"] == "t29"
    await asyncio.sleep(0)
