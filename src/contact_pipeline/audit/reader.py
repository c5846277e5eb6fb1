"""Reading the whole audit-log topic, for `audit verify` and `audit export`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer

from contact_pipeline.kafka.client import topic_partitions

FETCH_TIMEOUT_MS = 1000


@dataclass(frozen=True)
class AuditRecord:
    """One record of the audit-log topic."""

    partition: int
    offset: int
    value: bytes

    @property
    def location(self) -> str:
        """Return the record's position as verify reports it."""
        return f"partition {self.partition} offset {self.offset}"


async def read_audit_log(bootstrap_servers: str, topic: str) -> AsyncIterator[AuditRecord]:
    """Yield every record of the topic, partition by partition in offset order.

    Reading stops at the end offsets taken when it starts, so entries published
    meanwhile are left for the next run. A chain's entries share one key and so
    one partition, which keeps each chain in order.
    """
    partitions = await topic_partitions(bootstrap_servers, topic)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        ends = await consumer.end_offsets(partitions)
        for partition in partitions:
            end = ends[partition]
            consumer.assign([partition])
            await consumer.seek_to_beginning(partition)
            while await consumer.position(partition) < end:
                batch = await consumer.getmany(partition, timeout_ms=FETCH_TIMEOUT_MS)
                for record in batch.get(partition, []):
                    if record.offset >= end:
                        break
                    # An empty value is not an entry, and verify reports it at its offset.
                    yield AuditRecord(record.partition, record.offset, record.value or b"")
    finally:
        await consumer.stop()
