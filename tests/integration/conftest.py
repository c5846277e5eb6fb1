"""Fixtures that run the real pipeline: servers, topics and a worker process."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiosmtpd.controller import Controller
from pymongo import AsyncMongoClient

from contact_pipeline.kafka import topics as topic_names
from contact_pipeline.kafka.client import (
    ResultCollector,
    command_topic,
    produce_commands,
    produce_raw,
    topic_partitions,
)
from tests.conftest import IN_CI
from tests.factories import command, create, new_id

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Servers:
    kafka: str
    mongodb_uri: str


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"CI=true and a required server is unavailable: {reason}", pytrace=False)
    pytest.skip(f"integration servers unavailable: {reason}")


@pytest.fixture(scope="session")
def servers() -> Servers:
    kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    mongo = os.environ.get("MONGODB_URI")
    if kafka and mongo:
        return Servers(kafka, mongo)
    from contact_pipeline.dev import services

    try:
        endpoints = services.up()
    except Exception as exc:  # noqa: BLE001 - any start failure becomes one skip/fail reason
        _unavailable(str(exc))
    return Servers(endpoints.kafka_bootstrap_servers, endpoints.mongodb_uri)


@dataclass
class Pipeline:
    """A running worker on its own topics and database, and ways to talk to it."""

    servers: Servers
    prefix: str
    database: str
    log_path: Path
    env: dict[str, str]
    mongo: AsyncMongoClient | None = None
    collector: ResultCollector | None = None
    extra_workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def topic(self, base: str) -> str:
        return topic_names.topic_name(base, self.prefix)

    @property
    def db(self) -> Any:
        assert self.mongo is not None
        return self.mongo[self.database]

    async def send(
        self, commands: list[dict[str, Any]], timeout: float = 60.0
    ) -> list[dict[str, Any]]:
        """Produce commands and return their results in the same order."""
        assert self.collector is not None
        await produce_commands(
            self.servers.kafka, lambda c: command_topic(c, self.prefix), commands
        )
        ids = {c["commandId"] for c in commands}
        results = await self.collector.wait_for(ids, timeout)
        missing = ids - set(results)
        assert not missing, (
            f"no result within {timeout} s for {sorted(missing)[:5]}; worker log {self.log_path}"
        )
        return [results[c["commandId"]] for c in commands]

    async def send_one(self, message: dict[str, Any]) -> dict[str, Any]:
        return (await self.send([message]))[0]

    async def send_again(self, message: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
        """Send a command whose result was already collected; wait for a fresh result."""
        assert self.collector is not None
        self.collector.results.pop(message["commandId"], None)
        return (await self.send([message], timeout))[0]

    async def send_raw(self, records: list[tuple[bytes | None, bytes]]) -> None:
        await produce_raw(self.servers.kafka, self.topic(topic_names.COMMANDS), records)

    async def read_topic(self, base: str, timeout: float = 5.0) -> list[Any]:
        """Read every record of a topic from the beginning."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.servers.kafka, group_id=None, enable_auto_commit=False
        )
        partitions = await topic_partitions(self.servers.kafka, self.topic(base))
        await consumer.start()
        try:
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            ends = await consumer.end_offsets(partitions)
            records: list[Any] = []
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                positions = [await consumer.position(tp) for tp in partitions]
                if all(pos >= ends[tp] for pos, tp in zip(positions, partitions, strict=True)):
                    break
                batch = await consumer.getmany(timeout_ms=200)
                for part in batch.values():
                    records.extend(part)
            return records
        finally:
            await consumer.stop()

    async def events_for(self, tenant: str, contact_id: str) -> list[dict[str, Any]]:
        key = f"{tenant}:{contact_id}".encode()
        records = await self.read_topic(topic_names.EVENTS)
        return [json.loads(r.value) for r in records if r.key == key]

    def start_worker(self, name: str) -> subprocess.Popen[bytes]:
        return _start_worker(self.env, self.log_path.with_name(f"{self.log_path.stem}-{name}.log"))


