"""The CloudEvents-style envelope shared by every change event the worker publishes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from contact_pipeline.domain.commands import Envelope

EVENT_SOURCE = "contact-pipeline/worker"


def change_event(
    envelope: Envelope,
    event_id: str,
    event_type: str,
    subject: str,
    now: datetime,
    **fields: Any,
) -> dict[str, Any]:
    """Build a change event of the command in ``envelope``, with the event's own ``fields``.

    Every event names its tenant, command, correlation id and actor, so
    consumers and the audit trail can trace it back to the command.
    """
    return {
        "specversion": "1.0",
        "id": event_id,
        "type": event_type,
        "source": EVENT_SOURCE,
        "subject": subject,
        "time": now.isoformat(),
        "datacontenttype": "application/json",
        "tenantId": envelope.tenant_id,
        **fields,
        "commandId": envelope.command_id,
        "correlationId": envelope.correlation_id,
        "actor": envelope.actor.model_dump(),
    }
