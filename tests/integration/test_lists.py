"""Lists, memberships and dynamic lists through the real broker and store."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from contact_pipeline.kafka import topics as topic_names
from tests.factories import command, create, new_id

pytestmark = pytest.mark.asyncio(loop_scope="session")

ACME = {"logic": "and", "conditions": [{"field": "company", "operator": "equals", "value": "Acme"}]}


def new_list(tenant: str, list_id: str, list_type: str = "static", **fields: Any) -> dict[str, Any]:
    return command(
        "list.create",
        {"listId": list_id, "name": f"List {list_id}", "type": list_type, **fields},
        tenant=tenant,
    )


def membership(
    tenant: str, kind: str, contact_id: str, list_id: str, actor_type: str = "user", **payload: Any
) -> dict[str, Any]:
    return command(
        f"membership.{kind}",
        {"contactId": contact_id, "listId": list_id, **payload},
        tenant=tenant,
        actor_type=actor_type,
    )


async def applied(pipeline: Any, *commands: dict[str, Any]) -> list[dict[str, Any]]:
    results = await pipeline.send(list(commands))
    for result in results:
        assert result["outcome"] == "applied", result
    return results


async def contact_doc(pipeline: Any, tenant: str, contact_id: str) -> dict[str, Any]:
    return await pipeline.db.contacts.find_one({"_id": f"{tenant}:{contact_id}"})


async def members(pipeline: Any, tenant: str, list_id: str) -> set[str]:
    """Return the contacts whose stored membership of the list is active."""
    cursor = pipeline.db.contacts.find({"tenantId": tenant, f"lists.{list_id}.status": "active"})
    return {doc["id"] async for doc in cursor}


async def counted(pipeline: Any, tenant: str, list_id: str) -> int:
    """Return the list's contactCount as the pipeline keeps it."""
    total = 0
    async for doc in pipeline.db.list_counts.find({"tenantId": tenant}):
        total += doc.get("counts", {}).get(list_id, 0)
    return total


async def assert_count_exact(pipeline: Any, tenant: str, list_id: str, expected: int) -> None:
    assert len(await members(pipeline, tenant, list_id)) == expected
    assert await counted(pipeline, tenant, list_id) == expected


