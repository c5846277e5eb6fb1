"""Backfill of a new dynamic list over a seeded store: contacts per second and worker memory.

1. Seed: ``--contacts`` contacts of one tenant go straight into the store with
   unordered bulk inserts. Each document is built by ``decide()`` from a
   contact.create command, as the worker would store it. About
   ``--match-fraction`` of them have company "Acme", which the list matches.
2. Backfill: one worker starts with its own topics, database and app id. A
   dynamic list with ``company equals "Acme"`` is created on the list-commands
   topic. The run ends when the list's ``list.backfill.completed`` event and
   one ``membership.added`` event per matching contact are on their topics.
   The worker's VmRSS is sampled every 0.5 s during the whole run.

The figures go to the "Dynamic-list backfill" section of docs/benchmarks.md.
A rerun with the same contacts and fraction replaces its row. Rows of other
sizes stay, so runs of two sizes show whether memory grows with the contacts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer
from tests.factories import command
from tqdm import tqdm

from benchmarks.throughput import RESULTS_DOC, ROOT, peak_rss_mib, wait_for_worker
from contact_pipeline.domain.commands import Envelope
from contact_pipeline.handlers.contacts import ContactCommand, Write, decide
from contact_pipeline.handlers.validation import normalise_fields
from contact_pipeline.kafka import topics as topic_names
from contact_pipeline.kafka.client import (
    ResultCollector,
    command_topic,
    produce_commands,
    topic_partitions,
)
from contact_pipeline.schemas import load_schemas
from contact_pipeline.settings import Settings
from contact_pipeline.store.mongo import Store

SEED_BATCH = 1_000
"""Documents per unordered bulk insert while seeding."""

SAMPLE_SECONDS = 0.5
MEMBERSHIP_WAIT_SECONDS = 30.0
"""How long after the completed event the run waits for missing membership events."""
LIST_ID = "acme-backfill"
CRITERIA = {
    "logic": "and",
    "conditions": [{"field": "company", "operator": "equals", "value": "Acme"}],
}
# Near misses of the criteria, so the scan compares real strings and not only absent fields.
OTHER_COMPANIES = ("Acme Corp", "ACME", "Globex", "Initech", "Umbrella", "Hooli", None)
TIMEZONES = ("Europe/Berlin", "America/New_York", "Asia/Tokyo", "UTC", "Australia/Sydney")
FREQUENCIES = ("daily", "weekly", "monthly", "quarterly")
SOURCES = ("manual", "import", "form", "integration")
PLANS = ("free", "pro", "enterprise")

SECTION_HEADING = "## Dynamic-list backfill"
RESULTS_START = "<!-- backfill-results:start -->"
RESULTS_END = "<!-- backfill-results:end -->"
TABLE_HEADER = (
    "| run (UTC) | contacts | match fraction | matching | seeding docs/s | backfill s "
    "| to last membership event s | scanned/s | evaluate applied/s | RSS before MiB "
    "| RSS peak MiB |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)
AIM_CONTACTS = 1_000_000
AIM_SECONDS = 60.0


@dataclass
class RunFigures:
    """Everything one run measured, as the report prints it."""

    contacts: int
    match_fraction: float
    matching: int
    seed_seconds: float
    backfill_seconds: float
    last_membership_seconds: float
    scan_done_seconds: float | None
    membership_added: int
    backfill: dict[str, Any]
    rss_before_mib: float
    rss_peak_mib: float
    rss_end_mib: float
    hwm_mib: float | None
    commit: str
    rss_series: list[tuple[float, float]] = field(default_factory=list)

    @property
    def end_seconds(self) -> float:
        """Seconds from list.create to the later of the completed and last membership events."""
        return max(self.backfill_seconds, self.last_membership_seconds)

    @property
    def evaluated(self) -> int:
        return int(self.backfill.get("applied", 0))


def seed_message(tenant: str, index: int, rng: random.Random, match: bool) -> dict[str, Any]:
    """Build the contact.create command of the ``index``-th seeded contact."""
    payload: dict[str, Any] = {
        "contactId": f"c{index:07d}",
        "email": f"Contact.{index}@Example.com",
        "firstName": f"First{index}",
        "lastName": rng.choice(("Meyer", "Smith", "Tanaka", "Rossi", "Novak")),
        "title": rng.choice(("CTO", "Engineer", "Buyer", "Head of Marketing")),
        "preferences": {
            "timezone": rng.choice(TIMEZONES),
            "frequency": rng.choice(FREQUENCIES),
        },
        "metadata": {"source": rng.choice(SOURCES), "tags": [f"cohort{index % 20}"]},
        "customFields": {"score": rng.randrange(100), "plan": rng.choice(PLANS)},
    }
    company = "Acme" if match else rng.choice(OTHER_COMPANIES)
    if company is not None:
        payload["company"] = company
    if index % 3 == 0:
        payload["phone"] = f"+1415555{index % 10_000:04d}"
    if index % 50 == 0:
        payload["status"] = rng.choice(("inactive", "unsubscribed"))
    return command("contact.create", payload, tenant=tenant)


def seed_document(
    message: dict[str, Any], created_at: datetime, origin: list[Any]
) -> dict[str, Any]:
    """Return the contact document the worker stores for a contact.create command.

    This is the worker's path without the JSON Schema check, which would double
    the seeding time: the same normalisation and the same ``decide()``.
    """
    envelope = Envelope.model_validate(message)
    fields = {key: value for key, value in message["payload"].items() if key != "contactId"}
    normalised, email_key, errors = normalise_fields(fields, "payload.")
    if errors:
        raise ValueError(f"seed command {message['commandId']} is invalid: {errors[0]}")
    contact = ContactCommand(
        envelope=envelope,
        contact_id=message["payload"]["contactId"],
        fields=normalised,
        email_key=email_key,
    )
    write = decide(None, contact, created_at)
    assert isinstance(write, Write)
    # The batch applier records the message each command came from; see handlers/batch.py.
    write.document["_commands"][-1]["origin"] = origin
    return write.document


async def seed_contacts(
    store: Store, tenant: str, count: int, fraction: float, seed: int, topic: str
) -> tuple[int, float]:
    """Insert ``count`` contacts and return how many match the list and the seconds it took.

    Building the next batch overlaps the insert of the previous one, because
    both cost about as much per document.
    """
    rng = random.Random(seed)
    schemas = load_schemas(Settings().schemas_dir)
    # Contacts were created over the past days, well before the list, as in a real store.
    newest = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    matching = 0
    inserting: asyncio.Task[set[str]] | None = None
    started = time.perf_counter()
    with tqdm(total=count, unit="doc", desc="seeding", smoothing=0.1) as progress:
        for start in range(0, count, SEED_BATCH):
            documents = []
            for index in range(start, min(start + SEED_BATCH, count)):
                match = rng.random() < fraction
                matching += match
                message = seed_message(tenant, index, rng, match)
                if index < SEED_BATCH:
                    # The first batch proves the generated commands meet the producer contract.
                    problems = schemas.validate(message)
                    if problems:
                        raise ValueError(f"seed command is invalid: {problems[0]}")
                origin = [topic, index % 12, index // 12]
                created_at = newest - timedelta(seconds=count - index)
                documents.append(seed_document(message, created_at, origin))
            if inserting is not None:
                await _finish_insert(inserting)
            inserting = asyncio.create_task(store.insert_contacts(documents))
            # The bar counts documents once stored, not once built.
            inserting.add_done_callback(_progress_callback(progress, len(documents)))
        if inserting is not None:
            await _finish_insert(inserting)
    return matching, time.perf_counter() - started


def _progress_callback(progress: tqdm, size: int) -> Any:
    return lambda _: progress.update(size)


async def _finish_insert(inserting: asyncio.Task[set[str]]) -> None:
    existing = await inserting
    if existing:
        raise RuntimeError(
            f"{len(existing)} seeded contacts already existed, such as {min(existing)}"
        )


def rss_mib(pid: int) -> float | None:
    """Return the current resident set size of a process in MiB, or None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class RssSampler:
    """Samples a process's VmRSS every 0.5 s in the background."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, float]] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    def since(self, moment: float) -> list[float]:
        """Return the samples taken at or after a ``time.time()`` moment."""
        return [value for at, value in self.samples if at >= moment]

    async def _run(self) -> None:
        while True:
            value = rss_mib(self.pid)
            if value is None:
                return
            self.samples.append((time.time(), value))
            await asyncio.sleep(SAMPLE_SECONDS)


@dataclass
class EventWatch:
    """The backfill's events as they arrive, with their Kafka timestamps in seconds."""

    added_ids: set[str] = field(default_factory=set)
    last_added_at: float = 0.0
    completed: dict[str, dict[str, Any]] = field(default_factory=dict)
    completed_at: dict[str, float] = field(default_factory=dict)


