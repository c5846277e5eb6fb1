"""The command envelope and the parsing of raw Kafka messages into commands."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from contact_pipeline.domain.consent import ConsentGrant, ConsentWithdraw, MessageSent
from contact_pipeline.domain.contact import ContactCreate, ContactDelete, ContactUpdate
from contact_pipeline.domain.lists import (
    ListCreate,
    ListDelete,
    ListUpdate,
    MembershipAdd,
    MembershipConfirm,
    MembershipEvaluate,
    MembershipRemove,
    MembershipUnsubscribe,
)

ActorType = Literal["user", "service", "contact", "system", "import"]


class Actor(BaseModel):
    """The issuer of a command."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: ActorType
    id: str = Field(min_length=1, max_length=128)


class Envelope(BaseModel):
    """Fields shared by every command; the payload depends on ``type``."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    command_id: str = Field(min_length=1, max_length=128)
    type: str
    tenant_id: str = Field(min_length=1, max_length=64)
    issued_at: datetime
    actor: Actor
    correlation_id: str | None = None
    meta: dict[str, str | int | float | bool | None] | None = None
    payload: dict[str, Any]


PAYLOAD_MODELS: dict[str, type[BaseModel]] = {
    "contact.create": ContactCreate,
    "contact.update": ContactUpdate,
    "contact.delete": ContactDelete,
    "membership.add": MembershipAdd,
    "membership.remove": MembershipRemove,
    "membership.unsubscribe": MembershipUnsubscribe,
    "membership.evaluate": MembershipEvaluate,
    "membership.confirm": MembershipConfirm,
    "consent.grant": ConsentGrant,
    "consent.withdraw": ConsentWithdraw,
    "message.sent": MessageSent,
    "list.create": ListCreate,
    "list.update": ListUpdate,
    "list.delete": ListDelete,
}


@dataclass(frozen=True)
class SourcePosition:
    """Topic, partition and offset of a message, for logs and dead-letter headers."""

    topic: str
    partition: int
    offset: int


@dataclass
class Undecodable:
    """A message that is not a JSON object with a command id: it goes to the dead-letter topic."""

    position: SourcePosition
    raw: bytes
    key: bytes | None
    error: str


@dataclass
class Decoded:
    """A message that is a JSON object with a tenant and a command id."""

    position: SourcePosition
    message: dict[str, Any]
    command_id: str
    tenant_id: str
    extra: dict[str, Any] = field(default_factory=dict)


def decode(raw: bytes | None, key: bytes | None, position: SourcePosition) -> Decoded | Undecodable:
    """Decode raw message bytes far enough to address a result.

    A command whose id and tenant can be read gets a result even if the rest is
    invalid. Anything less has no address for a result and is dead-lettered.
    """
    if raw is None:
        return Undecodable(
            position, b"", key, "empty message value (a tombstone?); expected a JSON command"
        )
    try:
        message = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return Undecodable(position, raw, key, f"value is not valid UTF-8 JSON: {exc}")
    if not isinstance(message, dict):
        return Undecodable(
            position, raw, key, f"value is JSON {type(message).__name__}, expected an object"
        )
    command_id = message.get("commandId")
    tenant_id = message.get("tenantId")
    if not isinstance(command_id, str) or not command_id:
        return Undecodable(position, raw, key, "commandId is missing or not a string")
    if not isinstance(tenant_id, str) or not tenant_id:
        return Undecodable(position, raw, key, "tenantId is missing or not a string")
    return Decoded(position, message, command_id, tenant_id)
