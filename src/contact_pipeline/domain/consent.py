"""Consent and send-record payloads, as in ``schemas/``."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from contact_pipeline.domain.contact import ID_PATTERN

Channel = Literal["email", "sms", "social"]
ConsentSource = Literal["form", "api", "import", "integration", "manual", "double_opt_in"]
LegalBasis = Literal[
    "consent",
    "contract",
    "legal_obligation",
    "vital_interests",
    "public_task",
    "legitimate_interests",
]
CHANNELS: tuple[Channel, ...] = ("email", "sms", "social")


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class _ConsentChange(_Model):
    contact_id: str = Field(min_length=1, max_length=64, pattern=ID_PATTERN)
    channel: Channel
    list_id: str | None = Field(default=None, min_length=1, max_length=64, pattern=ID_PATTERN)
    source: ConsentSource
    ip_address: str | None = Field(default=None, max_length=45)
    user_agent: str | None = Field(default=None, max_length=500)
    at: datetime | None = None


class ConsentGrant(_ConsentChange):
    """Payload of consent.grant."""

    legal_basis: LegalBasis
    notice_id: str = Field(min_length=1, max_length=200)


class ConsentWithdraw(_ConsentChange):
    """Payload of consent.withdraw."""

    reason: str | None = Field(default=None, max_length=500)


class MessageSent(_Model):
    """Payload of message.sent."""

    contact_id: str = Field(min_length=1, max_length=64, pattern=ID_PATTERN)
    list_id: str = Field(min_length=1, max_length=64, pattern=ID_PATTERN)
    channel: Channel
    message_id: str | None = Field(default=None, min_length=1, max_length=200)
    sent_at: datetime | None = None
