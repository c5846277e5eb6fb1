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

CONFIRMATION_MAILS = Counter(
    "contact_pipeline_confirmation_mails_total",
    "membership.pending events handled by the mailer, by outcome: sent, duplicate "
    "(sent before), skipped (see the log for the reason), invalid (undecodable event) "
    "or failed (SMTP still failing after retries, or an unexpected error).",
    ["outcome"],
)
SMTP_RETRIES = Counter(
    "contact_pipeline_smtp_retries_total",
    "Confirmation e-mail sends retried after a temporary SMTP failure.",
)
MEMBERSHIP_CHANGES = Counter(
    "contact_pipeline_membership_changes_total",
    "Membership events published, by event type (membership.added, membership.removed, ...).",
    ["type"],
)
BACKFILLS = Counter(
    "contact_pipeline_backfills_total",
    "Backfills this worker finished, by status: completed or superseded.",
    ["status"],
)
CONTACTABILITY_DECISIONS = Counter(
    "contact_pipeline_contactability_decisions_total",
    "Contactability requests answered, by decision: allow, deny or error.",
    ["decision"],
)
