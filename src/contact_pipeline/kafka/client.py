"""Producing commands and reading their results with aiokafka, for the CLI and tests."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from contact_pipeline import codec
from contact_pipeline.kafka import topics as topic_names

logger = logging.getLogger(__name__)


def command_key(command: dict[str, Any]) -> bytes:
    """Return the partition key of a command: ``<tenantId>:<contactId>``, or the list for lists.

    Every command about one contact shares it, so they apply in order.
    """
    payload = command.get("payload") if isinstance(command.get("payload"), dict) else {}
    if is_list_command(command):
        return f"{command.get('tenantId')}:{payload.get('listId')}".encode()
    return f"{command.get('tenantId')}:{payload.get('contactId')}".encode()


def is_list_command(command: dict[str, Any]) -> bool:
    """Tell whether a command belongs on the list-commands topic."""
    return str(command.get("type", "")).startswith("list.")


def command_topic(command: dict[str, Any], prefix: str) -> str:
    """Return the topic a command belongs on: list-commands or contact-commands."""
    base = topic_names.LIST_COMMANDS if is_list_command(command) else topic_names.COMMANDS
    return topic_names.topic_name(base, prefix)


async def topic_partitions(
    bootstrap_servers: str, topic: str, timeout: float = 15.0
) -> list[TopicPartition]:
    """Return the partitions of a topic, waiting briefly for a just-created topic to appear."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        deadline = time.monotonic() + timeout
        while True:
            described = await admin.describe_topics([topic])
            partitions = [entry["partition"] for entry in described[0].get("partitions", [])]
            if partitions and described[0].get("error_code", 0) == 0:
                return [TopicPartition(topic, partition) for partition in sorted(partitions)]
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"topic {topic} not found on {bootstrap_servers}; "
                    "create the topics with `contact-pipeline topics apply`"
                )
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


class ResultCollector:
    """Reads the results topic from its current end, collecting results of chosen commands.

    Start it before producing the commands, so no result is missed.
    """

    def __init__(self, bootstrap_servers: str, topic: str, id_field: str = "commandId") -> None:
        self.topic = topic
        self.id_field = id_field
        self.bootstrap_servers = bootstrap_servers
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers, enable_auto_commit=False, group_id=None
        )
        self.results: dict[str, dict[str, Any]] = {}

    async def start(self) -> None:
        """Connect and position at the end of every partition of the results topic."""
        assigned = await topic_partitions(self.bootstrap_servers, self.topic)
        await self.consumer.start()
        self.consumer.assign(assigned)
        await self.consumer.seek_to_end(*assigned)
        # Resolve the end offsets now: a lazy seek would happen after the results arrive.
        for partition in assigned:
            await self.consumer.position(partition)

    async def wait_for(
        self,
        command_ids: set[str],
        timeout: float,
        on_result: Callable[[dict[str, Any]], None] | None = None,
        idle_timeout: float | None = None,
    ) -> dict[str, dict[str, Any]]:
        """Collect results until every command id has one or a timeout passes.

        ``idle_timeout`` ends the wait early when no awaited result arrived for that
        many seconds, which is what a stopped worker looks like.
        """
        deadline = time.monotonic() + timeout
        last_progress = time.monotonic()
        missing = set(command_ids) - set(self.results)
        while missing and time.monotonic() < deadline:
            if idle_timeout is not None and time.monotonic() - last_progress > idle_timeout:
                break
            batches = await self.consumer.getmany(timeout_ms=500, max_records=5000)
            for records in batches.values():
                for record in records:
                    result = json.loads(record.value)
                    command_id = result.get(self.id_field)
                    if command_id in missing:
                        last_progress = time.monotonic()
                        missing.discard(command_id)
                        self.results[command_id] = result
                        if on_result:
                            on_result(result)
        return {cid: self.results[cid] for cid in command_ids if cid in self.results}

    async def stop(self) -> None:
        """Close the consumer."""
        await self.consumer.stop()


async def produce_commands(
    bootstrap_servers: str,
    topic: str | Callable[[dict[str, Any]], str],
    commands: Iterable[dict[str, Any]],
    on_sent: Callable[[int], None] | None = None,
) -> int:
    """Send commands keyed by tenant and contact (or list); return how many the broker acknowledged.

    ``topic`` is a topic name, or a function that picks the topic of each command.
    """
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        acks="all",
        enable_idempotence=True,
        linger_ms=20,
        max_batch_size=256 * 1024,
    )
    await producer.start()
    sent = 0
    try:
        futures: list[asyncio.Future[Any]] = []
        for command in commands:
            futures.append(
                await producer.send(
                    topic if isinstance(topic, str) else topic(command),
                    key=command_key(command),
                    value=codec.dumps(command),
                )
            )
            if len(futures) >= 1000:
                await asyncio.gather(*futures)
                sent += len(futures)
                futures.clear()
                if on_sent:
                    on_sent(sent)
        await asyncio.gather(*futures)
        sent += len(futures)
        if on_sent:
            on_sent(sent)
    finally:
        await producer.stop()
    return sent


async def produce_raw(
    bootstrap_servers: str, topic: str, records: list[tuple[bytes | None, bytes]]
) -> None:
    """Send raw ``(key, value)`` records as they are; used to feed malformed input."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all")
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, key=key, value=value)
    finally:
        await producer.stop()


async def ask_contactability(
    bootstrap_servers: str,
    prefix: str,
    requests: list[dict[str, Any]],
    timeout: float = 30.0,
) -> dict[str, dict[str, Any]]:
    """Send contactability requests and wait for their decisions, by request id.

    Each request is ``{"requestId", "tenantId", "contactId", "listId", "channel"}``
    and optionally ``"actor"``; the worker replies to each on contactability-replies.
    """
    collector = ResultCollector(
        bootstrap_servers,
        topic_names.topic_name(topic_names.CONTACTABILITY_REPLIES, prefix),
        id_field="requestId",
    )
    await collector.start()
    try:
        records = [
            (f"{r.get('tenantId')}:{r.get('contactId')}".encode(), codec.dumps(r)) for r in requests
        ]
        await produce_raw(
            bootstrap_servers,
            topic_names.topic_name(topic_names.CONTACTABILITY_REQUESTS, prefix),
            records,  # type: ignore[arg-type]
        )
        return await collector.wait_for({str(r.get("requestId")) for r in requests}, timeout)
    finally:
        await collector.stop()


def decision_recorder(producer: AIOKafkaProducer, prefix: str) -> Callable[[dict[str, Any]], Any]:
    """Return a recorder for check_contactability that puts decisions on the audit trail.

    It publishes each decision to contactability-replies, the topic the audit
    agent reads, as the request/reply path does.
    """
    topic = topic_names.topic_name(topic_names.CONTACTABILITY_REPLIES, prefix)

    async def record(decision: dict[str, Any]) -> None:
        reply = {"requestId": f"direct-{uuid.uuid4()}", **decision}
        await (
            await producer.send(topic, key=reply["requestId"].encode(), value=codec.dumps(reply))
        )

    return record
