"""Audit entries built from events, their hash chain, and the verifier's findings."""

from __future__ import annotations

import json
from typing import Any

import pytest

from contact_pipeline.audit.chain import (
    GENESIS_HASH,
    ChainHead,
    SourceRecord,
    encode_entry,
    entry_hash,
    extend_chain,
    safe_id,
    verify_entries,
)
from contact_pipeline.kafka import topics as topic_names

EMAIL = "anna.schmidt@example.com"
PHONE = "+4915112345678"
NAME = "Annegret"
TENANT = "acme"
TIMESTAMP_MS = 1_796_133_600_000  # 2026-12-01T14:00:00Z


def contact_event(n: int, event_type: str = "contact.updated", **extra: Any) -> dict[str, Any]:
    event = {
        "specversion": "1.0",
        "id": f"event-{n}",
        "type": event_type,
        "source": "contact-pipeline/worker",
        "subject": f"tenants/{TENANT}/contacts/c-1",
        "time": f"2026-12-01T10:00:{n:02d}.123000+00:00",
        "tenantId": TENANT,
        "contactId": "c-1",
        "version": n + 1,
        "changedFields": ["firstName", "phone"],
        "commandId": f"cmd-{n}",
        "actor": {"type": "user", "id": "u-7"},
        "data": {"id": "c-1", "email": EMAIL, "phone": PHONE, "firstName": NAME},
    }
    event.update(extra)
    return event


def membership_event() -> dict[str, Any]:
    return {
        "id": "m-event-1",
        "type": "membership.unsubscribed",
        "subject": f"tenants/{TENANT}/lists/news/contacts/c-1",
        "time": "2026-12-01T11:00:00+00:00",
        "tenantId": TENANT,
        "contactId": "c-1",
        "listId": "news",
        "reason": "unsubscribed",
        "commandId": "cmd-m",
        "actor": {"type": "contact", "id": "c-1"},
        "data": {
            "status": "unsubscribed",
            "source": "import",
            "notes": f"ask {NAME} at {EMAIL} or {PHONE}",
            "unsubscribeReason": f"mail {EMAIL}",
        },
    }


def list_event() -> dict[str, Any]:
    return {
        "id": "l-event-1",
        "type": "list.created",
        "time": "2026-12-01T09:00:00+00:00",
        "tenantId": TENANT,
        "listId": "news",
        "version": 1,
        "changedFields": ["name", "type"],
        "commandId": "cmd-l",
        "actor": {"type": "user", "id": EMAIL},
        "data": {"id": "news", "name": f"{NAME}'s list", "description": PHONE},
    }


def consent_event() -> dict[str, Any]:
    return {
        "id": "consent-1",
        "type": "consent.withdrawn",
        "time": "2026-12-01T12:00:00Z",
        "tenantId": TENANT,
        "contactId": "c-1",
        "channel": "email",
        "commandId": "cmd-consent",
        "actor": {"type": "contact", "id": "c-1"},
        "data": {"address": EMAIL, "phone": PHONE, "legalBasis": "consent"},
    }


def decision() -> dict[str, Any]:
    return {
        "requestId": "req-1",
        "tenantId": TENANT,
        "contactId": "c-1",
        "listId": "news",
        "channel": "sms",
        "decision": "deny",
        "reasons": ["unsubscribed", {"code": "no_consent", "detail": f"for {PHONE}"}],
        "decidedAt": "2026-12-01T13:00:00+00:00",
        "phone": PHONE,
    }


def records(
    topic: str, events: list[Any], partition: int = 3, first: int = 0
) -> list[SourceRecord]:
    return [
        SourceRecord(
            topic,
            partition,
            first + index,
            event if isinstance(event, bytes) else json.dumps(event).encode(),
            TIMESTAMP_MS,
        )
        for index, event in enumerate(events)
    ]


def chain_of(count: int, partition: int = 3) -> list[dict[str, Any]]:
    events = [contact_event(n) for n in range(count)]
    source = records(topic_names.EVENTS, events, partition)
    entries, _ = extend_chain(ChainHead(source[0].chain), source)
    return entries


