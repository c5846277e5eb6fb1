"""CSV imports of the example exports through the CLI, the broker, the worker and the store."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from contact_pipeline.store.mongo import Store, count_contacts, summarise_results

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


async def run_cli(pipeline, *args: str) -> subprocess.CompletedProcess[str]:
    process = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "contact_pipeline.cli", *args],
        env=pipeline.env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
    return process


async def import_summary(pipeline, tenant: str, import_id: str) -> dict:
    store = await Store.connect(pipeline.servers.mongodb_uri, pipeline.database)
    try:
        summary = await summarise_results(store, tenant, import_id)
        summary["contacts"] = await count_contacts(store, tenant)
        return summary
    finally:
        await store.close()


async def test_import_both_examples_exact_counts(pipeline, tenant):
    hubspot = await run_cli(
        pipeline,
        "import",
        str(EXAMPLES / "hubspot-contacts-export.csv"),
        "--tenant",
        tenant,
        "--import-id",
        "hubspot-1",
    )
    mailchimp = await run_cli(
        pipeline,
        "import",
        str(EXAMPLES / "mailchimp-audience-export.csv"),
        "--tenant",
        tenant,
        "--import-id",
        "mailchimp-1",
    )
    hubspot_summary = await import_summary(pipeline, tenant, "hubspot-1")
    mailchimp_summary = await import_summary(pipeline, tenant, "mailchimp-1")

    assert "1500 rows, format hubspot, 1482 commands, 18 rows skipped" in hubspot.stdout
    assert "3086 rows, format mailchimp, 3056 commands, 30 rows skipped" in mailchimp.stdout
    assert hubspot_summary["codes"] == {"created": 841, "invalid_value": 641}
    assert mailchimp_summary["codes"] == {
        "created": 1695,
        "merged": 7,
        "unchanged": 53,
        "invalid_value": 1301,
    }
    assert mailchimp_summary["contacts"] == 841 + 1695
    rejected_rows = [result["meta"]["row"] for result in hubspot_summary["rejected"]]
    assert len(rejected_rows) == len(set(rejected_rows)) == 641
    assert "row 2 rejected (invalid_value): payload.phone '555-7498 ext. 12'" in hubspot.stdout


async def test_reimport_applies_nothing_twice(pipeline, tenant):
    path = str(EXAMPLES / "hubspot-contacts-export.csv")
    await run_cli(pipeline, "import", path, "--tenant", tenant, "--import-id", "again")
    store = await Store.connect(pipeline.servers.mongodb_uri, pipeline.database)
    versions_before = {
        doc["_id"]: doc["version"] async for doc in store.contacts.find({"tenantId": tenant})
    }
    second = await run_cli(pipeline, "import", path, "--tenant", tenant, "--import-id", "again")
    versions_after = {
        doc["_id"]: doc["version"] async for doc in store.contacts.find({"tenantId": tenant})
    }
    await store.close()

    assert "created 841, invalid_value 641" in second.stdout
    assert versions_after == versions_before


async def import_hubspot(pipeline, path: Path, tenant: str, *options: str):
    return await run_cli(
        pipeline, "import", str(path), "--tenant", tenant, "--format", "hubspot", *options
    )


async def test_import_never_resubscribes_opted_out(pipeline, tenant):
    from tests.factories import command

    csv_path = Path(pipeline.log_path.parent / f"{tenant}.csv")
    csv_path.write_text(
        "Email,First Name,Record ID\nopt.out@example.com,Olga,1\n", encoding="utf-8"
    )
    await import_hubspot(pipeline, csv_path, tenant, "--import-id", "first")
    store = await Store.connect(pipeline.servers.mongodb_uri, pipeline.database)
    doc = await store.contacts.find_one({"tenantId": tenant})
    await pipeline.send_one(
        command(
            "contact.update",
            {"contactId": doc["id"], "changes": {"status": "unsubscribed"}},
            tenant=tenant,
            actor_type="contact",
        )
    )
    csv_path.write_text(
        "Email,First Name,Record ID,Status\nOPT.OUT@example.com,Olga,1,active\n", encoding="utf-8"
    )
    second = await import_hubspot(
        pipeline, csv_path, tenant, "--map", "Status=status", "--import-id", "second"
    )
    after = await store.contacts.find_one({"tenantId": tenant})
    await store.close()

    assert after["status"] == "unsubscribed"
    # The status column is ignored for the opted-out contact, so nothing else changed.
    assert "unchanged 1" in second.stdout


async def test_import_rejects_non_utf8_file(pipeline, tenant):
    csv_path = Path(pipeline.log_path.parent / f"{tenant}-latin1.csv")
    csv_path.write_bytes("Email,First Name\nrene@example.com,Ren\xe9\n".encode("cp1252"))
    process = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "contact_pipeline.cli", "import", str(csv_path), "--tenant", tenant],
        env=pipeline.env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert process.returncode == 1
    assert "UTF-8" in process.stderr
    assert "line 2" in process.stderr


async def test_list_import_never_readds(pipeline, tenant, tmp_path):
    from contact_pipeline.domain.normalize import email_key
    from contact_pipeline.handlers.contacts import derive_contact_id
    from tests.factories import command

    export = tmp_path / "export.csv"
    export.write_text(
        "Email Address,First Name,Last Name\n"
        "ann@example.com,Ann,A\nbob@example.com,Bob,B\nnot-an-address,Cy,C\n",
        encoding="utf-8",
    )
    await pipeline.send(
        [
            command(
                "list.create", {"listId": "news", "name": "News", "type": "static"}, tenant=tenant
            )
        ]
    )
    first = await run_cli(
        pipeline,
        "import",
        str(export),
        "--tenant",
        tenant,
        "--format",
        "mailchimp",
        "--list",
        "news",
        "--import-id",
        "one",
    )
    assert "list news: 2 added, 0 already members" in first.stdout
    assert "1 skipped because the row was rejected" in first.stdout

    bob = derive_contact_id(tenant, email_key("bob@example.com"))
    result = await pipeline.send_one(
        command(
            "membership.unsubscribe",
            {"contactId": bob, "listId": "news"},
            tenant=tenant,
            actor_type="contact",
        )
    )
    assert result["code"] == "unsubscribed"

    again = await run_cli(
        pipeline,
        "import",
        str(export),
        "--tenant",
        tenant,
        "--format",
        "mailchimp",
        "--list",
        "news",
        "--import-id",
        "two",
    )
    assert "list news: 0 added, 1 already members, 1 kept off because they unsubscribed" in (
        again.stdout
    )
    doc = await pipeline.db.contacts.find_one({"_id": f"{tenant}:{bob}"})
    assert doc["lists"]["news"]["status"] == "unsubscribed"


async def test_import_to_a_missing_list_sends_nothing(pipeline, tenant, tmp_path):
    export = tmp_path / "export.csv"
    export.write_text("Email Address,First Name\nann@example.com,Ann\n", encoding="utf-8")
    process = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "contact_pipeline.cli",
            "import",
            str(export),
            "--tenant",
            tenant,
            "--format",
            "mailchimp",
            "--list",
            "nolist",
        ],
        env=pipeline.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert process.returncode == 1
    assert "--list nolist: no such list" in process.stderr
    assert await pipeline.db.contacts.count_documents({"tenantId": tenant}) == 0
