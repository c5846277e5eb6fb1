"""The audit trail through the real broker and store: entries, queries, verify and tampering."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from contact_pipeline.audit.chain import ChainHead, encode_entry, entry_hash
from contact_pipeline.audit.store import AuditStore
from contact_pipeline.kafka import topics as topic_names
from contact_pipeline.kafka.client import produce_raw
from contact_pipeline.store.mongo import Store
from tests.factories import command, create, new_id

pytestmark = pytest.mark.asyncio(loop_scope="session")

ROOT = Path(__file__).resolve().parents[2]
PHONE = "+4915112345678"
CONTACT_ACTIONS = {
    "contact.created",
    "contact.updated",
    "membership.added",
    "membership.unsubscribed",
    "contact.deleted",
}


async def applied(pipeline: Any, *commands: dict[str, Any]) -> None:
    for result in await pipeline.send(list(commands)):
        assert result["outcome"] == "applied", result


async def run_audit(pipeline: Any, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``contact-pipeline audit ARGS`` against the test session's topics and database."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "contact_pipeline.audit.cli", *args],
        env=pipeline.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def wait_for_actions(
    pipeline: Any, query: dict[str, Any], actions: set[str], timeout: float = 60.0
) -> list[dict[str, Any]]:
    """Wait until the projection has entries with every one of these actions."""
    deadline = time.monotonic() + timeout
    found: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        found = await pipeline.db.audit_entries.find(query).to_list(None)
        if actions <= {entry["action"] for entry in found}:
            return found
        await asyncio.sleep(0.3)
    seen = sorted(entry["action"] for entry in found)
    raise AssertionError(f"audit entries {seen} lack {actions}; worker log {pipeline.log_path}")


async def contact_story(pipeline: Any, tenant: str) -> tuple[str, str]:
    """Create, change, subscribe, unsubscribe and delete one contact; return its id and e-mail."""
    contact = new_id()
    email = f"anna.{contact[:8]}@example.com"
    await applied(
        pipeline,
        command("list.create", {"listId": "news", "name": "News", "type": "static"}, tenant=tenant),
        command(
            "contact.create",
            create(contact, email, phone=PHONE, firstName="Annegret"),
            tenant=tenant,
        ),
    )
    await applied(
        pipeline,
        command(
            "contact.update",
            {"contactId": contact, "changes": {"title": "CTO", "company": "Acme"}},
            tenant=tenant,
        ),
    )
    await applied(
        pipeline,
        command("membership.add", {"contactId": contact, "listId": "news"}, tenant=tenant),
    )
    await applied(
        pipeline,
        command(
            "membership.unsubscribe",
            {"contactId": contact, "listId": "news", "reason": f"write to {email}"},
            tenant=tenant,
            actor_type="contact",
        ),
    )
    await applied(pipeline, command("contact.delete", {"contactId": contact}, tenant=tenant))
    return contact, email


def json_lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


async def test_log_has_every_change_ids_only(pipeline, tenant):
    contact, email = await contact_story(pipeline, tenant)

    await wait_for_actions(
        pipeline, {"tenantId": tenant, "entity.contactId": contact}, CONTACT_ACTIONS
    )
    log_run = await run_audit(pipeline, "log", "--tenant", tenant, "--contact", contact)

    assert log_run.returncode == 0, log_run.stderr
    entries = json_lines(log_run.stdout)
    actions = [entry["action"] for entry in entries]
    assert set(actions) >= CONTACT_ACTIONS
    assert actions.index("contact.created") < actions.index("contact.updated")
    assert actions.index("membership.added") < actions.index("membership.unsubscribed")
    assert actions.index("membership.unsubscribed") < actions.index("contact.deleted")
    times = [entry["time"] for entry in entries]
    assert times == sorted(times)
    for entry in entries:
        assert entry["tenantId"] == tenant
        assert entry["entity"]["contactId"] == contact
        assert entry["hash"] == entry_hash(entry)
    updated = next(entry for entry in entries if entry["action"] == "contact.updated")
    assert sorted(updated["changes"]["fields"]) == ["company", "title"]
    assert updated["actor"] == {"type": "user", "id": "tester"}
    unsubscribed = next(e for e in entries if e["action"] == "membership.unsubscribed")
    assert unsubscribed["changes"]["status"] == "unsubscribed"
    assert unsubscribed["actor"]["type"] == "contact"

    # The source events carry the address and phone, so the checks below can fail.
    events = await pipeline.events_for(tenant, contact)
    assert email in json.dumps(events)
    assert PHONE in json.dumps(events)
    assert email not in log_run.stdout
    assert PHONE not in log_run.stdout
    assert "Annegret" not in log_run.stdout
    raw_log = await pipeline.read_topic(topic_names.AUDIT_LOG)
    published = b"\n".join(record.value for record in raw_log)
    assert tenant.encode() in published
    assert email.encode() not in published
    assert PHONE.encode() not in published
    stored = await pipeline.db.audit_entries.find({"tenantId": tenant}).to_list(None)
    assert email not in json.dumps(stored, default=str)
    assert PHONE not in json.dumps(stored, default=str)


async def test_log_by_list_and_time(pipeline, tenant):
    contact, _ = await contact_story(pipeline, tenant)
    everything = await wait_for_actions(
        pipeline, {"tenantId": tenant, "entity.contactId": contact}, CONTACT_ACTIONS
    )

    by_list = await run_audit(pipeline, "log", "--tenant", tenant, "--list", "news")

    assert by_list.returncode == 0, by_list.stderr
    list_actions = [entry["action"] for entry in json_lines(by_list.stdout)]
    assert list_actions[0] == "list.created"
    assert "membership.added" in list_actions
    assert "contact.updated" not in list_actions

    times = {entry["action"]: entry["time"] for entry in everything}
    ranged = await run_audit(
        pipeline,
        "log",
        "--tenant",
        tenant,
        "--since",
        times["contact.updated"],
        "--until",
        times["contact.deleted"],
    )

    assert ranged.returncode == 0, ranged.stderr
    in_range = [entry["action"] for entry in json_lines(ranged.stdout)]
    assert "contact.updated" in in_range
    assert "membership.unsubscribed" in in_range
    assert "contact.created" not in in_range
    assert "contact.deleted" not in in_range

    other_tenant = await run_audit(pipeline, "log", "--tenant", f"{tenant}-other")
    assert other_tenant.returncode == 0
    assert other_tenant.stdout == ""


async def test_chain_head_never_moves_back(pipeline, tenant):
    # A database of its own, because `audit verify` checks every head of the session's one.
    store = await Store.connect(pipeline.servers.mongodb_uri, f"{pipeline.database}_heads")
    audit = AuditStore(store)
    chain = f"{tenant}-chain/0"
    try:
        assert await audit.save_head(ChainHead(chain, 4, "a" * 64, 40))
        assert await audit.save_head(ChainHead(chain, 6, "b" * 64, 60))

        moved_back = await audit.save_head(ChainHead(chain, 5, "c" * 64, 50))

        assert moved_back is False
        heads = await audit.load_heads([chain, f"{tenant}-other/0"])
        assert heads == {chain: ChainHead(chain, 6, "b" * 64, 60)}
    finally:
        await store.close()


async def test_projection_insert_is_idempotent(pipeline, tenant):
    store = await Store.connect(pipeline.servers.mongodb_uri, pipeline.database)
    audit = AuditStore(store)
    entries = [
        {"chain": f"{tenant}/0", "seq": seq, "id": f"e-{seq}", "tenantId": tenant, "time": "t"}
        for seq in range(3)
    ]
    try:
        assert await audit.insert_entries(entries[:2]) == 2

        assert await audit.insert_entries(entries) == 1
        stored = await pipeline.db.audit_entries.find({"tenantId": tenant}).to_list(None)
        assert sorted(doc["_id"] for doc in stored) == [f"{tenant}/0:{seq}" for seq in range(3)]
    finally:
        await store.close()


async def test_log_rejects_bad_time(pipeline, tenant):
    log_run = await run_audit(pipeline, "log", "--tenant", tenant, "--since", "last tuesday")

    assert log_run.returncode == 1
    assert "--since 'last tuesday' is not an RFC 3339 time" in log_run.stderr


async def test_decisions_and_consent_audited(pipeline, tenant):
    contact = new_id()
    reply = {
        "requestId": f"req-{contact}",
        "tenantId": tenant,
        "contactId": contact,
        "listId": "news",
        "channel": "sms",
        "decision": "deny",
        "reasons": ["no_consent"],
        "decidedAt": "2026-12-01T10:00:00Z",
        "phone": PHONE,
    }
    consent = {
        "specversion": "1.0",
        "id": f"consent-{contact}",
        "type": "consent.withdrawn",
        "time": "2026-12-01T09:59:00Z",
        "tenantId": tenant,
        "contactId": contact,
        "channel": "sms",
        "commandId": f"cmd-{contact}",
        "actor": {"type": "contact", "id": contact},
        "data": {"phone": PHONE},
    }
    key = f"{tenant}:{contact}".encode()
    servers = pipeline.servers.kafka
    replies = pipeline.topic(topic_names.CONTACTABILITY_REPLIES)
    await produce_raw(servers, replies, [(reply["requestId"].encode(), json.dumps(reply).encode())])
    consents = pipeline.topic(topic_names.CONSENT_EVENTS)
    await produce_raw(servers, consents, [(key, json.dumps(consent).encode())])

    entries = await wait_for_actions(
        pipeline,
        {"tenantId": tenant, "entity.contactId": contact},
        {"contactability.decided", "consent.withdrawn"},
    )

    decided = next(entry for entry in entries if entry["action"] == "contactability.decided")
    assert decided["entity"]["id"] == reply["requestId"]
    assert decided["changes"] == {"decision": "deny", "reasons": ["no_consent"], "channel": "sms"}
    assert decided["chain"].startswith("contactability-replies/")
    withdrawn = next(entry for entry in entries if entry["action"] == "consent.withdrawn")
    assert withdrawn["changes"]["channel"] == "sms"
    assert PHONE not in json.dumps(entries, default=str)


async def test_verify_names_each_tampering(pipeline, tenant, tmp_path):
    contact, _ = await contact_story(pipeline, tenant)
    await wait_for_actions(
        pipeline, {"tenantId": tenant, "entity.contactId": contact}, CONTACT_ACTIONS
    )

    on_topic = await run_audit(pipeline, "verify")
    assert on_topic.returncode == 0, on_topic.stderr
    assert " chains verified" in on_topic.stdout

    copy = tmp_path / "audit.jsonl"
    exported = await run_audit(pipeline, "export", "--out", str(copy))
    assert exported.returncode == 0, exported.stderr
    lines = copy.read_text(encoding="utf-8").splitlines()
    assert exported.stdout.startswith(f"{len(lines)} entries written")
    on_copy = await run_audit(pipeline, "verify", "--file", str(copy))
    assert on_copy.returncode == 0, on_copy.stderr

    ours = [
        (index, json.loads(line))
        for index, line in enumerate(lines)
        if json.loads(line)["tenantId"] == tenant
        and json.loads(line)["chain"].startswith("contact-events/")
    ]
    assert [entry["action"] for _, entry in ours] == [
        "contact.created",
        "contact.updated",
        "contact.deleted",
    ]
    (created_at, created), (updated_at, updated), _ = ours
    chain = updated["chain"]

    async def verify_tampered(tampered: list[str]) -> str:
        path = tmp_path / "tampered.jsonl"
        path.write_text("\n".join(tampered) + "\n", encoding="utf-8")
        result = await run_audit(pipeline, "verify", "--file", str(path))
        assert result.returncode == 1, result.stdout
        return result.stderr

    altered_entry = dict(updated, actor={"type": "user", "id": "someone-else"})
    altered = list(lines)
    altered[updated_at] = encode_entry(altered_entry).decode()
    message = await verify_tampered(altered)
    assert f"altered entry: chain={chain} seq={updated['seq']} id={updated['id']}" in message
    assert f"at line {updated_at + 1}:" in message

    removed = lines[:updated_at] + lines[updated_at + 1 :]
    message = await verify_tampered(removed)
    assert f"removed entry: chain={chain} seq={updated['seq'] + 1}" in message
    assert f"seq {updated['seq']} is missing" in message

    forged_entry = dict(updated, actor={"type": "admin", "id": "intruder"})
    forged_entry["hash"] = entry_hash(forged_entry)
    inserted = list(lines)
    inserted.insert(updated_at + 1, encode_entry(forged_entry).decode())
    message = await verify_tampered(inserted)
    assert f"inserted entry: chain={chain} seq={updated['seq']} id={updated['id']}" in message
    assert f"at line {updated_at + 2}:" in message

    swapped = list(lines)
    swapped[created_at], swapped[updated_at] = swapped[updated_at], swapped[created_at]
    message = await verify_tampered(swapped)
    assert f"reordered entry: chain={chain} seq={updated['seq']} id={updated['id']}" in message
    assert f"at line {created_at + 1}:" in message

    republished = list(lines)
    republished.insert(updated_at + 1, lines[updated_at])
    again = await run_audit(pipeline, "verify", "--file", str(_write(tmp_path, republished)))
    assert again.returncode == 0, again.stderr
    assert "1 republished duplicates skipped" in again.stdout


def _write(folder: Path, lines: list[str]) -> Path:
    path = folder / "republished.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