def lines_of(entries: list[dict[str, Any]]) -> list[str]:
    return [encode_entry(entry).decode() for entry in entries]


def verify_lines(lines: list[str], heads: list[ChainHead] | None = None) -> Any:
    return verify_entries(
        ((f"line {number}", line) for number, line in enumerate(lines, start=1)), heads
    )


def rehashed(line: str, **changes: Any) -> str:
    """Return a forged copy of an entry whose hash matches its new content."""
    entry = json.loads(line)
    entry.update(changes)
    entry["hash"] = entry_hash(entry)
    return encode_entry(entry).decode()


# --- building entries ---------------------------------------------------------------------


def test_entries_link_by_seq_and_prev_hash():
    entries = chain_of(3)

    assert [entry["seq"] for entry in entries] == [0, 1, 2]
    assert entries[0]["prevHash"] == GENESIS_HASH
    assert entries[1]["prevHash"] == entries[0]["hash"]
    assert entries[2]["prevHash"] == entries[1]["hash"]
    for entry in entries:
        assert entry["hash"] == entry_hash(entry)


def test_contact_entry_fields():
    entry = chain_of(1)[0]

    assert entry["chain"] == "contact-events/3"
    assert entry["time"] == "2026-12-01T10:00:00.123000Z"
    assert entry["tenantId"] == TENANT
    assert entry["actor"] == {"type": "user", "id": "u-7"}
    assert entry["action"] == "contact.updated"
    assert entry["entity"] == {"type": "contact", "id": "c-1", "contactId": "c-1"}
    assert entry["changes"] == {"fields": ["firstName", "phone"], "version": 1}
    assert entry["source"] == {"topic": "contact-events", "partition": 3, "offset": 0}
    assert entry["eventId"] == "event-0"
    assert entry["commandId"] == "cmd-0"


def test_entries_are_deterministic():
    first = lines_of(chain_of(4))
    second = lines_of(chain_of(4))

    assert first == second


def test_entry_id_follows_source_event_id():
    source = records(topic_names.EVENTS, [contact_event(0), contact_event(0)])
    entries, _ = extend_chain(ChainHead(source[0].chain), source)

    assert entries[0]["id"] == entries[1]["id"]
    assert entries[0]["hash"] != entries[1]["hash"]


def test_chain_skips_offsets_below_head():
    source = records(topic_names.EVENTS, [contact_event(n) for n in range(5)])
    chained, head = extend_chain(ChainHead(source[0].chain), source[:3])

    again, new_head = extend_chain(head, source)

    assert [entry["source"]["offset"] for entry in again] == [3, 4]
    assert again[0]["seq"] == 3
    assert again[0]["prevHash"] == chained[-1]["hash"]
    assert new_head == ChainHead("contact-events/3", 4, again[-1]["hash"], 4)


def test_chain_rejects_other_chain_record():
    source = records(topic_names.EVENTS, [contact_event(0)], partition=1)

    with pytest.raises(ValueError, match="contact-events/1"):
        extend_chain(ChainHead("contact-events/2"), source)


def test_membership_entry_keeps_codes():
    source = records(topic_names.MEMBERSHIP_EVENTS, [membership_event()])
    entry = extend_chain(ChainHead(source[0].chain), source)[0][0]

    assert entry["action"] == "membership.unsubscribed"
    assert entry["entity"] == {
        "type": "membership",
        "id": "news:c-1",
        "contactId": "c-1",
        "listId": "news",
    }
    assert entry["changes"] == {
        "status": "unsubscribed",
        "source": "import",
        "reason": "unsubscribed",
    }


