"""The batch applier against the real document store, without Kafka: crash recovery paths."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from contact_pipeline.domain.commands import SourcePosition
from contact_pipeline.handlers.batch import ContactBatchApplier, RawMessage
from contact_pipeline.schemas import load_schemas
from contact_pipeline.store.mongo import Store
from tests.factories import command, create, new_id

SCHEMAS = load_schemas(Path(__file__).resolve().parents[2] / "schemas")


def raw(messages: list[dict]) -> list[RawMessage]:
    return [
        RawMessage(json.dumps(m).encode(), None, SourcePosition("contact-commands", 0, offset))
        for offset, m in enumerate(messages)
    ]


async def test_crash_before_results_saved_republishes(servers):
    store = await Store.connect(servers.mongodb_uri, f"cp_recovery_{uuid.uuid4().hex[:8]}")
    applier = ContactBatchApplier(store, SCHEMAS)
    tenant, contact_id = "t-recovery", new_id()
    messages = [
        command("contact.create", create(contact_id, "r@example.com"), tenant=tenant),
        command(
            "contact.update", {"contactId": contact_id, "changes": {"title": "A"}}, tenant=tenant
        ),
    ]
    first = await applier.apply(raw(messages))
    # A crash after the contact write but before the outcomes were stored.
    await store.command_results.delete_many({"tenantId": tenant})
    second = await applier.apply(raw(messages))
    doc = await store.contacts.find_one({"_id": f"{tenant}:{contact_id}"})
    await store.close()

    assert [r["code"] for r in second.results] == ["created", "updated"]
    assert [r["version"] for r in second.results] == [1, 2]
    assert second.results[1]["eventId"] == first.results[1]["eventId"]
    assert [e["id"] for e in second.events] == [first.events[1]["id"]]
    assert doc["version"] == 2


async def test_duplicate_command_in_one_batch_applies_once(servers):
    store = await Store.connect(servers.mongodb_uri, f"cp_recovery_{uuid.uuid4().hex[:8]}")
    applier = ContactBatchApplier(store, SCHEMAS)
    tenant, contact_id = "t-dup", new_id()
    update = command(
        "contact.update", {"contactId": contact_id, "changes": {"title": "A"}}, tenant=tenant
    )
    messages = [
        command("contact.create", create(contact_id, "d@example.com"), tenant=tenant),
        update,
        update,
    ]
    output = await applier.apply(raw(messages))
    doc = await store.contacts.find_one({"_id": f"{tenant}:{contact_id}"})
    await store.close()

    assert len(output.results) == 3
    assert output.results[1] == output.results[2]
    assert len(output.events) == 2
    assert doc["version"] == 2


async def member_count(store: Store, tenant: str, list_id: str) -> int:
    return (await store.list_member_counts(tenant)).get(list_id, 0)


async def test_redelivered_batch_counts_members_once(servers):
    store = await Store.connect(servers.mongodb_uri, f"cp_recovery_{uuid.uuid4().hex[:8]}")
    applier = ContactBatchApplier(store, SCHEMAS)
    tenant, contact_id = "t-count", new_id()
    await store.save_list(
        {"_id": f"{tenant}:news", "id": "news", "tenantId": tenant, "type": "static", "version": 1},
        None,
    )
    add = command("membership.add", {"contactId": contact_id, "listId": "news"}, tenant=tenant)
    messages = [command("contact.create", create(contact_id, "n@example.com"), tenant=tenant), add]

    await applier.apply(raw(messages))
    after_first = await member_count(store, tenant, "news")
    # Redelivered after a crash that lost the outcomes, then redelivered again as it was.
    await store.command_results.delete_many({"tenantId": tenant})
    await applier.apply(raw(messages))
    await applier.apply(raw(messages))
    # The same command sent again later, at a new offset.
    resent = [RawMessage(json.dumps(add).encode(), None, SourcePosition("contact-commands", 0, 7))]
    await applier.apply(resent)
    final = await member_count(store, tenant, "news")
    await store.close()

    assert after_first == 1
    assert final == 1
