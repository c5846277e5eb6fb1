"""Mailer agent: sends double opt-in confirmation e-mails for pending memberships.

It consumes ``membership.pending`` events from the membership-events topic,
checks against the store that the membership still waits for that event's
nonce, signs a token and sends the mail over SMTP. Other membership events
pass through untouched.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import faust
from pymongo.errors import DuplicateKeyError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from contact_pipeline import metrics
from contact_pipeline.agents.retry import with_store_retry
from contact_pipeline.domain.commands import SourcePosition
from contact_pipeline.domain.errors import StoreUnavailable
from contact_pipeline.domain.tokens import make_confirmation_token
from contact_pipeline.handlers.confirmations import (
    PendingConfirmation,
    build_confirmation_message,
    confirmation_link,
    pending_confirmation,
    skip_reason,
    smtp_failure_is_retriable,
)
from contact_pipeline.kafka import topics
from contact_pipeline.settings import Settings
from contact_pipeline.store.mongo import Store

logger = logging.getLogger(__name__)

MAILS_COLLECTION = "confirmation_mails"
SMTP_ATTEMPTS = 4
"""Sends per mail before it is given up; the waits between them add up to about 3.5 s."""
SMTP_TIMEOUT_SECONDS = 30.0
"""Limit of each SMTP connect and reply wait."""

_DEVELOPMENT_SECRET = Settings.model_fields["confirmation_secret"].default.get_secret_value()


def register(app: faust.App, settings: Settings) -> None:
    """Add the confirmation mailer agent to the worker's app."""
    mailer = ConfirmationMailer(settings)
    # Its own topic, not membership-events: faust-streaming 0.15 waited forever on stop
    # for events of a topic that two agents of one app consume (the audit reads that one).
    membership_events = app.topic(
        topics.topic_name(topics.CONFIRMATION_REQUESTS, settings.topic_prefix),
        key_serializer="raw",
        value_serializer="raw",
    )

    @app.task
    async def warn_development_secret() -> None:
        if settings.confirmation_secret.get_secret_value() != _DEVELOPMENT_SECRET:
            return
        logger.warning(
            "CONTACT_PIPELINE_CONFIRMATION_SECRET is not set: confirmation tokens are signed "
            "with the development default, so anyone who reads this code can forge them; "
            "set a random secret in production"
        )

    @app.agent(membership_events, name="confirmation-mailer")
    async def confirmation_mailer(stream: faust.StreamT) -> None:
        async for batch in stream.noack_take(
            settings.batch_max_messages, within=settings.batch_max_wait_seconds
        ):
            for event in batch:
                message = event.message
                position = SourcePosition(message.topic, message.partition, message.offset)
                try:
                    await mailer.handle(message.value, position)
                except StoreUnavailable as exc:
                    # Unacknowledged events are delivered again after the restart.
                    logger.exception("document store still failing; stopping the worker: %s", exc)
                    await app.crash(exc)
                    return
                except Exception:
                    # A bug in one event must not stop the mails of the whole partition.
                    metrics.CONFIRMATION_MAILS.labels(outcome="failed").inc()
                    logger.exception(
                        "confirmation mail failed topic=%s partition=%d offset=%d",
                        position.topic,
                        position.partition,
                        position.offset,
                    )
                # Acknowledged one by one, so a crash mid-batch re-handles only the rest.
                await stream.ack(event)


