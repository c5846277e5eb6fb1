"""Audit agents: chain change events into the audit log and project it into the store.

The chain agent reads every change-event topic and the contactability replies.
Per batch it extends each source partition's chain from the head saved in the
store, publishes the entries to ``audit-log`` and waits for the broker, then
saves the heads, and only then acknowledges the records. A crash in between
redelivers the batch, which is chained again from the old head into
byte-identical entries that ``audit verify`` skips as republished.

The projection agent copies ``audit-log`` into the ``audit_entries`` collection,
idempotently, for ``audit log`` queries.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from functools import partial
from typing import Any, TypeVar

import faust

from contact_pipeline.agents.retry import with_store_retry
from contact_pipeline.audit.chain import (
    SOURCE_TOPICS,
    ChainHead,
    SourceRecord,
    encode_entry,
    extend_chain,
)
from contact_pipeline.audit.store import AuditStore
from contact_pipeline.domain.errors import StoreUnavailable
from contact_pipeline.kafka import topics as topic_names
from contact_pipeline.settings import Settings
from contact_pipeline.store.mongo import Store

logger = logging.getLogger(__name__)

T = TypeVar("T")


def register(app: faust.App, settings: Settings) -> None:
    """Add the audit agents to the worker's app."""
    prefix = settings.topic_prefix
    sources = app.topic(
        *(topic_names.topic_name(base, prefix) for base in SOURCE_TOPICS),
        key_serializer="raw",
        value_serializer="raw",
    )
    audit_log = app.topic(
        topic_names.topic_name(topic_names.AUDIT_LOG, prefix),
        key_serializer="raw",
        value_serializer="raw",
    )
    state: dict[str, AuditStore] = {}
    lock = asyncio.Lock()

    async def audit_store() -> AuditStore:
        # The client must be created inside the running event loop, so not at import.
        async with lock:
            if not state:
                store = await Store.connect(
                    settings.mongodb_uri.get_secret_value(), settings.mongodb_database
                )
                audit = AuditStore(store)
                await audit.ensure_indexes()
                state["store"] = audit
        return state["store"]

    @app.agent(sources, name="audit-chain")
    async def chain_sources(stream: faust.StreamT) -> None:
        async for batch in stream.noack_take(
            settings.batch_max_messages, within=settings.batch_max_wait_seconds
        ):
            started = time.perf_counter()
            records = [_source_record(event.message, prefix) for event in batch]
            try:
                audit = await with_store_retry(audit_store, settings, "audit batch")
                counts = await with_store_retry(
                    partial(_chain_batch, audit, audit_log, records), settings, "audit batch"
                )
            except StoreUnavailable as exc:
                logger.exception("document store still failing; stopping the worker: %s", exc)
                await app.crash(exc)
                return
            for event in batch:
                await stream.ack(event)
            _log_chained(records, counts, started)

    @app.agent(audit_log, name="audit-projection")
    async def project_entries(stream: faust.StreamT) -> None:
        async for batch in stream.noack_take(
            settings.batch_max_messages, within=settings.batch_max_wait_seconds
        ):
            started = time.perf_counter()
            entries = [entry for event in batch if (entry := _entry(event.message)) is not None]
            try:
                audit = await with_store_retry(audit_store, settings, "audit batch")
                inserted = await with_store_retry(
                    partial(audit.insert_entries, entries), settings, "audit projection"
                )
            except StoreUnavailable as exc:
                logger.exception("document store still failing; stopping the worker: %s", exc)
                await app.crash(exc)
                return
            for event in batch:
                await stream.ack(event)
            first = batch[0].message
            logger.info(
                "audit entries projected partition=%d offset=%d entries=%d new=%d duration_ms=%.1f",
                first.partition,
                first.offset,
                len(entries),
                inserted,
                (time.perf_counter() - started) * 1000,
            )


async def _chain_batch(
    audit: AuditStore, audit_log: faust.TopicT, records: list[SourceRecord]
) -> dict[str, int]:
    """Chain, publish and save heads for one batch; return the new entries per chain."""
    by_chain: dict[str, list[SourceRecord]] = {}
    for record in records:
        by_chain.setdefault(record.chain, []).append(record)
    heads = await audit.load_heads(list(by_chain))

    pending = []
    moved: list[ChainHead] = []
    counts: dict[str, int] = {}
    for chain, chain_records in by_chain.items():
        head = heads.get(chain, ChainHead(chain))
        entries, new_head = extend_chain(head, chain_records)
        counts[chain] = len(entries)
        if not entries:
            continue
        for entry in entries:
            # Keyed by chain id, so all entries of a chain share one partition and its order.
            pending.append(await audit_log.send(key=chain.encode(), value=encode_entry(entry)))
        moved.append(new_head)

    # A head is saved only after the broker confirmed its entries, so a saved head
    # never points past the topic's end. `audit verify --heads` relies on that.
    await asyncio.gather(*pending)
    for head in moved:
        await audit.save_head(head)
    return counts


def _source_record(message: Any, prefix: str) -> SourceRecord:
    topic = message.topic[len(prefix) :] if message.topic.startswith(prefix) else message.topic
    # Faust gives the record time in seconds; the entry keeps Kafka's milliseconds.
    timestamp_ms = round((message.timestamp or 0) * 1000)
    return SourceRecord(topic, message.partition, message.offset, message.value, timestamp_ms)


def _entry(message: Any) -> dict[str, Any] | None:
    try:
        entry = json.loads(message.value)
    except (TypeError, UnicodeDecodeError, ValueError):
        entry = None
    if isinstance(entry, dict) and "chain" in entry and "seq" in entry:
        return entry
    # Left for `audit verify`, which reports it; the projection moves on.
    logger.warning(
        "audit-log record is not an entry; not projected partition=%d offset=%d",
        message.partition,
        message.offset,
    )
    return None


def _log_chained(records: list[SourceRecord], counts: dict[str, int], started: float) -> None:
    chains = " ".join(f"{chain}:{count}" for chain, count in counts.items())
    logger.info(
        "audit batch chained records=%d entries=%d chains=%s duration_ms=%.1f",
        len(records),
        sum(counts.values()),
        chains,
        (time.perf_counter() - started) * 1000,
    )