async def watch_events(
    bootstrap: str, prefix: str, tenant: str, watch: EventWatch, stop: asyncio.Event
) -> None:
    """Read the list-events and membership-events topics from the start until ``stop`` is set.

    The topics are new for this run, so reading from the start misses no event.
    """
    partitions = [
        *await topic_partitions(bootstrap, topic_names.topic_name(topic_names.LIST_EVENTS, prefix)),
        *await topic_partitions(
            bootstrap, topic_names.topic_name(topic_names.MEMBERSHIP_EVENTS, prefix)
        ),
    ]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=500, max_records=5000)
            for records in batches.values():
                for record in records:
                    _note_event(json.loads(record.value), record.timestamp / 1000, tenant, watch)
    finally:
        await consumer.stop()


def _note_event(event: dict[str, Any], at: float, tenant: str, watch: EventWatch) -> None:
    if event.get("tenantId") != tenant or event.get("listId") != LIST_ID:
        return
    if event.get("type") == "membership.added":
        # A redelivered batch republishes events with the same id; count each once.
        watch.added_ids.add(event["id"])
        watch.last_added_at = max(watch.last_added_at, at)
    elif event.get("type") == "list.backfill.completed":
        watch.completed[event["backfillId"]] = event
        watch.completed_at[event["backfillId"]] = at


