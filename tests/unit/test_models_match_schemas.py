"""The pydantic models and the JSON Schemas describe the same fields, enums and required keys."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from contact_pipeline.domain.commands import PAYLOAD_MODELS, Envelope
from contact_pipeline.domain.contact import (
    ContactCreate,
    ContactDelete,
    ContactFields,
    ContactUpdate,
)
from contact_pipeline.domain.lists import ListFields
from contact_pipeline.schemas import COMMAND_TYPES, load_schemas
from tests.factories import command, create

SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "schemas"


def schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS_DIR / name).read_text(encoding="utf-8"))


def payload_schema(command_type: str) -> dict[str, Any]:
    """Return the payload schema of a command with its allOf parts merged in."""
    node = schema(f"{command_type}.json")["properties"]["payload"]
    merged = {
        "properties": dict(node.get("properties", {})),
        "required": list(node.get("required", [])),
    }
    for part in node.get("allOf", []):
        referenced = schema(part["$ref"])
        merged["properties"].update(referenced["properties"])
    for name, child in merged["properties"].items():
        if child.get("$ref", "").endswith(".json"):
            merged["properties"][name] = schema(child["$ref"])
    return merged


def model_properties(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema(by_alias=True)


def resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        return root["$defs"][node["$ref"].split("/")[-1]]
    for option in node.get("anyOf", []):
        if option.get("type") != "null":
            return resolve(option, root)
    return node


def enums(node: dict[str, Any], root: dict[str, Any]) -> set[Any] | None:
    node = resolve(node, root)
    if "enum" in node:
        return set(node["enum"])
    if "const" in node:
        return {node["const"]}
    return None


def compare(
    json_node: dict[str, Any], model_node: dict[str, Any], root: dict[str, Any], path: str
) -> list[str]:
    problems = []
    json_props = json_node.get("properties", {})
    model_props = model_node.get("properties", {})
    if set(json_props) != set(model_props):
        problems.append(f"{path}: schema has {sorted(json_props)}, model has {sorted(model_props)}")
    for name in set(json_props) & set(model_props):
        child_json = json_props[name]
        child_model = resolve(model_props[name], root)
        if enums(child_json, {}) != enums(model_props[name], root):
            problems.append(f"{path}.{name}: enum differs")
        if "properties" in child_json:
            problems += compare(child_json, child_model, root, f"{path}.{name}")
    return problems


@pytest.mark.parametrize(
    ("model", "json_node"),
    [
        (ContactFields, schema("contact-fields.json")),
        (ContactCreate, payload_schema("contact.create")),
        (ContactUpdate, payload_schema("contact.update")),
        (ContactDelete, payload_schema("contact.delete")),
        (ListFields, schema("list-fields.json")),
        *[
            (PAYLOAD_MODELS[name], payload_schema(name))
            for name in COMMAND_TYPES
            if not name.startswith("contact.")
        ],
    ],
    ids=[
        "fields",
        "create",
        "update",
        "delete",
        "list-fields",
        *[name for name in COMMAND_TYPES if not name.startswith("contact.")],
    ],
)
def test_model_fields_match_schema(model, json_node):
    root = model_properties(model)
    assert compare(json_node, root, root, model.__name__) == []


@pytest.mark.parametrize("command_type", COMMAND_TYPES)
def test_required_payload_fields_match(command_type):
    model = PAYLOAD_MODELS[command_type]
    required_in_model = set(model_properties(model).get("required", []))
    assert required_in_model == set(payload_schema(command_type)["required"])


def test_envelope_fields_match_schema():
    envelope = schema("envelope.json")
    root = model_properties(Envelope)
    assert set(root["properties"]) == set(envelope["properties"])
    assert set(root["required"]) == set(envelope["required"])


SAMPLES = [
    command("contact.create", create("c1", "a@example.com")),
    command("contact.create", create("c1", "a@example.com", status="paused")),
    command("contact.create", create("c1", "a@example.com", preferences={"frequency": "yearly"})),
    command(
        "contact.create", create("c1", "a@example.com", customFields={"score": 3, "tags": ["a"]})
    ),
    command("contact.create", create("c1", "a@example.com", socialProfiles={"twitter": "x"})),
    command(
        "contact.create", create("c1", "a@example.com", metadata={"tags": ["x"], "source": "form"})
    ),
    command("contact.create", {"email": "a@example.com"}),
    command("contact.update", {"contactId": "c1", "changes": {"title": None, "company": "Acme"}}),
    command("contact.update", {"contactId": "c1", "expectedVersion": 0, "changes": {"title": "x"}}),
    command("contact.update", {"contactId": "c1", "changes": {"firstName": 5}}),
    command("contact.delete", {"contactId": "c1", "expectedVersion": 2}),
    command("contact.delete", {"contactId": "c1", "extra": True}),
    command("list.create", {"listId": "l1", "name": "News", "type": "static"}),
    command("list.create", {"listId": "l1", "name": "News", "type": "smart"}),
    command("list.create", {"listId": "l1", "name": "", "type": "static"}),
    command(
        "list.create",
        {"listId": "l1", "name": "N", "type": "static", "communicationMethod": {"type": "fax"}},
    ),
    command(
        "list.create",
        {
            "listId": "l1",
            "name": "N",
            "type": "static",
            "integrations": [{"externalSystem": "mailchimp", "syncDirection": "push"}],
        },
    ),
    command("list.update", {"listId": "l1", "changes": {"visibility": "public"}}),
    command("list.update", {"listId": "l1", "changes": {"type": "dynamic"}}),
    command("list.delete", {"listId": "l1"}),
    command("membership.add", {"contactId": "c1", "listId": "l1", "source": "import"}),
    command("membership.add", {"contactId": "c1", "listId": "l1", "source": "dynamic"}),
    command(
        "membership.add",
        {"contactId": "c1", "listId": "l1", "preferences": {"frequency": "hourly"}},
    ),
    command("membership.remove", {"contactId": "c1", "listId": "l1", "notes": "left company"}),
    command("membership.unsubscribe", {"contactId": "c1", "listId": "l 1"}),
    command("membership.evaluate", {"contactId": "c1", "listId": "l1", "backfillId": "bf-1"}),
]


@pytest.mark.parametrize("message", SAMPLES, ids=range(len(SAMPLES)))
def test_schema_and_model_accept_same_samples(message):
    schema_accepts = not load_schemas(SCHEMAS_DIR).validate(message)
    model = PAYLOAD_MODELS[message["type"]]
    try:
        model.model_validate(message["payload"])
        model_accepts = True
    except ValidationError:
        model_accepts = False
    assert schema_accepts == model_accepts
