"""The Faust application and its contact-command agent.

The agent is thin: it batches messages, hands them to
:class:`~contact_pipeline.handlers.batch.ContactBatchApplier`, publishes what
comes back and only then acknowledges the messages. Faust delivers at least
once, so a crash before the acknowledgement redelivers the batch, and the
applier's idempotency makes that redelivery change nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial
from typing import Any

import faust
from prometheus_client import generate_latest

from contact_pipeline import codec, metrics
from contact_pipeline.agents import audit as audit_agents
from contact_pipeline.agents import mailer
from contact_pipeline.agents.retry import with_store_retry
from contact_pipeline.domain.commands import SourcePosition
from contact_pipeline.domain.errors import StoreUnavailable
from contact_pipeline.handlers.backfill import BackfillRunner, BackfillSettings
from contact_pipeline.handlers.batch import BatchOutput, ContactBatchApplier, RawMessage
from contact_pipeline.handlers.enforcement import check_contactability, parse_request
from contact_pipeline.handlers.lists import ListCommandApplier, ListOutput
from contact_pipeline.kafka import topics as topic_names
from contact_pipeline.schemas import COMMAND_TYPES, load_schemas
from contact_pipeline.settings import Settings
from contact_pipeline.store.catalog import ListCatalog
from contact_pipeline.store.mongo import Store

logger = logging.getLogger(__name__)


def broker_url(bootstrap_servers: str) -> str:
    """Convert ``host:port,host:port`` to Faust's ``kafka://host:port;kafka://host:port``."""
    hosts = [host.strip() for host in bootstrap_servers.split(",") if host.strip()]
    return ";".join(f"kafka://{host}" for host in hosts)


