"""Validation of commands against the JSON Schemas in ``schemas/``.

The JSON Schemas are the public contract for producers; every message is
checked against the schema of its command type before anything else reads it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema_rs
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError as SchemaValidationError
from referencing import Registry, Resource

CONTACT_COMMAND_TYPES = (
    "contact.create",
    "contact.update",
    "contact.delete",
    "membership.add",
    "membership.remove",
    "membership.unsubscribe",
    "membership.evaluate",
    "membership.confirm",
    "consent.grant",
    "consent.withdraw",
    "message.sent",
)
"""Command types of the contact-commands topic, all keyed by tenant and contact."""

LIST_COMMAND_TYPES = ("list.create", "list.update", "list.delete")
"""Command types of the list-commands topic, keyed by tenant and list."""

COMMAND_TYPES = CONTACT_COMMAND_TYPES + LIST_COMMAND_TYPES


@dataclass(frozen=True)
class SchemaProblem:
    """One schema violation, with the JSON path of the offending value."""

    field: str
    value: Any
    reason: str


class CommandSchemas:
    """Validators for every command type, built once from a schemas folder."""

    def __init__(self, schemas_dir: Path) -> None:
        if not schemas_dir.is_dir():
            raise FileNotFoundError(
                f"schemas folder not found: {schemas_dir}; "
                "set CONTACT_PIPELINE_SCHEMAS_DIR to the project's schemas/ folder"
            )
        resources = []
        for path in sorted(schemas_dir.glob("*.json")):
            document = json.loads(path.read_text(encoding="utf-8"))
            resources.append((path.name, Resource.from_contents(document)))
            resources.append((document["$id"], Resource.from_contents(document)))
        registry: Registry = Registry().with_resources(resources)
        documents = [resource.contents for _, resource in resources]
        fast_registry = jsonschema_rs.Registry(
            [(document["$id"], document) for document in documents]
        )
        self._fast: dict[str, Any] = {}

        self._validators: dict[str, Draft202012Validator] = {}
        for command_type in COMMAND_TYPES:
            schema = registry.contents(f"{command_type}.json")
            self._validators[command_type] = Draft202012Validator(
                schema,
                registry=registry,
                format_checker=Draft202012Validator.FORMAT_CHECKER,
            )
            self._fast[command_type] = jsonschema_rs.validator_for(
                schema, registry=fast_registry, validate_formats=True
            )
        self._envelope = Draft202012Validator(
            registry.contents("envelope.json"),
            registry=registry,
            format_checker=Draft202012Validator.FORMAT_CHECKER,
        )

    def validate(self, message: dict[str, Any]) -> list[SchemaProblem]:
        """Return every schema violation of a command, or an empty list if it is valid."""
        command_type = message.get("type")
        validator = self._validators.get(command_type) if isinstance(command_type, str) else None
        if validator is None:
            problems = _problems(self._envelope, message)
            known = ", ".join(COMMAND_TYPES)
            problems.append(
                SchemaProblem(
                    field="type",
                    value=command_type,
                    reason=f"unknown command type; expected one of {known}",
                )
            )
            return problems
        # The compiled validator decides, in microseconds; the reference implementation
        # only runs for invalid messages, because its errors are easier to report.
        fast = self._fast[command_type]
        if fast.is_valid(message):
            return []
        problems = _problems(validator, message)
        if problems:
            return problems
        first = next(iter(fast.iter_errors(message)))
        path = ".".join(str(part) for part in first.instance_path)
        return [SchemaProblem(field=path or "(message)", value=None, reason=first.message)]


def _problems(validator: Draft202012Validator, message: dict[str, Any]) -> list[SchemaProblem]:
    errors = sorted(validator.iter_errors(message), key=lambda error: list(error.absolute_path))
    leaves = _leaf_errors(errors)
    # A failing allOf branch leaves its properties "unevaluated", so they would be
    # reported as unknown; report such names only when nothing else failed.
    others = [error for error in leaves if error.validator != "unevaluatedProperties"]
    return [_to_problem(error) for error in (others or leaves)]


def _leaf_errors(errors: list[SchemaValidationError]) -> list[SchemaValidationError]:
    # allOf/anyOf wrap the useful error in a context; report the innermost ones.
    leaves: list[SchemaValidationError] = []
    for error in errors:
        if error.context and error.validator != "anyOf":
            leaves.extend(_leaf_errors(list(error.context)))
        else:
            leaves.append(error)
    return leaves


def _to_problem(error: SchemaValidationError) -> SchemaProblem:
    path = ".".join(str(part) for part in error.absolute_path)
    field = path
    value = error.instance
    reason = error.message
    if error.validator in ("additionalProperties", "unevaluatedProperties"):
        unexpected = _unexpected_names(error)
        if unexpected:
            field = ".".join(filter(None, [path, unexpected[0]]))
            value = error.instance.get(unexpected[0]) if isinstance(error.instance, dict) else None
            reason = "unknown field; remove it or check its spelling against the schema"
    elif error.validator == "required":
        missing = str(error.message).split("'")[1] if "'" in error.message else ""
        field = ".".join(filter(None, [path, missing]))
        value = None
        reason = "required field is missing"
    elif "propertyNames" in error.schema_path:
        reason = (
            "invalid custom field name; use up to 64 letters, digits and underscores, "
            "starting with a letter or underscore"
        )
    elif error.validator == "type":
        expected = error.validator_value
        expected_text = " or ".join(expected) if isinstance(expected, list) else expected
        reason = f"expected {expected_text}, got {_json_type(value)}"
    if isinstance(value, dict | list):
        value = _shorten(value)
    return SchemaProblem(field=field or "(message)", value=value, reason=reason)


def _unexpected_names(error: SchemaValidationError) -> list[str]:
    if not isinstance(error.instance, dict):
        return []
    if error.validator == "unevaluatedProperties":
        # Properties matched through allOf are evaluated elsewhere, so the schema's own
        # "properties" cannot tell them apart; the message quotes the unexpected names.
        return [part for part in error.message.split("'")[1::2] if part in error.instance]
    known = set(error.schema.get("properties", {}))
    return [name for name in error.instance if name not in known]


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _shorten(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 200 else text[:197] + "..."


@lru_cache(maxsize=4)
def load_schemas(schemas_dir: Path) -> CommandSchemas:
    """Return the validators for a schemas folder, built once per process."""
    return CommandSchemas(schemas_dir)
