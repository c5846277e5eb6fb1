"""The contact rules, driven directly without Kafka or a store."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from contact_pipeline.domain.commands import Decoded, SourcePosition
from contact_pipeline.domain.errors import CommandRejected
from contact_pipeline.handlers.contacts import AlreadyApplied, Write, decide
from contact_pipeline.handlers.validation import InvalidCommand, validate_command
from contact_pipeline.schemas import load_schemas
from tests.factories import command, create

SCHEMAS = load_schemas(Path(__file__).resolve().parents[2] / "schemas")
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
POSITION = SourcePosition("contact-commands", 0, 0)


def validated(message: dict):
    decoded = Decoded(POSITION, message, message["commandId"], message["tenantId"])
    return validate_command(decoded, SCHEMAS)


def created_doc(**fields) -> dict:
    write = decide(
        None, validated(command("contact.create", create("c1", "Anna@Example.COM", **fields))), NOW
    )
    assert isinstance(write, Write)
    return write.document


def test_create_normalises_email_and_sets_defaults():
    doc = created_doc(phone="+1 (415) 555-6331")
    assert doc["email"] == "Anna@example.com"
    assert doc["emailKey"] == "anna@example.com"
    assert doc["phone"] == "+14155556331"
    assert doc["version"] == 1
    assert doc["status"] == "active"
    assert doc["preferences"]["frequency"] == "weekly"
    assert doc["metadata"]["createdAt"] == NOW


def test_create_event_lists_changed_fields():
    message = command("contact.create", create("c1", "anna@example.com", firstName="Anna"))
    write = decide(None, validated(message), NOW)
    assert write.event["type"] == "contact.created"
    assert "firstName" in write.event["changedFields"]
    assert write.event["subject"] == "tenants/tenant-a/contacts/c1"
    assert write.event["data"]["firstName"] == "Anna"


def test_create_of_existing_contact_rejected():
    doc = created_doc()
    with pytest.raises(CommandRejected) as info:
        decide(doc, validated(command("contact.create", create("c1", "anna@example.com"))), NOW)
    assert info.value.code == "contact_exists"


def test_create_merge_keeps_unsubscribed_status():
    doc = created_doc(status="unsubscribed")
    payload = create("c1", "anna@example.com", status="active", ifExists="merge", firstName="Ann")
    write = decide(doc, validated(command("contact.create", payload)), NOW)
    assert write.document["status"] == "unsubscribed"
    assert write.ignored_fields == ["status"]
    assert write.document["firstName"] == "Ann"
    assert write.merged


def test_update_applies_merge_patch():
    doc = created_doc(preferences={"communicationChannels": {"email": True, "sms": True}})
    changes = {"preferences": {"communicationChannels": {"sms": False}}, "title": "CTO"}
    write = decide(
        doc, validated(command("contact.update", {"contactId": "c1", "changes": changes})), NOW
    )
    assert write.document["preferences"]["communicationChannels"] == {
        "email": True,
        "sms": False,
        "social": False,
    }
    assert write.document["title"] == "CTO"
    assert write.changed_fields == ["preferences.communicationChannels.sms", "title"]
    assert write.document["version"] == 2


def test_update_null_removes_optional_field():
    doc = created_doc(company="Acme")
    changes = {"company": None}
    write = decide(
        doc, validated(command("contact.update", {"contactId": "c1", "changes": changes})), NOW
    )
    assert "company" not in write.document
    assert write.changed_fields == ["company"]


def test_update_with_same_values_is_unchanged():
    doc = created_doc(company="Acme")
    message = command("contact.update", {"contactId": "c1", "changes": {"company": "Acme"}})
    write = decide(doc, validated(message), NOW)
    assert write.code == "unchanged"
    assert write.event is None
    assert write.document["version"] == 1


def test_update_with_stale_version_rejected():
    doc = created_doc()
    message = command(
        "contact.update", {"contactId": "c1", "expectedVersion": 5, "changes": {"title": "x"}}
    )
    with pytest.raises(CommandRejected) as info:
        decide(doc, validated(message), NOW)
    assert info.value.code == "version_conflict"
    assert info.value.details["currentVersion"] == 1


def test_update_of_missing_contact_rejected():
    message = command("contact.update", {"contactId": "c1", "changes": {"title": "x"}})
    with pytest.raises(CommandRejected) as info:
        decide(None, validated(message), NOW)
    assert info.value.code == "contact_not_found"


def test_update_cannot_resubscribe_for_admin():
    doc = created_doc(status="unsubscribed")
    message = command("contact.update", {"contactId": "c1", "changes": {"status": "active"}})
    with pytest.raises(CommandRejected) as info:
        decide(doc, validated(message), NOW)
    assert info.value.code == "opt_out_sticky"


def test_update_resubscribes_for_contact_actor():
    doc = created_doc(status="unsubscribed")
    message = command(
        "contact.update", {"contactId": "c1", "changes": {"status": "active"}}, actor_type="contact"
    )
    write = decide(doc, validated(message), NOW)
    assert write.document["status"] == "active"


def test_email_change_claims_new_key_and_releases_old():
    doc = created_doc()
    message = command("contact.update", {"contactId": "c1", "changes": {"email": "B@Example.com"}})
    write = decide(doc, validated(message), NOW)
    assert write.claim_email_key == "b@example.com"
    assert write.release_email_key == "anna@example.com"


def test_delete_leaves_tombstone_without_profile():
    doc = created_doc(firstName="Anna", phone="+14155556331")
    write = decide(doc, validated(command("contact.delete", {"contactId": "c1"})), NOW)
    assert write.document["deleted"] is True
    assert "email" not in write.document
    assert "phone" not in write.document
    assert write.release_email_key == "anna@example.com"
    assert write.event["data"] is None


def test_redelivered_command_is_already_applied():
    message = command("contact.create", create("c1", "anna@example.com"))
    write = decide(None, validated(message), NOW)
    again = decide(write.document, validated(message), NOW)
    assert isinstance(again, AlreadyApplied)
    assert again.entry["version"] == 1


def test_schema_violation_names_field():
    message = command(
        "contact.create", create("c1", "anna@example.com", preferences={"frequency": "hourly"})
    )
    with pytest.raises(InvalidCommand) as info:
        validated(message)
    assert info.value.code == "invalid_command"
    assert info.value.errors[0]["field"] == "payload.preferences.frequency"
    assert info.value.errors[0]["value"] == "hourly"


def test_invalid_values_all_reported():
    payload = create(
        "c1", "not-an-email", phone="not a phone", preferences={"timezone": "Mars/Base"}
    )
    with pytest.raises(InvalidCommand) as info:
        validated(command("contact.create", payload))
    fields = [error["field"] for error in info.value.errors]
    assert fields == ["payload.email", "payload.phone", "payload.preferences.timezone"]
    assert info.value.code == "invalid_value"


def test_unknown_command_type_rejected():
    with pytest.raises(InvalidCommand) as info:
        validated(command("contact.merge", {"contactId": "c1"}))
    assert any(error["field"] == "type" for error in info.value.errors)


def test_merge_keeps_stored_email_spelling():
    doc = created_doc()
    payload = create("c1", "ANNA@example.com", ifExists="merge", company="Acme")
    write = decide(doc, validated(command("contact.create", payload)), NOW)
    assert write.document["email"] == "Anna@example.com"
    assert write.changed_fields == ["company"]