def _start_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    log = log_path.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "contact_pipeline.cli", "worker"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=ROOT,
    )


def _tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class SmtpSink:
    """A real SMTP server on 127.0.0.1 that keeps every message it receives in memory."""

    host: str
    port: int
    messages: list[EmailMessage] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        # aiosmtpd calls this hook by its name from the server's own thread. A list
        # append is atomic under the GIL, so the tests' event loop can read the list.
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[EmailMessage]:
        """Return the messages received so far for one recipient, oldest first."""
        return [m for m in self.messages if m["To"] == address]

    async def wait_for(
        self, address: str, count: int = 1, timeout: float = 30.0
    ) -> list[EmailMessage]:
        """Wait until at least ``count`` messages for ``address`` arrived, and return them all."""
        deadline = time.monotonic() + timeout
        while len(self.to(address)) < count:
            assert time.monotonic() < deadline, (
                f"{len(self.to(address))} of {count} e-mails to {address} arrived in {timeout} s"
            )
            await asyncio.sleep(0.1)
        return self.to(address)


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[SmtpSink]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sink = SmtpSink("127.0.0.1", port)
    controller = Controller(sink, hostname=sink.host, port=port, enable_SMTPUTF8=True)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


@pytest.fixture(scope="session")
def pipeline_config(servers: Servers, smtp_server: SmtpSink) -> Iterator[Pipeline]:
    run_id = uuid.uuid4().hex[:8]
    prefix = f"test-{run_id}-"
    database = f"cp_test_{run_id}"
    log_dir = ROOT / ".local" / "run" / "tests"
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": servers.kafka,
        "MONGODB_URI": servers.mongodb_uri,
        "CONTACT_PIPELINE_TOPIC_PREFIX": prefix,
        "CONTACT_PIPELINE_MONGODB_DATABASE": database,
        "CONTACT_PIPELINE_APP_ID": f"contact-pipeline-test-{run_id}",
        "CONTACT_PIPELINE_WEB_ENABLED": "false",
        "CONTACT_PIPELINE_BATCH_MAX_WAIT_SECONDS": "0.05",
        "CONTACT_PIPELINE_LIST_CACHE_MAX_AGE_SECONDS": "0.5",
        "CONTACT_PIPELINE_BACKFILL_GRACE_SECONDS": "1.5",
        "CONTACT_PIPELINE_SMTP_HOST": smtp_server.host,
        "CONTACT_PIPELINE_SMTP_PORT": str(smtp_server.port),
    }
    specs = topic_names.load_topics(ROOT / "topics.yaml", prefix)
    try:
        asyncio.run(topic_names.apply_topics(servers.kafka, specs, replication_factor=1))
    except RuntimeError as exc:
        _unavailable(str(exc))
    yield Pipeline(servers, prefix, database, log_dir / f"worker-{run_id}.log", env)


@pytest.fixture(scope="session")
async def pipeline(pipeline_config: Pipeline) -> AsyncIterator[Pipeline]:
    config = pipeline_config
    worker = _start_worker(config.env, config.log_path)
    config.mongo = AsyncMongoClient(config.servers.mongodb_uri, tz_aware=True)
    config.collector = ResultCollector(config.servers.kafka, config.topic(topic_names.RESULTS))
    await config.collector.start()
    try:
        probe = command(
            "contact.create",
            create(new_id(), "probe@example.com"),
            tenant=f"probe-{uuid.uuid4().hex[:6]}",
        )
        try:
            await config.send([probe], timeout=120)
        except AssertionError:
            pytest.fail(f"worker did not answer within 120 s; its log:\n{_tail(config.log_path)}")
        yield config
    finally:
        await config.collector.stop()
        worker.terminate()
        for extra in config.extra_workers:
            extra.terminate()
        for process in [worker, *config.extra_workers]:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        await config.mongo.close()


@pytest.fixture
def tenant() -> str:
    """A tenant id of its own for each test, so tests never see each other's data."""
    return f"t{uuid.uuid4().hex[:10]}"
