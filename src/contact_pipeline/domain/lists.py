"""List and membership models: the payloads producers send, as in ``schemas/``.

A list is its own document. A contact's memberships live inside the contact
document (``lists``, keyed by list id), so a membership change and the contact
change that caused it are one write, ordered with everything else about the
contact on its partition.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from contact_pipeline.domain.contact import ID_PATTERN, Frequency

ListType = Literal["static", "dynamic"]
Visibility = Literal["public", "private"]
Channel = Literal["email", "sms", "social"]
MembershipStatus = Literal["active", "pending", "unsubscribed"]
MembershipSource = Literal["manual", "import", "dynamic", "integration"]


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class CommunicationMethod(_Model):
    """The channel a list sends on, with channel-specific settings."""

    type: Channel
    settings: dict[str, Any] | None = Field(default=None, max_length=50)


class Integration(_Model):
    """An external system the list syncs with."""

    external_system: str = Field(min_length=1, max_length=100)
    sync_direction: Literal["push", "pull", "bidirectional"]
    mapping: dict[str, str] | None = Field(default=None, max_length=200)


class ListFields(_Model):
    """Writable list fields; list.update sends them as a JSON merge patch."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    criteria: dict[str, Any] | None = None
    communication_method: CommunicationMethod | None = None
    integrations: list[Integration] | None = Field(default=None, max_length=20)
    tags: list[str] | None = Field(default=None, max_length=100)
    visibility: Visibility | None = None
    require_confirmation: bool | None = None


class ListCreate(ListFields):
    """Payload of list.create."""

    list_id: str = Field(min_length=1, max_length=64, pattern=ID_PATTERN)
    name: str = Field(min_length=1, max_length=200)
    type: ListType


class ListUpdate(_Model):
    """Payload of list.update."""

    list_id: str = Field(min_length=1, max_length=64, pattern=ID_PATTERN)
    expected_version: int | None = Field(default=None, ge=1)
    changes: ListFields


class ListDelete(_Model):
    """Payload of list.delete."""

    list_id: str = Field(min_length=1, max_length=64, pattern=ID_PATTERN)
    expected_version: int | None = Field(default=None, ge=1)


class ChannelOverrides(_Model):
    """Per-membership channel switches; a missing value falls back to the contact's."""

    email: bool | None = None
    sms: bool | None = None
    social: bool | None = None


class MembershipPreferences(_Model):
    """Overrides of the contact's preferences for one list."""

    communication_channels: ChannelOverrides | None = None
    frequency: Frequency | None = None


class MembershipAdd(_Model):
    """Payload of membership.add."""

    contact_id: str = Field(min_length=1, max_length=64, pattern=ID_PATTERN)
    list_id: str = Field(min_length=1, max_length=64, pattern=ID_PATTERN)
    source: Literal["manual", "import", "integration"] | None = None
    notes: str | None = Field(default=None, max_length=2000)
    preferences: MembershipPreferences | None = None


class MembershipRemove(_Model):
    """Payload of membership.remove."""

    contact_id: str = Field(min_length=1, max_length=64, pattern=ID_PATTERN)
    list_id: str = Field(min_length=1, max_length=64, pattern=ID_PATTERN)
    notes: str | None = Field(default=None, max_length=2000)


class MembershipUnsubscribe(_Model):
    """Payload of membership.unsubscribe."""

    contact_id: str = Field(min_length=1, max_length=64, pattern=ID_PATTERN)
    list_id: str = Field(min_length=1, max_length=64, pattern=ID_PATTERN)
    reason: str | None = Field(default=None, max_length=500)


class MembershipConfirm(_Model):
    """Payload of membership.confirm."""

    contact_id: str = Field(min_length=1, max_length=64, pattern=ID_PATTERN)
    list_id: str = Field(min_length=1, max_length=64, pattern=ID_PATTERN)
    token: str = Field(min_length=1, max_length=1000)


class MembershipEvaluate(_Model):
    """Payload of membership.evaluate, which the backfill sends."""

    contact_id: str = Field(min_length=1, max_length=64, pattern=ID_PATTERN)
    list_id: str = Field(min_length=1, max_length=64, pattern=ID_PATTERN)
    backfill_id: str = Field(min_length=1, max_length=200)


DEFAULT_COMMUNICATION_METHOD = {"type": "email", "settings": {}}
DEFAULT_VISIBILITY = "private"
