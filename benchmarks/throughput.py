"""End-to-end throughput of the contact-command worker, with two ceilings measured alongside.

1. Worker: commands per second from the first command produced until the last
   result is read back, for contact.create and contact.update commands.
2. Consume ceiling: the same records read from the same topic with a bare
   aiokafka consumer.
3. Store ceiling: the same contact documents written with plain bulk writes
   (inserts for creates, replaces for updates) into the same store.

The figures and their ratio go to docs/benchmarks.md. Run with ``make bench``;
``--count`` sets the number of commands (default 100,000).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer
from pymongo import AsyncMongoClient, InsertOne, ReplaceOne
from tests.factories import command

from contact_pipeline.kafka import topics as topic_names
from contact_pipeline.kafka.client import ResultCollector, produce_commands, topic_partitions
from contact_pipeline.store.mongo import FERRETDB_UPDATE_CHUNK

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DOC = ROOT / "docs" / "benchmarks.md"
BATCH = 500


def build_commands(count: int, tenant: str) -> list[dict[str, Any]]:
    """Return creates for 60% of ``count`` contacts, then updates of the first ones."""
    creates = int(count * 0.6)
    contact_ids = [uuid.uuid4().hex for _ in range(creates)]
    commands = [
        command(
            "contact.create",
            {
                "contactId": contact_id,
                "email": f"bench{i}@example.com",
                "firstName": f"First{i}",
                "lastName": "Bench",
                "company": "Benchmark Ltd",
                "phone": f"+1415555{i % 10000:04d}",
                "preferences": {"timezone": "Europe/Berlin", "frequency": "weekly"},
                "metadata": {"source": "import", "tags": ["bench", f"cohort{i % 10}"]},
                "customFields": {"score": i % 100, "plan": "pro"},
            },
            tenant=tenant,
        )
        for i, contact_id in enumerate(contact_ids)
    ]
    for i in range(count - creates):
        commands.append(
            command(
                "contact.update",
                {
                    "contactId": contact_ids[i % creates],
                    "changes": {"title": f"Title {i}", "customFields": {"score": i}},
                },
                tenant=tenant,
            )
        )
    return commands


async def wait_for_worker(
    collector: ResultCollector, bootstrap: str, topic: str, tenant: str
) -> None:
    probe = command(
        "contact.create",
        {"contactId": "probe", "email": "probe@example.com"},
        tenant=f"{tenant}-probe",
    )
    await produce_commands(bootstrap, topic, [probe])
    results = await collector.wait_for({probe["commandId"]}, timeout=180)
    if not results:
        raise RuntimeError("no result for a probe command within 180 s; check the worker log")


def peak_rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


async def measure_worker(
    args: argparse.Namespace, env: dict[str, str], prefix: str, commands: list[dict[str, Any]]
) -> dict[str, Any]:
    bootstrap = env["KAFKA_BOOTSTRAP_SERVERS"]
    command_topic = topic_names.topic_name(topic_names.COMMANDS, prefix)
    log_path = ROOT / ".local" / "run" / "bench-worker.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "contact_pipeline.cli",
                "worker",
                "--log-level",
                os.environ.get("BENCH_WORKER_LOG_LEVEL", "WARNING"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
    collector = ResultCollector(bootstrap, topic_names.topic_name(topic_names.RESULTS, prefix))
    await collector.start()
    try:
        await wait_for_worker(collector, bootstrap, command_topic, commands[0]["tenantId"])
        ids = {c["commandId"] for c in commands}
        started = time.perf_counter()
        producing = asyncio.create_task(produce_commands(bootstrap, command_topic, commands))
        results = await collector.wait_for(ids, timeout=args.timeout, idle_timeout=120)
        elapsed = time.perf_counter() - started
        await producing
        rss = peak_rss_mib(worker.pid)
    finally:
        await collector.stop()
        worker.terminate()
        worker.wait(timeout=60)
    outcomes: dict[str, int] = {}
    for result in results.values():
        outcomes[result["code"]] = outcomes.get(result["code"], 0) + 1
    return {
        "seconds": elapsed,
        "rate": len(results) / elapsed,
        "completed": len(results),
        "outcomes": outcomes,
        "peak_rss_mib": rss,
    }


async def measure_consume(bootstrap: str, topic: str, expected: int) -> dict[str, Any]:
    partitions = await topic_partitions(bootstrap, topic)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        count = 0
        started = time.perf_counter()
        while count < expected:
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            count += sum(len(records) for records in batch.values())
        elapsed = time.perf_counter() - started
    finally:
        await consumer.stop()
    return {"seconds": elapsed, "rate": count / elapsed, "records": count}


async def measure_store(
    mongodb_uri: str, database: str, commands: list[dict[str, Any]]
) -> dict[str, Any]:
    client: AsyncMongoClient = AsyncMongoClient(mongodb_uri, tz_aware=True)
    collection = client[database]["contacts_raw"]
    build_info = await client.admin.command("buildInfo")
    ferretdb = "ferretdbVersion" in build_info
    chunk = FERRETDB_UPDATE_CHUNK if ferretdb else BATCH
    now = datetime.now(UTC)
    versions: dict[str, int] = {}
    started = time.perf_counter()
    for start in range(0, len(commands), BATCH):
        inserts, replaces = [], []
        for message in commands[start : start + BATCH]:
            payload = message["payload"]
            doc_id = f"{message['tenantId']}:{payload['contactId']}"
            version = versions.get(doc_id, 0) + 1
            versions[doc_id] = version
            fields = payload.get("changes", payload)
            document = {
                "_id": doc_id,
                "tenantId": message["tenantId"],
                "version": version,
                "updatedAt": now,
                **fields,
            }
            if version == 1:
                inserts.append(InsertOne(document))
            else:
                replaces.append(ReplaceOne({"_id": doc_id}, document))
        if inserts:
            await collection.bulk_write(inserts, ordered=False)
        for part in range(0, len(replaces), chunk):
            await collection.bulk_write(replaces[part : part + chunk], ordered=False)
    elapsed = time.perf_counter() - started
    await client.close()
    server = f"MongoDB {build_info.get('version')}"
    if ferretdb:
        # The embedded build reports its version as "unknown"; go.mod pins it.
        go_mod = (ROOT / "scripts" / "services" / "ferretdb" / "go.mod").read_text()
        pinned = [line.split()[-1] for line in go_mod.splitlines() if "FerretDB/FerretDB v" in line]
        server = f"FerretDB {pinned[0] if pinned else build_info.get('ferretdbVersion')}"
    return {"seconds": elapsed, "rate": len(commands) / elapsed, "server": server}


def write_report(
    args: argparse.Namespace, worker: dict[str, Any], consume: dict[str, Any], store: dict[str, Any]
) -> str:
    ceiling = min(consume["rate"], store["rate"])
    machine = f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"
    creates = int(args.count * 0.6)
    batch_size = os.environ.get("CONTACT_PIPELINE_BATCH_MAX_MESSAGES", "500")
    consume_rate, consume_seconds = f"{consume['rate']:,.0f}", f"{consume['seconds']:.1f}"
    ratio = worker["rate"] / ceiling
    rss = f"{worker['peak_rss_mib']:.0f} MiB" if worker["peak_rss_mib"] else "n/a"
    outcomes = ", ".join(f"{code} {count}" for code, count in sorted(worker["outcomes"].items()))
    section = f"""