def test_decision_entry_keeps_reason_codes():
    source = records(topic_names.CONTACTABILITY_REPLIES, [decision()])
    entry = extend_chain(ChainHead(source[0].chain), source)[0][0]

    assert entry["chain"] == "contactability-replies/3"
    assert entry["action"] == "contactability.decided"
    assert entry["time"] == "2026-12-01T13:00:00.000000Z"
    assert entry["entity"] == {
        "type": "decision",
        "id": "req-1",
        "contactId": "c-1",
        "listId": "news",
    }
    assert entry["changes"] == {
        "decision": "deny",
        "reasons": ["unsubscribed", "no_consent"],
        "channel": "sms",
    }
    assert entry["actor"] == {"type": "system", "id": "contactability"}


def test_backfill_entry_keeps_reason():
    event = {
        "id": "bf-event",
        "type": "list.backfill.completed",
        "time": "2026-12-01T09:00:05+00:00",
        "tenantId": TENANT,
        "listId": "vip",
        "backfillId": "bf-123",
        "reason": "criteria_changed",
        "actor": {"type": "system", "id": "backfill"},
        "data": {"scanned": 10, "membersAfter": 4},
    }
    source = records(topic_names.LIST_EVENTS, [event])
    entry = extend_chain(ChainHead(source[0].chain), source)[0][0]

    assert entry["entity"] == {"type": "list", "id": "vip", "listId": "vip"}
    assert entry["changes"] == {"backfillId": "bf-123", "reason": "criteria_changed"}
    assert entry["commandId"] is None


def test_unreadable_source_gets_entry():
    source = records(topic_names.EVENTS, [b"\xff not json", b"[1, 2]"])
    entries, _ = extend_chain(ChainHead(source[0].chain), source)

    assert [entry["action"] for entry in entries] == ["audit.unreadable_source"] * 2
    assert entries[0]["time"] == "2026-12-01T14:00:00.000000Z"
    assert entries[0]["id"] != entries[1]["id"]


def test_bad_event_time_uses_record_time():
    source = records(topic_names.EVENTS, [contact_event(0, time="yesterday")])
    entry = extend_chain(ChainHead(source[0].chain), source)[0][0]

    assert entry["time"] == "2026-12-01T14:00:00.000000Z"


@pytest.mark.parametrize(
    ("topic", "event"),
    [
        (topic_names.EVENTS, contact_event(0, "contact.created")),
        (topic_names.MEMBERSHIP_EVENTS, membership_event()),
        (topic_names.LIST_EVENTS, list_event()),
        (topic_names.CONSENT_EVENTS, consent_event()),
        (topic_names.CONTACTABILITY_REPLIES, decision()),
    ],
)
def test_entry_never_copies_pii(topic, event):
    source = records(topic, [event])
    entry = extend_chain(ChainHead(source[0].chain), source)[0][0]
    text = encode_entry(entry).decode()

    assert EMAIL not in text
    assert PHONE not in text
    assert PHONE[1:] not in text
    assert NAME not in text
    assert "data" not in entry


def test_ids_that_are_addresses_are_redacted():
    event = contact_event(0, contactId=EMAIL, actor={"type": "user", "id": PHONE})
    source = records(topic_names.EVENTS, [event])
    entry = extend_chain(ChainHead(source[0].chain), source)[0][0]
    text = encode_entry(entry).decode()

    assert EMAIL not in text
    assert PHONE not in text
    assert entry["entity"]["contactId"] == safe_id(EMAIL)
    assert entry["entity"]["contactId"].startswith("redacted-")
    assert entry["actor"]["id"].startswith("redacted-")


def test_safe_id_keeps_ordinary_ids():
    assert safe_id("c-1") == "c-1"
    assert safe_id("4915112345678") == "4915112345678"
    assert safe_id(42) == "42"
    assert safe_id(None) is None


def test_consent_entry_keeps_channel_only():
    source = records(topic_names.CONSENT_EVENTS, [consent_event()])
    entry = extend_chain(ChainHead(source[0].chain), source)[0][0]

    assert entry["entity"] == {"type": "consent", "id": "c-1", "contactId": "c-1"}
    assert entry["changes"] == {"channel": "email", "fields": []}


# --- verification -------------------------------------------------------------------------


