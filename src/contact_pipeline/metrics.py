"""Prometheus metrics of the worker, defined in one place."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

COMMANDS = Counter(
    "contact_pipeline_commands_total",
    "Contact commands processed, by command type and outcome.",
    ["command", "outcome"],
)
DEAD_LETTERS = Counter(
    "contact_pipeline_dead_letters_total",
    "Messages sent to the dead-letter topic because they could not be decoded.",
)
BATCH_SECONDS = Histogram(
    "contact_pipeline_batch_seconds",
    "Time to apply and publish one batch of contact commands.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BATCH_SIZE = Histogram(
    "contact_pipeline_batch_messages",
    "Messages per applied batch.",
    buckets=(1, 5, 10, 50, 100, 250, 500, 1000, 2000),
)
STORE_RETRIES = Counter(
    "contact_pipeline_store_retries_total",
    "Batches retried because the document store failed.",
)
