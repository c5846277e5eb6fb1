"""Retrying store work in the agents while the document store fails."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pymongo.errors import PyMongoError
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from contact_pipeline import metrics
from contact_pipeline.domain.errors import StoreUnavailable
from contact_pipeline.settings import Settings

logger = logging.getLogger(__name__)

T = TypeVar("T")


async def with_store_retry(
    operation: Callable[[], Awaitable[T]], settings: Settings, work: str
) -> T:
    """Run ``operation``, retrying with backoff while the store fails.

    A pymongo error counts as a store failure. After ``store_retry_max_seconds``
    the last :class:`StoreUnavailable` is raised, and the agent stops the worker.
    ``work`` names the work in the retry log line, such as ``"contact batch"``.
    """

    def log_retry(retry_state: Any) -> None:
        metrics.STORE_RETRIES.inc()
        logger.warning(
            "store failed, retrying %s attempt=%d error=%s",
            work,
            retry_state.attempt_number,
            retry_state.outcome.exception() if retry_state.outcome else None,
        )

    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type(StoreUnavailable),
        wait=wait_exponential(multiplier=0.2, max=10),
        stop=stop_after_delay(settings.store_retry_max_seconds),
        reraise=True,
        before_sleep=log_retry,
    ):
        with attempt:
            try:
                return await operation()
            except PyMongoError as exc:
                raise StoreUnavailable(f"document store operation failed: {exc}") from exc
    raise AssertionError("unreachable: AsyncRetrying either returns or raises")