def test_intact_chain_verifies():
    result = verify_lines(lines_of(chain_of(5)))

    assert result.ok
    assert result.summary() == "5 entries in 1 chains verified"


def test_interleaved_chains_verify():
    first = lines_of(chain_of(3, partition=1))
    second = lines_of(chain_of(3, partition=2))
    mixed = [first[0], second[0], second[1], first[1], first[2], second[2]]

    result = verify_lines(mixed)

    assert result.ok
    assert result.summary() == "6 entries in 2 chains verified"


def test_empty_input_verifies():
    assert verify_lines([]).summary() == "0 entries in 0 chains verified"


def test_altered_field_is_named():
    lines = lines_of(chain_of(5))
    entry = json.loads(lines[2])
    entry["actor"]["id"] = "u-evil"
    lines[2] = encode_entry(entry).decode()

    problem = verify_lines(lines).problem

    assert problem is not None
    assert problem.kind == "altered"
    assert problem.seq == 2
    assert problem.location == "line 3"
    assert problem.entry_id == entry["id"]
    assert "hash does not match" in problem.detail


def test_altered_and_rehashed_entry_breaks_next_link():
    lines = lines_of(chain_of(5))
    lines[2] = rehashed(lines[2], action="contact.created")

    problem = verify_lines(lines).problem

    assert problem is not None
    assert problem.kind == "removed"
    assert problem.seq == 3
    assert "prevHash does not match the hash of seq 2 at line 3" in problem.detail


def test_removed_entry_is_named():
    lines = lines_of(chain_of(5))
    del lines[2]

    problem = verify_lines(lines).problem

    assert problem is not None
    assert problem.kind == "removed"
    assert problem.seq == 3
    assert problem.location == "line 3"
    assert "seq 2 is missing" in problem.detail


def test_removed_first_entry_is_named():
    lines = lines_of(chain_of(3))[1:]

    problem = verify_lines(lines).problem

    assert problem is not None
    assert problem.kind == "removed"
    assert problem.seq == 1
    assert "seq 0 is missing" in problem.detail


def test_removed_last_entry_needs_store_head():
    entries = chain_of(4)
    head = ChainHead(entries[-1]["chain"], 3, entries[-1]["hash"], 3)
    lines = lines_of(entries)[:-1]

    assert verify_lines(lines).ok
    problem = verify_lines(lines, [head]).problem
    assert problem is not None
    assert problem.kind == "removed"
    assert problem.chain == "contact-events/3"
    assert "last entry is seq 2, but the chain head in the store is at seq 3" in problem.detail


def test_missing_chain_against_store_head():
    problem = verify_lines([], [ChainHead("list-events/0", 0, "a" * 64, 7)]).problem

    assert problem is not None
    assert problem.kind == "removed"
    assert "no entries" in problem.detail


def test_head_hash_mismatch_is_altered():
    entries = chain_of(2)
    head = ChainHead(entries[-1]["chain"], 1, "b" * 64, 1)

    problem = verify_lines(lines_of(entries), [head]).problem

    assert problem is not None
    assert problem.kind == "altered"
    assert problem.location == "line 2"


def test_chain_longer_than_head_verifies():
    entries = chain_of(3)
    head = ChainHead(entries[1]["chain"], 1, entries[1]["hash"], 1)

    assert verify_lines(lines_of(entries), [head]).ok


def test_inserted_forged_entry_is_named():
    lines = lines_of(chain_of(5))
    forged = rehashed(lines[2], actor={"type": "admin", "id": "u-evil"})
    lines.insert(3, forged)

    problem = verify_lines(lines).problem

    assert problem is not None
    assert problem.kind == "inserted"
    assert problem.seq == 2
    assert problem.location == "line 4"
    assert "already at line 3" in problem.detail


def test_inserted_unhashed_line_is_named():
    lines = lines_of(chain_of(3))
    forged = json.loads(lines[1])
    forged["action"] = "contact.deleted"
    lines.insert(2, encode_entry(forged).decode())

    problem = verify_lines(lines).problem

    assert problem is not None
    assert problem.kind == "inserted"
    assert problem.location == "line 3"