def start_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``contact-pipeline worker`` with the run's environment, logging to a file."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        return subprocess.Popen(
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


def stop_worker(worker: subprocess.Popen[bytes], grace_seconds: float = 60.0) -> None:
    """Stop the worker with SIGTERM, and kill it if it has not exited after the grace period."""
    worker.terminate()
    try:
        worker.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        print(
            f"worker {worker.pid} did not exit within {grace_seconds:.0f} s of SIGTERM; killing it",
            flush=True,
        )
        worker.kill()
        worker.wait(timeout=grace_seconds)


def start_profiler(pid: int, output: Path) -> subprocess.Popen[bytes]:
    """Attach py-spy to the worker, which it records until the worker exits or py-spy stops."""
    return subprocess.Popen(
        [
            str(Path(sys.executable).with_name("py-spy")),
            "record",
            "--pid",
            str(pid),
            "--nonblocking",
            "--rate",
            "50",
            "--format",
            "raw",
            "-o",
            str(output),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )


async def wait_until(
    condition: Any, timeout: float, worker: subprocess.Popen[bytes], what: str
) -> None:
    """Poll ``condition()`` every 0.2 s, and raise if it stays false or the worker exits."""
    deadline = time.monotonic() + timeout
    while not condition():
        if worker.poll() is not None:
            raise RuntimeError(f"the worker exited with code {worker.returncode} while {what}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s while {what}")
        await asyncio.sleep(0.2)


async def watch_scan(store: Store, backfill_id: str, scan_done: list[float]) -> None:
    """Record the moment the backfill document first reports the scan as done."""
    while not scan_done:
        doc = await store.load_backfill(backfill_id)
        if doc is not None and doc.get("scanDone"):
            scan_done.append(time.time())
            return
        await asyncio.sleep(SAMPLE_SECONDS)


async def run_backfill(
    args: argparse.Namespace,
    env: dict[str, str],
    prefix: str,
    store: Store,
    tenant: str,
    matching: int,
) -> dict[str, Any]:
    """Start the worker, create the dynamic list and measure its backfill to the end."""
    bootstrap = env["KAFKA_BOOTSTRAP_SERVERS"]
    collector = ResultCollector(bootstrap, topic_names.topic_name(topic_names.RESULTS, prefix))
    await collector.start()
    commit = source_commit()
    worker = start_worker(env, ROOT / ".local" / "run" / "bench-backfill-worker.log")
    sampler = RssSampler(worker.pid)
    stop_events = asyncio.Event()
    watch = EventWatch()
    watcher: asyncio.Task[None] | None = None
    profiler: subprocess.Popen[bytes] | None = None
    try:
        await wait_for_worker(
            collector, bootstrap, topic_names.topic_name(topic_names.COMMANDS, prefix), tenant
        )
        sampler.start()
        # Let the worker settle after its first batch, so "before" is its idle size.
        await asyncio.sleep(3)
        rss_before = rss_mib(worker.pid) or 0.0
        watcher = asyncio.create_task(watch_events(bootstrap, prefix, tenant, watch, stop_events))
        if args.profile:
            profiler = start_profiler(worker.pid, Path(args.profile))

        create_list = command(
            "list.create",
            {"listId": LIST_ID, "name": "Acme contacts", "type": "dynamic", "criteria": CRITERIA},
            tenant=tenant,
        )
        started = time.time()
        await produce_commands(bootstrap, lambda c: command_topic(c, prefix), [create_list])
        results = await collector.wait_for({create_list["commandId"]}, timeout=120)
        result = results.get(create_list["commandId"])
        if result is None or result["outcome"] != "applied":
            raise RuntimeError(f"list.create was not applied: {result}")
        backfill_id = result["backfillId"]
        print(f"list created, backfill {backfill_id}", flush=True)

        scan_done: list[float] = []
        scan_watch = asyncio.create_task(watch_scan(store, backfill_id, scan_done))
        await wait_until(
            lambda: backfill_id in watch.completed,
            args.timeout,
            worker,
            f"waiting for backfill {backfill_id} (see .local/run/bench-backfill-worker.log)",
        )
        # The last batch's membership events may follow the completed event, because the
        # runner finishes once the outcomes are stored and the worker publishes after that.
        deadline = time.monotonic() + MEMBERSHIP_WAIT_SECONDS
        while len(watch.added_ids) < matching and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        scan_watch.cancel()
        rss_end = rss_mib(worker.pid) or 0.0
        run_samples = sampler.since(started)
        hwm = peak_rss_mib(worker.pid)

        backfill = await store.load_backfill(backfill_id) or {}
    finally:
        stop_events.set()
        if watcher is not None:
            await asyncio.gather(watcher, return_exceptions=True)
        await sampler.stop()
        await collector.stop()
        if profiler is not None:
            profiler.send_signal(2)  # SIGINT makes py-spy write its output and exit
            profiler.wait(timeout=60)
        stop_worker(worker)

    return {
        "started": started,
        "backfill_seconds": watch.completed_at[backfill_id] - started,
        "last_membership_seconds": watch.last_added_at - started,
        "scan_done_seconds": scan_done[0] - started if scan_done else None,
        "membership_added": len(watch.added_ids),
        "backfill": backfill,
        "rss_before_mib": rss_before,
        "rss_peak_mib": max(run_samples, default=rss_end),
        "rss_end_mib": rss_end,
        "hwm_mib": hwm,
        "commit": commit,
        "rss_series": [(at - started, value) for at, value in sampler.samples if at >= started],
    }


def source_commit() -> str:
    """Name the commit the worker ran, and whether the working tree differed from it."""
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        return "unknown commit"
    status = subprocess.run(
        [*git, "status", "--porcelain", "--untracked-files=no", "--", "src"],
        capture_output=True,
        text=True,
    )
    changed = " with uncommitted changes in src/" if status.stdout.strip() else ""
    return f"commit {head.stdout.strip()}{changed}"


def machine() -> str:
    """Describe the machine the way the other benchmark sections do."""
    return f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"


def table_row(figures: RunFigures) -> str:
    """Return the results table row of one run."""
    seed_rate = figures.contacts / figures.seed_seconds
    scanned_rate = figures.backfill.get("scanned", 0) / figures.end_seconds
    evaluate_rate = figures.evaluated / figures.end_seconds
    cells = [
        f"{datetime.now(UTC):%Y-%m-%d %H:%M}",
        f"{figures.contacts:,}",
        f"{figures.match_fraction:g}",
        f"{figures.matching:,}",
        f"{seed_rate:,.0f}",
        f"{figures.backfill_seconds:.1f}",
        f"{figures.last_membership_seconds:.1f}",
        f"{scanned_rate:,.0f}",
        f"{evaluate_rate:,.0f}",
        f"{figures.rss_before_mib:.0f}",
        f"{figures.rss_peak_mib:.0f}",
    ]
    return "| " + " | ".join(cells) + " |"


def _row_key(row: str) -> tuple[int, str]:
    """Return (contacts, match fraction) of a results table row."""
    cells = [cell.strip() for cell in row.strip().strip("|").split("|")]
    return int(cells[1].replace(",", "")), cells[2]


def merge_rows(existing_block: str, new_row: str) -> list[str]:
    """Keep the table rows of other sizes, replace the row of this size, largest run first."""
    rows = [
        line
        for line in existing_block.splitlines()
        if line.startswith("| ") and not line.startswith("| run ") and not line.startswith("|---")
    ]
    new_key = _row_key(new_row)
    kept = [row for row in rows if _row_key(row) != new_key]
    return sorted([*kept, new_row], key=lambda row: _row_key(row)[0], reverse=True)


def results_block(figures: RunFigures, rows: list[str], server: str) -> str:
    """Return the generated part of the section: the runs table and the latest run's details."""
    backfill = figures.backfill
    projected = figures.end_seconds * AIM_CONTACTS / figures.contacts
    verdict = "meets" if projected <= AIM_SECONDS else "misses"
    scan = (
        f"{figures.scan_done_seconds:.1f} s"
        if figures.scan_done_seconds is not None
        else "not observed"
    )
    growth = figures.rss_peak_mib - figures.rss_before_mib
    return f"""{RESULTS_START}
Command: `python -m benchmarks.backfill --contacts N --match-fraction F`.
One worker with default settings: 12 partitions, a 5 s grace before the scan
and at most 20,000 evaluate commands in flight.
Machine: {machine()}; Kafka and the store run on the same machine.
Store: {server}.
Times run from producing the list.create to the Kafka timestamp of an event:
"backfill s" ends at `list.backfill.completed`, the next column at the last
`membership.added`, and the rates divide by the later of the two.
RSS is the worker's VmRSS, sampled every 0.5 s; "before" is its value just
before the list was created.

{TABLE_HEADER}
{chr(10).join(rows)}

Latest run: {figures.contacts:,} contacts, {figures.matching:,} matching.
The runner reported scanned {backfill.get("scanned")}, queued {backfill.get("queued")},
members {backfill.get("membersBefore")} before and {backfill.get("membersAfter")} after,
in {backfill.get("seconds")} s from its claim.
The topic had {figures.membership_added:,} distinct `membership.added` events for the list.
The backfill document showed the scan as done {scan} after the list.create.
Worker RSS went from {figures.rss_before_mib:.0f} MiB to a peak of {figures.rss_peak_mib:.0f} MiB
(+{growth:.0f} MiB) and ended at {figures.rss_end_mib:.0f} MiB
(VmHWM {figures.hwm_mib or 0:.0f} MiB).
Source: {figures.commit}.

Aim: {AIM_CONTACTS:,} contacts in under {AIM_SECONDS:.0f} s, with flat memory.
Scaled linearly, this run's {figures.end_seconds:.1f} s for {figures.contacts:,} contacts
comes to about {projected:,.0f} s for {AIM_CONTACTS:,}, so the backfill **{verdict}**
the time aim. This is an estimate: the scan grows with every contact in the collection,
because FerretDB reads each document, and the rest with the matching contacts.
{RESULTS_END}"""


def write_section(figures: RunFigures, server: str, path: Path = RESULTS_DOC) -> str:
    """Write the run into the "Dynamic-list backfill" section and return the generated block.

    Only the text between the section's markers is regenerated, so notes written
    below the block survive a rerun, and a rerun never appends a second section.
    """
    existing = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(RESULTS_START) + r".*?" + re.escape(RESULTS_END), re.DOTALL)
    heading_at = existing.find(SECTION_HEADING)
    section = existing[heading_at:] if heading_at >= 0 else ""
    found = pattern.search(section)
    rows = merge_rows(found.group(0) if found else "", table_row(figures))
    block = results_block(figures, rows, server)

    if heading_at < 0:
        text = existing.rstrip("\n") + f"\n\n{SECTION_HEADING}\n\n{block}\n"
    elif found is None:
        # The heading exists without a generated block: put the block right under it.
        insert_at = heading_at + len(SECTION_HEADING)
        text = existing[:insert_at] + f"\n\n{block}\n" + existing[insert_at:]
    else:
        start = heading_at + found.start()
        text = existing[:start] + block + existing[heading_at + found.end() :]
    path.write_text(text, encoding="utf-8")
    return block


