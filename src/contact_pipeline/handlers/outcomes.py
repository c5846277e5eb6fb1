"""The outcome of one command: the result published to producers and the document stored.

Contact and list commands share this shape, so a producer reads every result
the same way and a redelivered command republishes what was stored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from contact_pipeline.domain.commands import Decoded
from contact_pipeline.domain.errors import CommandRejected


def result_id(decoded: Decoded) -> str:
    """Return the id of a stored outcome: ``<tenant>:<commandId>``."""
    return f"{decoded.tenant_id}:{decoded.command_id}"


def build_outcome(
    decoded: Decoded,
    outcome: str,
    code: str,
    message: str,
    processed_at: datetime,
    *,
    subject: dict[str, Any],
    errors: list[dict[str, Any]] | None = None,
    version: int | None = None,
    changed_fields: list[str] | None = None,
    event: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build the stored outcome document, with the published result under ``result``.

    ``subject`` names what the command is about, such as ``{"contactId": ...}``
    or ``{"listId": ...}``; a value of None is taken from the payload.
    """
    raw = decoded.message
    payload = raw.get("payload") if isinstance(raw.get("payload"), dict) else {}
    result: dict[str, Any] = {
        "commandId": decoded.command_id,
        "tenantId": decoded.tenant_id,
        "type": raw.get("type"),
        "outcome": outcome,
        "code": code,
        "message": message,
    }
    for key, value in subject.items():
        result[key] = value or payload.get(key)
    result["processedAt"] = processed_at.isoformat()
    if version is not None:
        result["version"] = version
    if changed_fields is not None:
        result["changedFields"] = changed_fields
    if event is not None:
        result["eventId"] = event["id"]
    if errors:
        result["errors"] = errors
    if isinstance(raw.get("correlationId"), str):
        result["correlationId"] = raw["correlationId"]
    if isinstance(raw.get("meta"), dict):
        result["meta"] = raw["meta"]
    return {
        "_id": result_id(decoded),
        "tenantId": decoded.tenant_id,
        "correlationId": result.get("correlationId"),
        "outcome": outcome,
        "code": code,
        "result": result,
        "event": event,
    }


def rejection_errors(exc: CommandRejected) -> list[dict[str, Any]]:
    """Return the per-field errors of a rejection: the field, the value and the reason."""
    if "field" not in exc.details:
        return []
    return [
        {"field": exc.details["field"], "value": exc.details.get("value"), "reason": exc.message}
    ]
