"""Builders of command messages shared by unit and integration tests."""

from __future__ import annotations

import uuid
from typing import Any


def command(
    command_type: str,
    payload: dict[str, Any],
    *,
    tenant: str = "tenant-a",
    command_id: str | None = None,
    actor_type: str = "user",
    **extra: Any,
) -> dict[str, Any]:
    """Return a command envelope with a fresh command id unless one is given."""
    message = {
        "commandId": command_id or f"cmd-{uuid.uuid4()}",
        "type": command_type,
        "tenantId": tenant,
        "issuedAt": "2026-12-01T10:00:00Z",
        "actor": {"type": actor_type, "id": "tester"},
        "payload": payload,
    }
    message.update(extra)
    return message


def create(contact_id: str, email: str, **fields: Any) -> dict[str, Any]:
    """Return a contact.create payload."""
    return {"contactId": contact_id, "email": email, **fields}


def new_id() -> str:
    """Return a unique contact id."""
    return uuid.uuid4().hex
