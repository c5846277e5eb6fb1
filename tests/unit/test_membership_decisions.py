"""Membership and list rules, driven directly without Kafka or a store."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from contact_pipeline.domain.commands import Decoded, Envelope, SourcePosition
from contact_pipeline.domain.errors import CommandRejected, FieldError
from contact_pipeline.handlers.contacts import Write, decide
from contact_pipeline.handlers.lists import ListWrite, decide_list
from contact_pipeline.handlers.memberships import ListDef, TenantLists
from contact_pipeline.handlers.validation import validate_command
from contact_pipeline.schemas import load_schemas
from tests.factories import command, create

SCHEMAS = load_schemas(Path(__file__).resolve().parents[2] / "schemas")
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
POSITION = SourcePosition("contact-commands", 0, 0)
ACME = {"logic": "and", "conditions": [{"field": "company", "operator": "equals", "value": "Acme"}]}


def validated(message: dict[str, Any]):
    decoded = Decoded(POSITION, message, message["commandId"], message["tenantId"])
    return validate_command(decoded, SCHEMAS)


def list_def(list_id: str, list_type: str = "static", **doc: Any) -> ListDef:
    return ListDef.from_doc(
        {
            "id": list_id,
            "tenantId": "tenant-a",
            "type": list_type,
            "version": 1,
            "criteriaVersion": 1 if list_type == "dynamic" else 0,
            **doc,
        }
    )


LISTS = TenantLists(
    {
        "news": list_def("news"),
        "offers": list_def("offers"),
        "acme": list_def("acme", "dynamic", criteria=ACME),
        "gone": list_def("gone", deleted=True),
    }
)


def apply(doc: dict[str, Any] | None, message: dict[str, Any]) -> Write:
    write = decide(doc, validated(message), NOW, LISTS)
    assert isinstance(write, Write)
    return write


def member(kind: str, list_id: str, actor_type: str = "user", **payload: Any) -> dict[str, Any]:
    return command(
        f"membership.{kind}",
        {"contactId": "c1", "listId": list_id, **payload},
        actor_type=actor_type,
    )


def update(**changes: Any) -> dict[str, Any]:
    return command("contact.update", {"contactId": "c1", "changes": changes})


def contact(**fields: Any) -> dict[str, Any]:
    return apply(
        None, command("contact.create", create("c1", "anna@example.com", **fields))
    ).document


def test_matching_create_joins_dynamic_list():
    write = apply(None, command("contact.create", create("c1", "a@example.com", company="Acme")))
    assert write.document["lists"]["acme"]["source"] == "dynamic"
    assert write.document["version"] == 1
    assert write.list_delta == {"acme": 1}
    assert [e["type"] for e in write.membership_events] == ["membership.added"]
    assert write.document["_commands"][-1]["listDelta"] == {"acme": 1}


def test_update_that_stops_matching_leaves_the_dynamic_list():
    write = apply(contact(company="Acme"), update(company="Initech"))
    assert "acme" not in write.document["lists"]
    assert write.list_delta == {"acme": -1}
    assert write.membership_events[0]["reason"] == "rule_unmatched"


def test_static_add_then_remove_changes_count_both_ways():
    added = apply(contact(), member("add", "news", notes="expo", source="import"))
    entry = added.document["lists"]["news"]
    assert (entry["status"], entry["source"], entry["notes"]) == ("active", "import", "expo")
    assert added.code == "added"
    assert added.list_delta == {"news": 1}

    removed = apply(added.document, member("remove", "news"))
    assert removed.code == "removed"
    assert removed.list_delta == {"news": -1}
    assert removed.membership_events[0]["reason"] == "admin_removed"


def test_add_of_existing_member_changes_only_details():
    added = apply(contact(), member("add", "news"))
    again = apply(added.document, member("add", "news"))
    assert again.code == "unchanged"
    assert again.list_delta == {}
    noted = apply(added.document, member("add", "news", preferences={"frequency": "monthly"}))
    assert noted.code == "updated"
    assert noted.document["lists"]["news"]["preferences"] == {"frequency": "monthly"}


def test_unsubscribe_is_sticky_for_admins_imports_and_syncs():
    added = apply(contact(), member("add", "news"))
    gone = apply(added.document, member("unsubscribe", "news", "contact", reason="too many"))
    assert gone.list_delta == {"news": -1}
    for actor, source in (("user", "manual"), ("import", "import"), ("service", "integration")):
        with pytest.raises(CommandRejected) as info:
            apply(gone.document, member("add", "news", actor, source=source))
        assert info.value.code == "unsubscribed_from_list"
        assert info.value.details["field"] == "payload.listId"

    back = apply(gone.document, member("add", "news", "contact"))
    assert back.code == "resubscribed"
    assert back.list_delta == {"news": 1}


def test_unsubscribe_before_joining_keeps_a_rule_from_adding():
    doc = apply(contact(), member("unsubscribe", "acme", "contact")).document
    write = apply(doc, update(company="Acme"))
    assert write.document["lists"]["acme"]["status"] == "unsubscribed"
    assert write.list_delta == {}


def test_dynamic_opt_in_reapplies_rule():
    doc = apply(contact(company="Acme"), member("unsubscribe", "acme", "contact")).document
    write = apply(doc, member("add", "acme", "contact"))
    assert write.document["lists"]["acme"]["status"] == "active"
    assert [e["type"] for e in write.membership_events] == [
        "membership.resubscribed",
        "membership.added",
    ]


@pytest.mark.parametrize("kind", ["add", "remove"])
def test_static_commands_against_a_dynamic_list_are_rejected(kind):
    with pytest.raises(CommandRejected) as info:
        apply(contact(company="Acme"), member(kind, "acme"))
    assert info.value.code == "list_is_dynamic"


@pytest.mark.parametrize("list_id", ["missing", "gone"])
def test_missing_or_deleted_list_rejected(list_id):
    with pytest.raises(CommandRejected) as info:
        apply(contact(), member("add", list_id))
    assert info.value.code == "list_not_found"
    assert info.value.details["value"] == list_id


def test_membership_of_a_deleted_contact_is_rejected():
    tombstone = apply(contact(), command("contact.delete", {"contactId": "c1"})).document
    with pytest.raises(CommandRejected) as info:
        apply(tombstone, member("add", "news"))
    assert info.value.code == "contact_not_found"
    assert info.value.details["field"] == "payload.contactId"


def test_deleting_a_contact_ends_memberships_but_keeps_unsubscribes():
    doc = apply(contact(company="Acme"), member("add", "news")).document
    doc = apply(doc, member("unsubscribe", "offers", "contact")).document
    deleted = apply(doc, command("contact.delete", {"contactId": "c1"}))
    assert deleted.list_delta == {"news": -1, "acme": -1}
    assert deleted.document["lists"] == {"offers": doc["lists"]["offers"]}

    again = apply(deleted.document, command("contact.create", create("c1", "a@example.com")))
    assert again.document["lists"]["offers"]["status"] == "unsubscribed"


def test_evaluate_of_a_deleted_list_removes_the_membership():
    doc = apply(contact(), member("add", "news")).document
    lists = TenantLists({"news": list_def("news", deleted=True)})
    message = member("evaluate", "news", "system", backfillId="bf-1")
    write = decide(doc, validated(message), NOW, lists)
    assert isinstance(write, Write)
    assert write.list_delta == {"news": -1}
    assert write.membership_events[0]["reason"] == "list_deleted"


def test_membership_event_ids_are_stable_across_republishing():
    message = member("add", "news")
    first = apply(contact(), message)
    second = apply(contact(), message)
    assert first.membership_events[0]["id"] == second.membership_events[0]["id"]


def envelope(command_type: str, payload: dict[str, Any]) -> Envelope:
    return Envelope.model_validate(command(command_type, payload))


def test_static_list_with_criteria_is_rejected():
    with pytest.raises(FieldError) as info:
        decide_list(
            None,
            envelope(
                "list.create", {"listId": "l", "name": "L", "type": "static", "criteria": ACME}
            ),
            NOW,
        )
    assert info.value.field == "payload.criteria"


def test_dynamic_list_needs_criteria():
    with pytest.raises(FieldError) as info:
        decide_list(
            None, envelope("list.create", {"listId": "l", "name": "L", "type": "dynamic"}), NOW
        )
    assert "needs criteria" in info.value.reason


def test_only_criteria_change_backfills():
    created = decide_list(
        None,
        envelope("list.create", {"listId": "l", "name": "L", "type": "dynamic", "criteria": ACME}),
        NOW,
    )
    assert isinstance(created, ListWrite)
    assert created.backfill is not None
    doc = created.document

    renamed = decide_list(
        doc, envelope("list.update", {"listId": "l", "changes": {"name": "M"}}), NOW
    )
    assert isinstance(renamed, ListWrite)
    assert renamed.backfill is None
    assert renamed.document["criteriaVersion"] == 1

    other = {"logic": "or", "conditions": ACME["conditions"]}
    changed = decide_list(
        renamed.document,
        envelope("list.update", {"listId": "l", "changes": {"criteria": other}}),
        NOW,
    )
    assert isinstance(changed, ListWrite)
    assert changed.document["criteriaVersion"] == 2
    assert changed.backfill is not None
    assert changed.backfill["criteriaVersion"] == 2


def test_list_command_sent_again_answers_from_history():
    message = envelope("list.create", {"listId": "l", "name": "L", "type": "static"})
    created = decide_list(None, message, NOW)
    assert isinstance(created, ListWrite)
    entry = decide_list(created.document, message, NOW)
    assert isinstance(entry, dict)
    assert entry["code"] == "created"


def test_history_keeps_events_of_recent_commands_only():
    doc = contact()
    for _ in range(6):
        doc = apply(doc, member("add", "news")).document
        doc = apply(doc, member("remove", "news")).document
    with_events = [entry for entry in doc["_commands"] if "membershipEvents" in entry]
    assert len(with_events) == 10
    assert doc["_commands"][-1]["membershipEvents"]
    assert all("listDelta" in entry for entry in doc["_commands"][1:])


def test_resubscribe_and_rule_add_have_distinct_event_ids():
    doc = apply(contact(company="Acme"), member("unsubscribe", "acme", "contact")).document
    write = apply(doc, member("add", "acme", "contact"))
    ids = [event["id"] for event in write.membership_events]
    assert len(ids) == 2
    assert len(set(ids)) == 2


def consent_grant(actor: str) -> dict[str, Any]:
    payload = {
        "contactId": "c1",
        "channel": "email",
        "legalBasis": "consent",
        "source": "import",
        "noticeId": "n1",
    }
    return command("consent.grant", payload, actor_type=actor)


def test_consent_withdrawal_survives_delete_and_create_again():
    doc = apply(contact(), consent_grant("contact")).document
    withdraw = command(
        "consent.withdraw",
        {"contactId": "c1", "channel": "email", "source": "form"},
        actor_type="contact",
    )
    doc = apply(doc, withdraw).document
    tombstone = apply(doc, command("contact.delete", {"contactId": "c1"})).document
    assert len(tombstone["consent"]["ledger"]) == 2

    again = apply(tombstone, command("contact.create", create("c1", "a@example.com"))).document
    assert again["consent"]["state"]["email"]["status"] == "withdrawn"
    with pytest.raises(CommandRejected) as info:
        apply(again, consent_grant("import"))
    assert info.value.code == "consent_withdrawn"


def test_send_time_in_the_future_is_rejected():
    sent = command(
        "message.sent",
        {"contactId": "c1", "listId": "news", "channel": "email", "sentAt": "2027-05-01T00:00:00Z"},
    )
    with pytest.raises(CommandRejected) as info:
        apply(contact(), sent)
    assert info.value.details["field"] == "payload.sentAt"


def test_recorded_send_publishes_a_contact_update():
    sent = command(
        "message.sent",
        {"contactId": "c1", "listId": "news", "channel": "email", "sentAt": "2026-11-30T08:00:00Z"},
    )
    write = apply(contact(), sent)
    assert write.code == "recorded"
    assert write.event["type"] == "contact.updated"
    assert write.event["changedFields"] == ["sends.news.email"]
