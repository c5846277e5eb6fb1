"""Turn a decoded message into a validated, normalised contact command, or a list of problems."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from contact_pipeline.domain.commands import PAYLOAD_MODELS, Decoded, Envelope
from contact_pipeline.domain.errors import FieldError
from contact_pipeline.domain.normalize import (
    email_key,
    normalize_email,
    normalize_phone,
    normalize_timezone,
    normalize_url,
)
from contact_pipeline.handlers.contacts import ContactCommand
from contact_pipeline.schemas import CONTACT_COMMAND_TYPES, LIST_COMMAND_TYPES, CommandSchemas
from contact_pipeline.store.mongo import to_utc_millis


class InvalidCommand(Exception):
    """A command failed its schema or a field failed normalisation; it is rejected."""

    retriable = False

    def __init__(self, code: str, message: str, errors: list[dict[str, Any]]) -> None:
        self.code = code
        self.message = message
        self.errors = errors
        super().__init__(message)


def validate_command(decoded: Decoded, schemas: CommandSchemas) -> ContactCommand:
    """Validate a decoded message against its schema and normalise its contact fields.

    Raises :class:`InvalidCommand` listing every problem found, each with the
    field path, the value and the reason.
    """
    check_topic(decoded, CONTACT_COMMAND_TYPES, "contact-commands")
    envelope, payload = parse_envelope(decoded, schemas)

    if envelope.type.split(".")[0] in ("membership", "consent", "message"):
        fields = {
            key: value
            for key, value in envelope.payload.items()
            if key not in ("contactId", "listId")
        }
        for name in ("at", "sentAt"):
            if isinstance(fields.get(name), str):
                fields[name] = to_utc_millis(fields[name])
        return ContactCommand(
            envelope=envelope,
            contact_id=envelope.payload["contactId"],
            fields=fields,
            list_id=envelope.payload.get("listId"),
        )

    if envelope.type == "contact.update":
        fields = envelope.payload["changes"]
        prefix = "payload.changes."
    elif envelope.type == "contact.create":
        fields = {
            key: value
            for key, value in envelope.payload.items()
            if key not in ("contactId", "ifExists")
        }
        prefix = "payload."
    else:
        fields = {}
        prefix = "payload."

    normalised, key, errors = normalise_fields(fields, prefix)
    if errors:
        first = errors[0]
        raise InvalidCommand(
            "invalid_value",
            f"{first.field}: {first.reason}",
            [error.to_dict() for error in errors],
        )

    return ContactCommand(
        envelope=envelope,
        contact_id=payload.contact_id,  # type: ignore[attr-defined]
        fields=normalised,
        email_key=key,
        expected_version=getattr(payload, "expected_version", None),
        if_exists=getattr(payload, "if_exists", "reject"),
    )


def check_topic(decoded: Decoded, allowed: tuple[str, ...], topic: str) -> None:
    """Reject a known command type sent to the wrong topic, naming the right one."""
    command_type = decoded.message.get("type")
    if command_type in allowed or command_type not in CONTACT_COMMAND_TYPES + LIST_COMMAND_TYPES:
        return
    right = "list-commands" if command_type in LIST_COMMAND_TYPES else "contact-commands"
    raise InvalidCommand(
        "wrong_topic",
        f"{command_type} commands belong on the {right} topic, not {topic}; send it there",
        [{"field": "type", "value": command_type, "reason": f"send it to {right}"}],
    )


def parse_envelope(decoded: Decoded, schemas: CommandSchemas) -> tuple[Envelope, BaseModel]:
    """Check a command against its schema and return its envelope and payload model.

    Raises :class:`InvalidCommand` listing every problem found, each with the
    field path, the value and the reason.
    """
    problems = schemas.validate(decoded.message)
    if problems:
        errors = [{"field": p.field, "value": p.value, "reason": p.reason} for p in problems]
        first = problems[0]
        raise InvalidCommand(
            "invalid_command",
            f"command does not match its schema: {first.field}: {first.reason}",
            errors,
        )

    try:
        envelope = Envelope.model_validate(decoded.message)
        payload = PAYLOAD_MODELS[envelope.type].model_validate(envelope.payload)
    except ValidationError as exc:
        # The JSON Schema and the models agree (a unit test checks it), so this
        # only happens when they drift apart.
        errors = [
            {"field": ".".join(map(str, err["loc"])), "value": None, "reason": err["msg"]}
            for err in exc.errors()
        ]
        raise InvalidCommand("invalid_command", "command failed model validation", errors) from exc
    return envelope, payload


def normalise_fields(
    fields: dict[str, Any], prefix: str = ""
) -> tuple[dict[str, Any], str | None, list[FieldError]]:
    """Normalise e-mail, phone, time zone and profile URLs; collect every invalid value.

    Returns the normalised copy, the e-mail uniqueness key (if an e-mail is
    present) and the errors, whose field paths start with ``prefix``.
    """
    result = dict(fields)
    errors: list[FieldError] = []
    key: str | None = None

    if isinstance(result.get("email"), str):
        try:
            result["email"] = normalize_email(result["email"], field=f"{prefix}email")
            key = email_key(result["email"])
        except FieldError as exc:
            errors.append(exc)

    if isinstance(result.get("phone"), str):
        phone = result["phone"].strip()
        try:
            result["phone"] = normalize_phone(phone, field=f"{prefix}phone") if phone else None
        except FieldError as exc:
            errors.append(exc)

    preferences = result.get("preferences")
    if isinstance(preferences, dict) and isinstance(preferences.get("timezone"), str):
        preferences = dict(preferences)
        try:
            preferences["timezone"] = normalize_timezone(
                preferences["timezone"], field=f"{prefix}preferences.timezone"
            )
        except FieldError as exc:
            errors.append(exc)
        result["preferences"] = preferences

    metadata = result.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("lastEngagement"), str):
        # Stored as a date, so criteria compare it with other dates, not as text.
        metadata = dict(metadata)
        metadata["lastEngagement"] = to_utc_millis(metadata["lastEngagement"])
        result["metadata"] = metadata

    profiles = result.get("socialProfiles")
    if isinstance(profiles, dict):
        profiles = dict(profiles)
        for name, url in profiles.items():
            if not isinstance(url, str):
                continue
            try:
                profiles[name] = normalize_url(url, field=f"{prefix}socialProfiles.{name}")
            except FieldError as exc:
                errors.append(exc)
        result["socialProfiles"] = profiles

    return result, key, errors