def create_app(settings: Settings) -> faust.App:
    """Build the worker's Faust app with its agents, topics and metrics page."""
    # pymongo and aiokafka format a debug record for every command and send when
    # their loggers allow DEBUG, which cost a tenth of the worker's CPU in a profile.
    quiet = logging.DEBUG if settings.log_level.upper() == "DEBUG" else logging.INFO
    for name in ("pymongo", "aiokafka"):
        logging.getLogger(name).setLevel(max(quiet, logging.getLogger(name).level))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=broker_url(settings.kafka_bootstrap_servers),
        store="memory://",
        web_enabled=settings.web_enabled,
        web_port=settings.web_port,
        web_bind=settings.web_bind,
        topic_allow_declare=False,
        producer_acks=-1,
        broker_commit_every=1000,
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        logging_config=None,
        datadir=str(settings.data_dir / settings.app_id),
        # Finish the batch in hand before a rebalance or stop hands its partitions over.
        # NOTE: faust-streaming 0.15 then waits forever for events of a topic that two
        # agents of this app consume, so every topic here has one consuming agent.
        stream_wait_empty=True,
    )
    prefix = settings.topic_prefix
    commands = app.topic(
        topic_names.topic_name(topic_names.COMMANDS, prefix),
        key_serializer="raw",
        value_serializer="raw",
    )
    results = app.topic(topic_names.topic_name(topic_names.RESULTS, prefix), value_serializer="raw")
    events = app.topic(topic_names.topic_name(topic_names.EVENTS, prefix), value_serializer="raw")
    dead_letters = app.topic(
        topic_names.topic_name(topic_names.DEAD_LETTERS, prefix), value_serializer="raw"
    )
    list_commands = app.topic(
        topic_names.topic_name(topic_names.LIST_COMMANDS, prefix),
        key_serializer="raw",
        value_serializer="raw",
    )
    list_events = app.topic(
        topic_names.topic_name(topic_names.LIST_EVENTS, prefix), value_serializer="raw"
    )
    membership_events = app.topic(
        topic_names.topic_name(topic_names.MEMBERSHIP_EVENTS, prefix), value_serializer="raw"
    )
    consent_events = app.topic(
        topic_names.topic_name(topic_names.CONSENT_EVENTS, prefix), value_serializer="raw"
    )
    confirmation_requests = app.topic(
        topic_names.topic_name(topic_names.CONFIRMATION_REQUESTS, prefix), value_serializer="raw"
    )
    schemas = load_schemas(settings.schemas_dir)
    state: dict[str, Any] = {}
    lock = asyncio.Lock()

    async def send_commands(pairs: list[tuple[bytes, dict[str, Any]]]) -> list[int]:
        pending = [await commands.send(key=key, value=codec.dumps(value)) for key, value in pairs]
        return [metadata.partition for metadata in await asyncio.gather(*pending)]

    async def announce(event: dict[str, Any]) -> None:
        key = f"{event['tenantId']}:{event['listId']}".encode()
        await (await list_events.send(key=key, value=codec.dumps(event)))

    async def components() -> dict[str, Any]:
        # The client must be created inside the running event loop, so not at import.
        async with lock:
            if not state:
                store = await Store.connect(
                    settings.mongodb_uri.get_secret_value(), settings.mongodb_database
                )
                await store.ensure_indexes()
                catalog = ListCatalog(store, settings.list_cache_max_age_seconds)
                state["contacts"] = ContactBatchApplier(
                    store,
                    schemas,
                    catalog=catalog,
                    confirmation_secret=settings.confirmation_secret.get_secret_value(),
                    confirmation_max_age_seconds=settings.confirmation_max_age_seconds,
                )
                state["lists"] = ListCommandApplier(store, schemas)
                state["backfills"] = BackfillRunner(
                    store,
                    send_commands,
                    announce,
                    BackfillSettings(
                        grace_seconds=settings.backfill_grace_seconds,
                        max_in_flight=settings.backfill_max_in_flight,
                    ),
                )
        return state

    async def applier() -> ContactBatchApplier:
        return (await components())["contacts"]

    @app.agent(commands, name="contact-commands")
    async def contact_commands(stream: faust.StreamT) -> None:
        async for batch in stream.noack_take(
            settings.batch_max_messages, within=settings.batch_max_wait_seconds
        ):
            started = time.perf_counter()
            messages = [_raw(event) for event in batch]
            try:
                contacts = await applier()
                output = await with_store_retry(
                    partial(contacts.apply, messages), settings, "contact batch"
                )
            except StoreUnavailable as exc:
                logger.exception("document store still failing; stopping the worker: %s", exc)
                await app.crash(exc)
                return
            await _publish(
                output,
                results,
                events,
                dead_letters,
                {
                    "membership": membership_events,
                    "consent": consent_events,
                    "confirmation": confirmation_requests,
                },
            )
            for event in batch:
                await stream.ack(event)
            _record(messages, output, started)

    @app.agent(list_commands, name="list-commands")
    async def list_command_agent(stream: faust.StreamT) -> None:
        async for batch in stream.noack_take(
            settings.batch_max_messages, within=settings.batch_max_wait_seconds
        ):
            started = time.perf_counter()
            messages = [_raw(event) for event in batch]
            parts = await components()
            try:
                output = await with_store_retry(
                    partial(parts["lists"].apply, messages), settings, "list batch"
                )
            except StoreUnavailable as exc:
                logger.exception("document store still failing; stopping the worker: %s", exc)
                await app.crash(exc)
                return
            await _publish_lists(output, results, list_events, dead_letters)
            for event in batch:
                await stream.ack(event)
            for backfill in output.backfills:
                parts["backfills"].start(backfill["_id"])
            _record(messages, output, started)  # type: ignore[arg-type]

    @app.timer(interval=10.0)
    async def resume_backfills() -> None:
        # A backfill whose worker stopped has an expired lease; any worker takes it over.
        try:
            await (await components())["backfills"].resume_stopped()
        except StoreUnavailable as exc:
            logger.warning("could not look for stopped backfills: %s", exc)

    requests = app.topic(
        topic_names.topic_name(topic_names.CONTACTABILITY_REQUESTS, prefix),
        key_serializer="raw",
        value_serializer="raw",
    )
    replies = app.topic(
        topic_names.topic_name(topic_names.CONTACTABILITY_REPLIES, prefix), value_serializer="raw"
    )

    @app.agent(requests, name="contactability-requests")
    async def contactability_agent(stream: faust.StreamT) -> None:
        async for batch in stream.noack_take(
            settings.batch_max_messages, within=settings.batch_max_wait_seconds
        ):
            store = (await components())["contacts"].store
            pending = []
            for event in batch:
                reply = await _answer(store, event.message)
                if reply is not None:
                    metrics.CONTACTABILITY_DECISIONS.labels(decision=reply["decision"]).inc()
                    key = str(reply["requestId"]).encode()
                    pending.append(await replies.send(key=key, value=codec.dumps(reply)))
            await asyncio.gather(*pending)
            for event in batch:
                await stream.ack(event)

    audit_agents.register(app, settings)
    mailer.register(app, settings)

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(), content_type="text/plain; version=0.0.4")

    return app


async def _answer(store: Store, message: Any) -> dict[str, Any] | None:
    """Decide one contactability request; None when it has no requestId to reply to."""
    request, errors = parse_request(message.value)
    if request is None or not isinstance(request.get("requestId"), str):
        logger.warning(
            "contactability request without requestId dropped topic=%s partition=%d offset=%d",
            message.topic,
            message.partition,
            message.offset,
        )
        return None
    actor = request.get("actor") if isinstance(request.get("actor"), dict) else None
    base = {
        "requestId": request["requestId"],
        "actor": actor or {"type": "service", "id": "unknown"},
    }
    if errors:
        return {**base, "tenantId": request.get("tenantId"), "decision": "error", "errors": errors}
    try:
        decision = await check_contactability(
            store,
            request["tenantId"],
            request["contactId"],
            request["channel"],
            request["listId"],
        )
    except StoreUnavailable as exc:
        logger.warning("contactability request %s failed: %s", request["requestId"], exc)
        return {
            **base,
            "tenantId": request["tenantId"],
            "decision": "error",
            "errors": [{"field": "(store)", "value": None, "reason": "store unavailable; retry"}],
        }
    return {**base, **decision.to_dict()}