async def store_server(store: Store) -> str:
    """Name the store's server and version, as the throughput benchmark reports it."""
    build_info = await store.client.admin.command("buildInfo")
    if "ferretdbVersion" not in build_info:
        return f"MongoDB {build_info.get('version')}"
    # The embedded build reports its version as "unknown", so read the version go.mod pins.
    go_mod = ROOT / "scripts" / "services" / "ferretdb" / "go.mod"
    pinned = (
        [
            line.split()[-1]
            for line in go_mod.read_text().splitlines()
            if "FerretDB/FerretDB v" in line
        ]
        if go_mod.exists()
        else []
    )
    version = pinned[0] if pinned else build_info.get("ferretdbVersion")
    return f"FerretDB {version} (SQLite backend)"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--contacts", type=int, default=100_000, help="Contacts to seed (default 100000)."
    )
    parser.add_argument(
        "--match-fraction",
        type=float,
        default=0.1,
        help="Share of the contacts that match the list, from 0 to 1 (default 0.1).",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=3600,
        help="Seconds to wait for the backfill (default 3600).",
    )
    parser.add_argument("--seed", type=int, default=7, help="Random seed of the contact data.")
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="Record the worker with py-spy during the backfill into FILE (collapsed stacks).",
    )
    args = parser.parse_args()
    if args.contacts < 1:
        parser.error("--contacts must be at least 1")
    if not 0 <= args.match_fraction <= 1:
        parser.error("--match-fraction must be between 0 and 1")
    return args