def test_inserted_garbage_line_is_named():
    lines = lines_of(chain_of(3))
    lines.insert(1, '{"chain": "contact-events/3", "seq": "one"}')

    problem = verify_lines(lines).problem

    assert problem is not None
    assert problem.location == "line 2"
    assert "'seq'" in problem.detail


def test_reordered_entries_are_named():
    lines = lines_of(chain_of(5))
    lines[1], lines[2] = lines[2], lines[1]

    problem = verify_lines(lines).problem

    assert problem is not None
    assert problem.kind == "reordered"
    assert problem.seq == 2
    assert problem.location == "line 2"
    assert "comes before seq 1, which is at line 3" in problem.detail


def test_entry_moved_to_end_is_reordered():
    lines = lines_of(chain_of(5))
    moved = lines.pop(1)
    lines.append(moved)

    problem = verify_lines(lines).problem

    assert problem is not None
    assert problem.kind == "reordered"
    assert problem.seq == 2
    assert problem.location == "line 2"


def test_first_problem_across_chains_wins():
    first = lines_of(chain_of(3, partition=1))
    second = lines_of(chain_of(3, partition=2))
    del first[1]
    second[0] = second[0].replace('"u-7"', '"u-8"')
    mixed = [second[0], first[0], first[1], second[1], second[2]]

    problem = verify_lines(mixed).problem

    assert problem is not None
    assert problem.kind == "altered"
    assert problem.chain == "contact-events/2"
    assert problem.location == "line 1"


def test_exact_duplicate_is_republish():
    lines = lines_of(chain_of(4))
    lines.insert(2, lines[1])

    result = verify_lines(lines)

    assert result.ok
    assert result.republished == 1
    assert result.summary() == "4 entries in 1 chains verified; 1 republished duplicates skipped"


def test_republished_batch_is_tolerated():
    # A crash after publishing seq 2..4 and before saving the head: the batch is
    # chained again from seq 1 and published again, then the chain goes on.
    lines = lines_of(chain_of(7))
    copy = lines[:5] + lines[2:5] + lines[5:]

    result = verify_lines(copy)

    assert result.ok
    assert result.entries == 7
    assert result.republished == 3


def test_rechained_batch_is_identical():
    events = [contact_event(n) for n in range(6)]
    source = records(topic_names.EVENTS, events)
    done, head = extend_chain(ChainHead(source[0].chain), source[:2])
    published, _ = extend_chain(head, source[2:5])

    again, _ = extend_chain(head, source[2:6])

    assert lines_of(again[:3]) == lines_of(published)
    assert verify_lines(lines_of(done + published + again)).ok


def test_repeated_seq_is_inserted():
    lines = lines_of(chain_of(4))
    lines.insert(2, rehashed(lines[1], commandId="cmd-x"))

    problem = verify_lines(lines).problem

    assert problem is not None
    assert problem.kind == "inserted"
    assert problem.seq == 1


def test_duplicate_beyond_window_is_inserted():
    from contact_pipeline.audit.chain import ChainVerifier

    lines = lines_of(chain_of(6))
    verifier = ChainVerifier(window=2)
    for number, line in enumerate([*lines, lines[0]], start=1):
        verifier.add(f"line {number}", line)

    problem = verifier.result().problem

    assert problem is not None
    assert problem.kind == "inserted"
    assert problem.location == "line 7"


def test_not_json_line_is_named():
    lines = lines_of(chain_of(2))
    lines.insert(1, "not json at all")

    problem = verify_lines(lines).problem

    assert problem is not None
    assert problem.kind == "altered"
    assert problem.location == "line 2"


def test_failure_summary_names_entry():
    lines = lines_of(chain_of(3))
    del lines[1]

    summary = verify_lines(lines).summary()

    entry_id = json.loads(lines[1])["id"]
    assert summary.startswith("audit verify failed: removed entry: chain=contact-events/3 seq=2")
    assert f"id={entry_id}" in summary
    assert "at line 2" in summary