class ConfirmationMailer:
    """Sends one confirmation e-mail per ``membership.pending`` event, at least once."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._store: Store | None = None
        self._lock = asyncio.Lock()

    async def handle(self, value: bytes | None, position: SourcePosition) -> str:
        """Send the confirmation mail of one membership event and return the outcome.

        The outcome is one of sent, duplicate, skipped, invalid, failed or
        ignored (an event of another type). Raises :class:`StoreUnavailable`
        when the document store keeps failing.
        """
        started = time.perf_counter()
        try:
            pending = pending_confirmation(json.loads(value or b""))
        except ValueError as exc:
            # Undecodable JSON and a pending event without its ids both land here;
            # a retry cannot fix either, so the partition moves on.
            metrics.CONFIRMATION_MAILS.labels(outcome="invalid").inc()
            logger.warning(
                "membership event skipped, it is invalid topic=%s partition=%d offset=%d error=%s",
                position.topic,
                position.partition,
                position.offset,
                exc,
            )
            return "invalid"
        if pending is None:
            return "ignored"

        store = await self._connect()
        outcome = await self._mail(store, pending)
        metrics.CONFIRMATION_MAILS.labels(outcome=outcome).inc()
        logger.info(
            "confirmation mail handled topic=%s partition=%d offset=%d event_id=%s tenant=%s "
            "contact_id=%s list_id=%s outcome=%s duration_ms=%.1f",
            position.topic,
            position.partition,
            position.offset,
            pending.event_id,
            pending.tenant_id,
            pending.contact_id,
            pending.list_id,
            outcome,
            (time.perf_counter() - started) * 1000,
        )
        return outcome

    async def _mail(self, store: Store, pending: PendingConfirmation) -> str:
        mails = store.db[MAILS_COLLECTION]
        if await _retry_store(self.settings, mails.find_one, {"_id": pending.event_id}):
            return "duplicate"

        contact = await _retry_store(
            self.settings, store.contacts.find_one, {"_id": pending.contact_doc_id}
        )
        list_doc = await _retry_store(
            self.settings, store.lists.find_one, {"_id": pending.list_doc_id}
        )
        reason = skip_reason(pending, contact, list_doc)
        if reason is not None:
            logger.info(
                "confirmation mail not sent event_id=%s tenant=%s contact_id=%s list_id=%s "
                "reason=%s",
                pending.event_id,
                pending.tenant_id,
                pending.contact_id,
                pending.list_id,
                reason,
            )
            return "skipped"
        assert contact is not None and list_doc is not None

        # Failure order: send first, record second. A crash between the two
        # mails the contact twice when the event is delivered again. Recording
        # first would lose the mail instead, and a contact without a link can
        # never confirm. A second mail is harmless because both links carry the
        # same nonce: the first one used confirms, and the other gets token_used.
        try:
            await self._send(self._message(pending, contact, list_doc))
        except (aiosmtplib.SMTPException, OSError) as exc:
            # No traceback: SMTP replies often quote the recipient's address.
            logger.error(
                "confirmation mail failed, giving up event_id=%s tenant=%s contact_id=%s "
                "list_id=%s error=%s",
                pending.event_id,
                pending.tenant_id,
                pending.contact_id,
                pending.list_id,
                _describe(exc),
            )
            return "failed"
        await _retry_store(self.settings, _record_sent, mails, pending)
        return "sent"

    def _message(
        self, pending: PendingConfirmation, contact: dict[str, Any], list_doc: dict[str, Any]
    ) -> EmailMessage:
        token = make_confirmation_token(
            self.settings.confirmation_secret.get_secret_value(),
            pending.tenant_id,
            pending.contact_id,
            pending.list_id,
            pending.nonce,
        )
        return build_confirmation_message(
            sender=self.settings.smtp_from,
            recipient=contact["email"],
            list_name=str(list_doc.get("name") or pending.list_id),
            link=confirmation_link(self.settings.confirmation_url, token),
            valid_seconds=self.settings.confirmation_max_age_seconds,
            first_name=contact.get("firstName"),
        )

    async def _send(self, message: EmailMessage) -> None:
        settings = self.settings
        password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(smtp_failure_is_retriable),
            stop=stop_after_attempt(SMTP_ATTEMPTS),
            wait=wait_exponential(multiplier=0.5, max=5),
            reraise=True,
            before_sleep=_log_smtp_retry,
        ):
            with attempt:
                # STARTTLS and login happen only when configured. start_tls=False
                # keeps aiosmtplib from upgrading on its own when the server offers it.
                await aiosmtplib.send(
                    message,
                    hostname=settings.smtp_host,
                    port=settings.smtp_port,
                    username=settings.smtp_username or None,
                    password=password if settings.smtp_username else None,
                    start_tls=settings.smtp_starttls,
                    timeout=SMTP_TIMEOUT_SECONDS,
                )

    async def _connect(self) -> Store:
        # The client must be created inside the running event loop, so not at import.
        async with self._lock:
            if self._store is None:
                self._store = await _retry_store(
                    self.settings,
                    Store.connect,
                    self.settings.mongodb_uri.get_secret_value(),
                    self.settings.mongodb_database,
                )
        return self._store


async def _record_sent(mails: Any, pending: PendingConfirmation) -> None:
    document = {
        "_id": pending.event_id,
        "tenantId": pending.tenant_id,
        "contactId": pending.contact_id,
        "listId": pending.list_id,
        "nonce": pending.nonce,
        "sentAt": datetime.now(UTC),
    }
    try:
        await mails.insert_one(document)
    except DuplicateKeyError:
        # Another worker sent this event's mail during a rebalance, so its record is kept.
        return


async def _retry_store(settings: Settings, operation: Any, *args: Any) -> Any:
    """Run one store operation, retrying while the store fails, as the contact agent does."""
    return await with_store_retry(lambda: operation(*args), settings, "confirmation mail")


def _describe(exc: BaseException) -> str:
    """Name an SMTP failure by class and reply code, leaving out the reply text and its address."""
    code = getattr(exc, "code", None)
    return f"{type(exc).__name__} code={code}" if code is not None else type(exc).__name__


def _log_smtp_retry(retry_state: RetryCallState) -> None:
    metrics.SMTP_RETRIES.inc()
    failure = retry_state.outcome.exception() if retry_state.outcome else None
    logger.warning(
        "SMTP send failed, retrying attempt=%d max_attempts=%d error=%s",
        retry_state.attempt_number,
        SMTP_ATTEMPTS,
        _describe(failure) if failure is not None else None,
    )