## Contact commands, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC

Command: `make bench` (`python -m benchmarks.throughput --count {args.count}`), one worker,
batches of up to {batch_size} messages, 12 partitions.
Machine: {machine}; Kafka and the store run on the same machine.
Store: {store["server"]} (SQLite backend for FerretDB).
Commands: {creates} contact.create, then {args.count - creates} contact.update.

| measurement | commands/s | seconds |
|---|---:|---:|
| worker, end to end (produce to last result) | {worker["rate"]:,.0f} | {worker["seconds"]:.1f} |
| ceiling: raw aiokafka consume of the same topic | {consume_rate} | {consume_seconds} |
| ceiling: raw bulk writes of the same documents | {store["rate"]:,.0f} | {store["seconds"]:.1f} |

Worker rate / lower ceiling: **{ratio:.2f}** (aim: at least 0.5). Worker peak RSS: {rss}.
Outcomes: {outcomes} ({worker["completed"]} of {args.count} results).
"""
    header = (
        "# Benchmarks\n\nEach run appends a section; numbers depend on the machine and the store.\n"
    )
    existing = RESULTS_DOC.read_text(encoding="utf-8") if RESULTS_DOC.exists() else header
    RESULTS_DOC.write_text(existing.rstrip("\n") + "\n" + section, encoding="utf-8")
    return section


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--count", type=int, default=100_000, help="Commands to send (default 100000)."
    )
    parser.add_argument(
        "--timeout", type=float, default=3600, help="Seconds to wait for the worker."
    )
    args = parser.parse_args()

    kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    mongo = os.environ.get("MONGODB_URI")
    if not (kafka and mongo):
        from contact_pipeline.dev import services

        endpoints = services.up()
        kafka, mongo = endpoints.kafka_bootstrap_servers, endpoints.mongodb_uri
    run_id = uuid.uuid4().hex[:8]
    prefix = f"bench-{run_id}-"
    database = f"cp_bench_{run_id}"
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        "MONGODB_URI": mongo,
        "CONTACT_PIPELINE_TOPIC_PREFIX": prefix,
        "CONTACT_PIPELINE_MONGODB_DATABASE": database,
        "CONTACT_PIPELINE_APP_ID": f"contact-pipeline-bench-{run_id}",
        "CONTACT_PIPELINE_WEB_ENABLED": "false",
    }
    specs = topic_names.load_topics(ROOT / "topics.yaml", prefix)
    await topic_names.apply_topics(kafka, specs, replication_factor=1)

    tenant = f"bench{run_id}"
    commands = build_commands(args.count, tenant)
    print(f"worker: {args.count} commands ...", flush=True)
    worker = await measure_worker(args, env, prefix, commands)
    print(f"worker: {worker['rate']:,.0f} commands/s", flush=True)
    consume = await measure_consume(
        kafka, topic_names.topic_name(topic_names.COMMANDS, prefix), args.count
    )
    print(f"consume ceiling: {consume['rate']:,.0f} records/s", flush=True)
    store = await measure_store(mongo, database, commands)
    print(f"store ceiling: {store['rate']:,.0f} documents/s", flush=True)
    print(write_report(args, worker, consume, store))


if __name__ == "__main__":
    asyncio.run(main())
