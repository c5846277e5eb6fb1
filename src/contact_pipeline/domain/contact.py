"""Contact models: the writable fields that producers send and the stored document.

Field names follow the JSON contract (camelCase) through aliases, so
``model_dump(by_alias=True)`` produces what the schemas in ``schemas/``
describe. ``tests/unit/test_models_match_schemas.py`` checks that the two agree.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

Status = Literal["active", "inactive", "unsubscribed"]
Frequency = Literal["daily", "weekly", "monthly", "quarterly"]
Source = Literal["manual", "import", "form", "integration"]
CustomValue = str | int | float | bool | list[str] | None

FIELD_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
ID_PATTERN = r"^[A-Za-z0-9_-]+$"


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class SocialProfiles(_Model):
    """Links to the contact's public profiles."""

    linkedin: str | None = Field(default=None, max_length=500)
    github: str | None = Field(default=None, max_length=500)


class CommunicationChannels(_Model):
    """Channels the contact accepts messages on."""

    email: bool | None = None
    sms: bool | None = None
    social: bool | None = None


class Preferences(_Model):
    """Channels, frequency and time zone the contact chose for messages."""

    communication_channels: CommunicationChannels | None = None
    frequency: Frequency | None = None
    timezone: str | None = Field(default=None, min_length=1, max_length=64)


class Metadata(_Model):
    """Source and tags of the contact."""

    source: Source | None = None
    tags: list[str] | None = Field(default=None, max_length=100)
    last_engagement: datetime | None = None


class ContactFields(_Model):
    """Writable contact fields; every field is optional here.

    contact.create requires ``email`` on top of this, and contact.update sends
    these fields as a JSON merge patch.
    """

    first_name: str | None = Field(default=None, max_length=200)
    last_name: str | None = Field(default=None, max_length=200)
    title: str | None = Field(default=None, max_length=200)
    company: str | None = Field(default=None, max_length=200)
    email: str | None = Field(default=None, min_length=1, max_length=320)
    phone: str | None = Field(default=None, max_length=64)
    social_profiles: SocialProfiles | None = None
    status: Status | None = None
    preferences: Preferences | None = None
    metadata: Metadata | None = None
    custom_fields: dict[str, CustomValue] | None = Field(default=None, max_length=100)


class ContactCreate(ContactFields):
    """Payload of contact.create."""

    contact_id: str = Field(min_length=1, max_length=64, pattern=ID_PATTERN)
    email: str = Field(min_length=1, max_length=320)
    if_exists: Literal["reject", "merge"] = "reject"


class ContactUpdate(_Model):
    """Payload of contact.update: a merge patch of contact fields."""

    contact_id: str = Field(min_length=1, max_length=64, pattern=ID_PATTERN)
    expected_version: int | None = Field(default=None, ge=1)
    changes: ContactFields


class ContactDelete(_Model):
    """Payload of contact.delete."""

    contact_id: str = Field(min_length=1, max_length=64, pattern=ID_PATTERN)
    expected_version: int | None = Field(default=None, ge=1)


DEFAULT_PREFERENCES = {
    "communicationChannels": {"email": True, "sms": False, "social": False},
    "frequency": "weekly",
    "timezone": "UTC",
}
"""Preferences of a new contact for every value its create command leaves out."""