async def wait_backfill(pipeline: Any, backfill_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = await pipeline.db.backfills.find_one({"_id": backfill_id})
        if doc is not None and doc["status"] in ("completed", "superseded"):
            return doc
        await asyncio.sleep(0.3)
    raise AssertionError(f"backfill {backfill_id} did not finish; log {pipeline.log_path}")


async def membership_events(pipeline: Any, tenant: str, contact_id: str) -> list[dict[str, Any]]:
    key = f"{tenant}:{contact_id}".encode()
    records = await pipeline.read_topic(topic_names.MEMBERSHIP_EVENTS)
    return [json.loads(r.value) for r in records if r.key == key]


async def test_static_add_and_remove(pipeline, tenant):
    contact = new_id()
    await applied(
        pipeline,
        new_list(tenant, "news"),
        command("contact.create", create(contact, f"{contact}@example.com"), tenant=tenant),
    )

    added = await applied(
        pipeline, membership(tenant, "add", contact, "news", notes="met at expo", source="import")
    )
    assert added[0]["code"] == "added"
    entry = (await contact_doc(pipeline, tenant, contact))["lists"]["news"]
    assert entry["status"] == "active"
    assert entry["source"] == "import"
    assert entry["notes"] == "met at expo"
    assert entry["reason"]["type"] == "manual"
    await assert_count_exact(pipeline, tenant, "news", 1)

    removed = await applied(pipeline, membership(tenant, "remove", contact, "news"))
    assert removed[0]["code"] == "removed"
    assert "news" not in (await contact_doc(pipeline, tenant, contact)).get("lists", {})
    await assert_count_exact(pipeline, tenant, "news", 0)

    events = await membership_events(pipeline, tenant, contact)
    assert [(e["type"], e["reason"]) for e in events] == [
        ("membership.added", "manual_add"),
        ("membership.removed", "admin_removed"),
    ]


async def test_same_membership_command_twice_counts_once(pipeline, tenant):
    contact = new_id()
    await applied(
        pipeline,
        new_list(tenant, "news"),
        command("contact.create", create(contact, f"{contact}@example.com"), tenant=tenant),
    )
    add = membership(tenant, "add", contact, "news")
    await applied(pipeline, add)
    again = await pipeline.send_again(add)
    assert again["code"] == "added"
    await assert_count_exact(pipeline, tenant, "news", 1)


async def test_unsubscribe_keeps_other_lists(pipeline, tenant):
    contact = new_id()
    await applied(
        pipeline,
        new_list(tenant, "news"),
        new_list(tenant, "offers"),
        command("contact.create", create(contact, f"{contact}@example.com"), tenant=tenant),
    )
    await applied(
        pipeline,
        membership(tenant, "add", contact, "news"),
        membership(tenant, "add", contact, "offers"),
    )

    result = await applied(
        pipeline, membership(tenant, "unsubscribe", contact, "offers", "contact", reason="too many")
    )
    assert result[0]["code"] == "unsubscribed"
    lists = (await contact_doc(pipeline, tenant, contact))["lists"]
    assert lists["news"]["status"] == "active"
    assert lists["offers"]["status"] == "unsubscribed"
    assert lists["offers"]["unsubscribeReason"] == "too many"

    admin, importer, sync = await pipeline.send(
        [
            membership(tenant, "add", contact, "offers"),
            membership(tenant, "add", contact, "offers", "import", source="import"),
            membership(tenant, "add", contact, "offers", "service", source="integration"),
        ]
    )
    for rejected in (admin, importer, sync):
        assert rejected["outcome"] == "rejected"
        assert rejected["code"] == "unsubscribed_from_list"
        assert rejected["errors"][0]["field"] == "payload.listId"
    await assert_count_exact(pipeline, tenant, "offers", 0)
    await assert_count_exact(pipeline, tenant, "news", 1)

    opt_in = await applied(pipeline, membership(tenant, "add", contact, "offers", "contact"))
    assert opt_in[0]["code"] == "resubscribed"
    await assert_count_exact(pipeline, tenant, "offers", 1)
    events = await membership_events(pipeline, tenant, contact)
    assert [e["type"] for e in events if e["listId"] == "offers"] == [
        "membership.added",
        "membership.unsubscribed",
        "membership.resubscribed",
    ]


async def test_dynamic_membership_follows_changes(pipeline, tenant):
    await applied(pipeline, new_list(tenant, "acme", "dynamic", criteria=ACME))
    contact = new_id()
    created = await applied(
        pipeline,
        command(
            "contact.create",
            create(contact, f"{contact}@example.com", company="Acme"),
            tenant=tenant,
        ),
    )
    assert created[0]["membershipChanges"] == [
        {"listId": "acme", "type": "membership.added", "reason": "rule_matched"}
    ]
    entry = (await contact_doc(pipeline, tenant, contact))["lists"]["acme"]
    assert entry["source"] == "dynamic"
    assert entry["reason"] == {"type": "rule", "criteriaVersion": 1}

    await applied(
        pipeline,
        command(
            "contact.update", {"contactId": contact, "changes": {"company": "Other"}}, tenant=tenant
        ),
        command(
            "contact.update", {"contactId": contact, "changes": {"company": "Acme"}}, tenant=tenant
        ),
        command(
            "contact.update", {"contactId": contact, "changes": {"company": "Else"}}, tenant=tenant
        ),
    )
    events = await membership_events(pipeline, tenant, contact)
    assert [(e["type"], e["reason"]) for e in events] == [
        ("membership.added", "rule_matched"),
        ("membership.removed", "rule_unmatched"),
        ("membership.added", "rule_matched"),
        ("membership.removed", "rule_unmatched"),
    ]
    await assert_count_exact(pipeline, tenant, "acme", 0)


async def test_rule_and_import_never_readd(pipeline, tenant):
    await applied(pipeline, new_list(tenant, "acme", "dynamic", criteria=ACME))
    contact = new_id()
    email = f"{contact}@example.com"
    await applied(
        pipeline, command("contact.create", create(contact, email, company="Acme"), tenant=tenant)
    )
    await applied(pipeline, membership(tenant, "unsubscribe", contact, "acme", "contact"))
    await assert_count_exact(pipeline, tenant, "acme", 0)

    await applied(
        pipeline,
        command(
            "contact.update", {"contactId": contact, "changes": {"company": "Other"}}, tenant=tenant
        ),
        command(
            "contact.update", {"contactId": contact, "changes": {"company": "Acme"}}, tenant=tenant
        ),
        command(
            "contact.create",
            create(contact, email, company="Acme", ifExists="merge"),
            tenant=tenant,
            actor_type="import",
        ),
    )
    rejected = await pipeline.send_one(membership(tenant, "add", contact, "acme", "import"))
    assert rejected["code"] == "unsubscribed_from_list"
    assert (await contact_doc(pipeline, tenant, contact))["lists"]["acme"][
        "status"
    ] == "unsubscribed"
    await assert_count_exact(pipeline, tenant, "acme", 0)

    # A criteria change backfills every contact, and still leaves this one out.
    changed = await applied(
        pipeline,
        command(
            "list.update",
            {
                "listId": "acme",
                "changes": {
                    "criteria": {
                        "logic": "or",
                        "conditions": [
                            {"field": "company", "operator": "contains", "value": "acm"}
                        ],
                    }
                },
            },
            tenant=tenant,
        ),
    )
    await wait_backfill(pipeline, changed[0]["backfillId"])
    assert (await contact_doc(pipeline, tenant, contact))["lists"]["acme"][
        "status"
    ] == "unsubscribed"
    await assert_count_exact(pipeline, tenant, "acme", 0)


async def test_new_list_and_criteria_change_backfill_existing_contacts(pipeline, tenant):
    companies = {new_id(): company for company in ["Acme", "Acme", "Globex", "Initech", "Acme"]}
    await applied(
        pipeline,
        *[
            command(
                "contact.create",
                create(cid, f"{cid}@example.com", company=company, customFields={"score": n * 10}),
                tenant=tenant,
            )
            for n, (cid, company) in enumerate(companies.items())
        ],
    )
    acme = {cid for cid, company in companies.items() if company == "Acme"}

    created = await applied(pipeline, new_list(tenant, "seg", "dynamic", criteria=ACME))
    done = await wait_backfill(pipeline, created[0]["backfillId"])
    assert done["status"] == "completed"
    assert done["scanned"] == 5
    assert done["membersBefore"] == 0
    assert done["membersAfter"] == 3
    assert await members(pipeline, tenant, "seg") == acme
    await assert_count_exact(pipeline, tenant, "seg", 3)

    high = {
        "logic": "and",
        "conditions": [
            {"field": "customFields.score", "operator": "greaterThan", "value": 15},
            {
                "logic": "or",
                "conditions": [
                    {"field": "company", "operator": "in", "value": ["Globex", "Acme"]},
                    {"field": "company", "operator": "equals", "value": "Initech"},
                ],
            },
        ],
    }
    updated = await applied(
        pipeline,
        command("list.update", {"listId": "seg", "changes": {"criteria": high}}, tenant=tenant),
    )
    await wait_backfill(pipeline, updated[0]["backfillId"])
    expected = {cid for n, cid in enumerate(companies) if n * 10 > 15}
    assert await members(pipeline, tenant, "seg") == expected
    await assert_count_exact(pipeline, tenant, "seg", len(expected))

    events = [
        json.loads(r.value)
        for r in await pipeline.read_topic(topic_names.LIST_EVENTS)
        if r.key == f"{tenant}:seg".encode()
    ]
    assert [e["type"] for e in events] == [
        "list.created",
        "list.backfill.completed",
        "list.updated",
        "list.backfill.completed",
    ]


async def test_deleting_a_list_or_contact_ends_memberships(pipeline, tenant):
    first, second = new_id(), new_id()
    await applied(
        pipeline,
        new_list(tenant, "news"),
        new_list(tenant, "old"),
        command("contact.create", create(first, f"{first}@example.com"), tenant=tenant),
        command("contact.create", create(second, f"{second}@example.com"), tenant=tenant),
    )
    await applied(
        pipeline,
        membership(tenant, "add", first, "news"),
        membership(tenant, "add", second, "news"),
        membership(tenant, "add", first, "old"),
    )
    deleted = await applied(
        pipeline, command("contact.delete", {"contactId": second}, tenant=tenant)
    )
    assert deleted[0]["membershipChanges"][0]["reason"] == "contact_deleted"
    await assert_count_exact(pipeline, tenant, "news", 1)

    gone = await applied(pipeline, command("list.delete", {"listId": "old"}, tenant=tenant))
    await wait_backfill(pipeline, gone[0]["backfillId"])
    assert "old" not in (await contact_doc(pipeline, tenant, first))["lists"]
    await assert_count_exact(pipeline, tenant, "old", 0)

    rejected = await pipeline.send_one(membership(tenant, "add", first, "old"))
    assert rejected["code"] == "list_not_found"


@pytest.mark.parametrize(
    ("criteria", "field", "reason_part"),
    [
        (
            {
                "logic": "and",
                "conditions": [{"field": "shoeSize", "operator": "equals", "value": 1}],
            },
            "payload.criteria.conditions[0].field",
            "customFields",
        ),
        (
            {
                "logic": "and",
                "conditions": [{"field": "company", "operator": "like", "value": "A"}],
            },
            "payload.criteria.conditions[0].operator",
            "equals",
        ),
        (
            {
                "logic": "and",
                "conditions": [
                    {"field": "metadata.createdAt", "operator": "greaterThan", "value": "yesterday"}
                ],
            },
            "payload.criteria.conditions[0].value",
            "",
        ),
        (
            {"logic": "and", "conditions": [{"field": "version", "operator": "in", "value": 3}]},
            "payload.criteria.conditions[0].value",
            "",
        ),
    ],
)
async def test_bad_criteria_rejected(pipeline, tenant, criteria, field, reason_part):
    result = await pipeline.send_one(new_list(tenant, "bad", "dynamic", criteria=criteria))
    assert result["outcome"] == "rejected"
    assert result["code"] == "invalid_criteria"
    error = result["errors"][0]
    assert error["field"] == field
    assert reason_part in error["reason"]
    assert await pipeline.db.lists.find_one({"_id": f"{tenant}:bad"}) is None


async def test_criteria_nested_too_deep_are_rejected(pipeline, tenant):
    criteria: dict[str, Any] = {
        "logic": "and",
        "conditions": [{"field": "company", "operator": "exists", "value": True}],
    }
    for _ in range(8):
        criteria = {"logic": "or", "conditions": [criteria]}
    result = await pipeline.send_one(new_list(tenant, "deep", "dynamic", criteria=criteria))
    assert result["code"] == "invalid_criteria"
    assert "deep" in result["errors"][0]["reason"]


async def test_membership_rejections_name_field_and_leave_other_data(pipeline, tenant):
    other_tenant = f"{tenant}x"
    contact, removed = new_id(), new_id()
    await applied(
        pipeline,
        new_list(tenant, "news"),
        new_list(tenant, "acme", "dynamic", criteria=ACME),
        new_list(other_tenant, "theirs"),
        command("contact.create", create(contact, f"{contact}@example.com"), tenant=tenant),
        command("contact.create", create(removed, f"{removed}@example.com"), tenant=tenant),
    )
    await applied(pipeline, command("contact.delete", {"contactId": removed}, tenant=tenant))
    before = await contact_doc(pipeline, tenant, contact)

    results = await pipeline.send(
        [
            membership(tenant, "add", contact, "theirs"),
            membership(other_tenant, "add", contact, "theirs"),
            membership(tenant, "add", removed, "news"),
            membership(tenant, "add", contact, "acme"),
            membership(tenant, "remove", contact, "acme"),
            command(
                "list.create",
                {"listId": "x", "name": "x", "type": "static", "criteria": ACME},
                tenant=tenant,
            ),
            {**membership(tenant, "add", contact, "news"), "type": "membership.join"},
        ]
    )
    codes = [(r["code"], (r.get("errors") or [{}])[0].get("field")) for r in results]
    assert codes == [
        ("list_not_found", "payload.listId"),
        ("contact_not_found", "payload.contactId"),
        ("contact_not_found", "payload.contactId"),
        ("list_is_dynamic", "payload.listId"),
        ("list_is_dynamic", "payload.listId"),
        ("invalid_criteria", "payload.criteria"),
        ("invalid_command", "type"),
    ]
    assert all(r["outcome"] == "rejected" for r in results)
    assert await contact_doc(pipeline, tenant, contact) == before
    await assert_count_exact(pipeline, tenant, "news", 0)


async def test_list_command_on_the_contact_topic_is_rejected(pipeline, tenant):
    from contact_pipeline.kafka.client import produce_commands

    message = new_list(tenant, "misrouted")
    await produce_commands(pipeline.servers.kafka, pipeline.topic(topic_names.COMMANDS), [message])
    results = await pipeline.collector.wait_for({message["commandId"]}, 30)
    result = results[message["commandId"]]
    assert result["code"] == "wrong_topic"
    assert "list-commands" in result["message"]