def _raw(event: Any) -> RawMessage:
    message = event.message
    return RawMessage(
        value=message.value,
        key=message.key,
        position=SourcePosition(message.topic, message.partition, message.offset),
    )


async def _publish(
    output: BatchOutput,
    results: faust.TopicT,
    events: faust.TopicT,
    dead_letters: faust.TopicT,
    related: dict[str, faust.TopicT],
) -> None:
    """Send events, dead letters and results, and wait until the broker has them all."""
    pending = []
    for event in output.events:
        key = f"{event['tenantId']}:{event['contactId']}".encode()
        pending.append(await events.send(key=key, value=codec.dumps(event)))
    for kind, topic_events in (
        ("membership", output.membership_events),
        ("consent", output.consent_events),
    ):
        for event in topic_events:
            key = f"{event['tenantId']}:{event['contactId']}".encode()
            pending.append(await related[kind].send(key=key, value=codec.dumps(event)))
            if kind != "membership":
                continue
            metrics.MEMBERSHIP_CHANGES.labels(type=event["type"]).inc()
            if event["type"] == "membership.pending":
                # The mailer reads its own copy, since one topic may have one consuming agent.
                pending.append(
                    await related["confirmation"].send(key=key, value=codec.dumps(event))
                )
    pending.extend(await _send_dead_letters_and_results(output, results, dead_letters))
    # NOTE: the offsets are acknowledged only after every send is confirmed, so
    # a crash in between republishes: consumers dedupe by event id and command id.
    await asyncio.gather(*pending)


async def _publish_lists(
    output: ListOutput, results: faust.TopicT, list_events: faust.TopicT, dead_letters: faust.TopicT
) -> None:
    """Send list events, dead letters and results, and wait until the broker has them all."""
    pending = []
    for event in output.events:
        key = f"{event['tenantId']}:{event['listId']}".encode()
        pending.append(await list_events.send(key=key, value=codec.dumps(event)))
    pending.extend(await _send_dead_letters_and_results(output, results, dead_letters))
    await asyncio.gather(*pending)


async def _send_dead_letters_and_results(
    output: BatchOutput | ListOutput, results: faust.TopicT, dead_letters: faust.TopicT
) -> list[Any]:
    pending = []
    for letter in output.dead_letters:
        headers = [
            ("source-topic", letter.position.topic.encode()),
            ("source-partition", str(letter.position.partition).encode()),
            ("source-offset", str(letter.position.offset).encode()),
            ("error", letter.error.encode()),
        ]
        pending.append(await dead_letters.send(key=letter.key, value=letter.raw, headers=headers))
        logger.warning(
            "dead-lettered message topic=%s partition=%d offset=%d error=%s",
            letter.position.topic,
            letter.position.partition,
            letter.position.offset,
            letter.error,
        )
    for result in output.results:
        pending.append(
            await results.send(key=str(result["commandId"]).encode(), value=codec.dumps(result))
        )
    return pending


def _record(messages: list[RawMessage], output: BatchOutput | ListOutput, started: float) -> None:
    elapsed = time.perf_counter() - started
    metrics.BATCH_SECONDS.observe(elapsed)
    metrics.BATCH_SIZE.observe(len(messages))
    metrics.DEAD_LETTERS.inc(len(output.dead_letters))
    debug = logger.isEnabledFor(logging.DEBUG)
    for result in output.results:
        # Unknown types share one label, so bad input cannot grow the metric without bound.
        command_type = result.get("type") if result.get("type") in COMMAND_TYPES else "unknown"
        metrics.COMMANDS.labels(command=command_type, outcome=result["outcome"]).inc()
        if not debug:
            continue
        logger.debug(
            "command finished command_id=%s tenant=%s outcome=%s code=%s",
            result["commandId"],
            result["tenantId"],
            result["outcome"],
            result["code"],
        )
    first = messages[0].position
    logger.info(
        "batch applied topic=%s partition=%d offset=%d messages=%d results=%d events=%d "
        "dead_letters=%d duration_ms=%.1f",
        first.topic,
        first.partition,
        first.offset,
        len(messages),
        len(output.results),
        len(output.events),
        len(output.dead_letters),
        elapsed * 1000,
    )