async def main() -> None:
    args = parse_args()
    kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    mongo = os.environ.get("MONGODB_URI")
    if not (kafka and mongo):
        from contact_pipeline.dev import services

        endpoints = services.up()
        kafka, mongo = endpoints.kafka_bootstrap_servers, endpoints.mongodb_uri
    run_id = uuid.uuid4().hex[:8]
    prefix = f"bench-backfill-{run_id}-"
    database = f"cp_bench_backfill_{run_id}"
    tenant = f"bench{run_id}"
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        "MONGODB_URI": mongo,
        "CONTACT_PIPELINE_TOPIC_PREFIX": prefix,
        "CONTACT_PIPELINE_MONGODB_DATABASE": database,
        "CONTACT_PIPELINE_APP_ID": f"contact-pipeline-bench-backfill-{run_id}",
        "CONTACT_PIPELINE_WEB_ENABLED": "false",
    }
    specs = topic_names.load_topics(ROOT / "topics.yaml", prefix)
    await topic_names.apply_topics(kafka, specs, replication_factor=1)
    print(f"run {run_id}: topics {prefix}*, database {database}", flush=True)

    store = await Store.connect(mongo, database)
    try:
        # The worker creates these on start; creating them first makes the inserts pay for them.
        await store.ensure_indexes()
        commands_topic = topic_names.topic_name(topic_names.COMMANDS, prefix)
        matching, seed_seconds = await seed_contacts(
            store, tenant, args.contacts, args.match_fraction, args.seed, commands_topic
        )
        print(
            f"seeded {args.contacts:,} contacts ({matching:,} matching) in {seed_seconds:.1f} s: "
            f"{args.contacts / seed_seconds:,.0f} docs/s",
            flush=True,
        )
        measured = await run_backfill(args, env, prefix, store, tenant, matching)
        server = await store_server(store)
    finally:
        await store.close()

    backfill = measured["backfill"]
    figures = RunFigures(
        contacts=args.contacts,
        match_fraction=args.match_fraction,
        matching=matching,
        seed_seconds=seed_seconds,
        backfill_seconds=measured["backfill_seconds"],
        last_membership_seconds=measured["last_membership_seconds"],
        scan_done_seconds=measured["scan_done_seconds"],
        membership_added=measured["membership_added"],
        backfill=backfill,
        rss_before_mib=measured["rss_before_mib"],
        rss_peak_mib=measured["rss_peak_mib"],
        rss_end_mib=measured["rss_end_mib"],
        hwm_mib=measured["hwm_mib"],
        commit=measured["commit"],
        rss_series=measured["rss_series"],
    )
    added = backfill.get("membersAfter", 0) - backfill.get("membersBefore", 0)
    if figures.membership_added != matching or added != matching:
        print(
            f"MISMATCH: {matching} matching contacts, {figures.membership_added} "
            f"membership.added events, member count grew by {added}",
            flush=True,
        )
    series = " ".join(f"{at:.0f}s={value:.0f}" for at, value in figures.rss_series[::10])
    print(f"worker RSS MiB every 5 s: {series}", flush=True)
    print(write_section(figures, server))


if __name__ == "__main__":
    asyncio.run(main())
