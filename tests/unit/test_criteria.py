"""Criteria of dynamic lists: parsing errors, evaluation, queries and the JSON round trip."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from contact_pipeline.domain.criteria import (
    MAX_CONDITIONS,
    MAX_DEPTH,
    MAX_IN_VALUES,
    Condition,
    Group,
    criteria_to_json,
    matches,
    parse_criteria,
    referenced_fields,
    to_query,
)
from contact_pipeline.domain.errors import FieldError


def one(field: Any, operator: str, value: Any) -> dict[str, Any]:
    """Return criteria JSON with a single condition."""
    return {"logic": "and", "conditions": [{"field": field, "operator": operator, "value": value}]}


def first_condition(criteria: Group) -> Condition:
    condition = criteria.conditions[0]
    assert isinstance(condition, Condition)
    return condition


def rejection(raw: Any) -> FieldError:
    with pytest.raises(FieldError) as caught:
        parse_criteria(raw)
    assert caught.value.code == "invalid_criteria"
    return caught.value


CONTACT: dict[str, Any] = {
    "_id": "acme:c1",
    "id": "c1",
    "tenantId": "acme",
    "firstName": "Anna",
    "lastName": "Kowalski",
    "company": "Acme GmbH",
    "email": "anna@example.com",
    "status": "active",
    "preferences": {
        "communicationChannels": {"email": True, "sms": False, "social": False},
        "frequency": "weekly",
        "timezone": "Europe/Berlin",
    },
    "metadata": {
        "createdAt": datetime(2026, 1, 15, 9, 30, tzinfo=UTC),
        "updatedAt": datetime(2026, 2, 1, 12, 0, 0, 123000, tzinfo=UTC),
        "source": "import",
        "tags": ["VIP-customer", "newsletter"],
    },
    "customFields": {"score": 72, "plan": "pro", "beta": True, "regions": ["EMEA", "APAC"]},
    "version": 3,
}


# --- Parsing errors ----------------------------------------------------------------------

INVALID_CRITERIA = [
    pytest.param(
        ["not", "an", "object"],
        "payload.criteria",
        ["not", "an", "object"],
        "group object",
        id="top-level-array",
    ),
    pytest.param(
        {"field": "company", "operator": "equals", "value": "Acme"},
        "payload.criteria",
        {"field": "company", "operator": "equals", "value": "Acme"},
        "wrap the condition",
        id="top-level-condition",
    ),
    pytest.param(
        {"conditions": [{"field": "company", "operator": "exists", "value": True}]},
        "payload.criteria.logic",
        None,
        'add "logic"',
        id="missing-logic",
    ),
    pytest.param(
        {"logic": "AND", "conditions": [{"field": "company", "operator": "exists", "value": True}]},
        "payload.criteria.logic",
        "AND",
        '"and" or "or"',
        id="unknown-logic",
    ),
    pytest.param(
        {"logic": "and", "conditions": []},
        "payload.criteria.conditions",
        [],
        "non-empty array",
        id="empty-conditions",
    ),
    pytest.param(
        {"logic": "and", "conditions": {"field": "company"}},
        "payload.criteria.conditions",
        {"field": "company"},
        "non-empty array",
        id="conditions-not-array",
    ),
    pytest.param(
        {"logic": "and", "conditions": [], "limit": 5},
        "payload.criteria.limit",
        5,
        "unknown key 'limit'",
        id="unknown-group-key",
    ),
    pytest.param(
        {"logic": "and", "conditions": ["company"]},
        "payload.criteria.conditions[0]",
        "company",
        "expected a condition",
        id="condition-not-object",
    ),
    pytest.param(
        {
            "logic": "and",
            "conditions": [
                {"field": "company", "operator": "exists", "value": True, "negate": True}
            ],
        },
        "payload.criteria.conditions[0].negate",
        True,
        "unknown key 'negate'",
        id="unknown-condition-key",
    ),
    pytest.param(
        {"logic": "and", "conditions": [{"operator": "exists", "value": True}]},
        "payload.criteria.conditions[0].field",
        None,
        "missing field",
        id="missing-field",
    ),
    pytest.param(
        {"logic": "and", "conditions": [{"field": "company", "value": "Acme"}]},
        "payload.criteria.conditions[0].operator",
        None,
        "missing operator",
        id="missing-operator",
    ),
    pytest.param(
        {"logic": "and", "conditions": [{"field": "company", "operator": "equals"}]},
        "payload.criteria.conditions[0].value",
        None,
        "missing value",
        id="missing-value",
    ),
    pytest.param(
        {
            "logic": "and",
            "conditions": [
                {"field": "company", "operator": "exists", "value": True, "logic": "or"}
            ],
        },
        "payload.criteria.conditions[0]",
        {"field": "company", "operator": "exists", "value": True, "logic": "or"},
        "not both",
        id="condition-and-group",
    ),
    pytest.param(
        one("score", "equals", 5),
        "payload.criteria.conditions[0].field",
        "score",
        "customFields.<name>",
        id="unknown-field",
    ),
    pytest.param(
        one(7, "equals", 5),
        "payload.criteria.conditions[0].field",
        7,
        "must be a string",
        id="field-not-string",
    ),
    pytest.param(
        one("customFields.2fast", "equals", 5),
        "payload.criteria.conditions[0].field",
        "customFields.2fast",
        "does not start with a digit",
        id="custom-name-digit",
    ),
    pytest.param(
        one("customFields.a.b", "equals", 5),
        "payload.criteria.conditions[0].field",
        "customFields.a.b",
        "letters, digits or underscores",
        id="custom-name-dot",
    ),
    pytest.param(
        one("company", "startsWith", "Ac"),
        "payload.criteria.conditions[0].operator",
        "startsWith",
        "equals, contains, greaterThan, lessThan, in, notIn, exists",
        id="unknown-operator",
    ),
    pytest.param(
        one("company", "greaterThan", "A"),
        "payload.criteria.conditions[0].operator",
        "greaterThan",
        "use one of equals, contains, in, notIn, exists",
        id="greater-than-on-string",
    ),
    pytest.param(
        one("preferences.communicationChannels.sms", "contains", "t"),
        "payload.criteria.conditions[0].operator",
        "contains",
        "boolean field",
        id="contains-on-boolean",
    ),
    pytest.param(
        one("version", "contains", "1"),
        "payload.criteria.conditions[0].operator",
        "contains",
        "number field",
        id="contains-on-number",
    ),
    pytest.param(
        one("company", "equals", None),
        "payload.criteria.conditions[0].value",
        None,
        "exists operator with false",
        id="equals-null",
    ),
    pytest.param(
        one("company", "equals", 5),
        "payload.criteria.conditions[0].value",
        5,
        "give a string",
        id="equals-number-on-string",
    ),
    pytest.param(
        one("company", "equals", ["Acme"]),
        "payload.criteria.conditions[0].value",
        ["Acme"],
        "give a string",
        id="equals-array",
    ),
    pytest.param(
        one("status", "equals", "deleted"),
        "payload.criteria.conditions[0].value",
        "deleted",
        "active, inactive, unsubscribed",
        id="enum-value",
    ),
    pytest.param(
        one("preferences.communicationChannels.email", "equals", "true"),
        "payload.criteria.conditions[0].value",
        "true",
        "use true or false",
        id="boolean-as-string",
    ),
    pytest.param(
        one("version", "equals", True),
        "payload.criteria.conditions[0].value",
        True,
        "expected a number",
        id="boolean-as-number",
    ),
    pytest.param(
        one("version", "greaterThan", float("nan")),
        "payload.criteria.conditions[0].value",
        float("nan"),
        "finite number",
        id="nan",
    ),
    pytest.param(
        one("version", "lessThan", 2**64),
        "payload.criteria.conditions[0].value",
        2**64,
        "64 bits",
        id="integer-too-large",
    ),
    pytest.param(
        one("customFields.plan", "equals", {"tier": "pro"}),
        "payload.criteria.conditions[0].value",
        {"tier": "pro"},
        "string, a number or a boolean",
        id="custom-object",
    ),
    pytest.param(
        one("customFields.score", "greaterThan", True),
        "payload.criteria.conditions[0].value",
        True,
        "number or a string",
        id="custom-greater-than-boolean",
    ),
    pytest.param(
        one("company", "contains", ""),
        "payload.criteria.conditions[0].value",
        "",
        "non-empty string",
        id="contains-empty",
    ),
    pytest.param(
        one("tags", "contains", ["vip"]),
        "payload.criteria.conditions[0].value",
        ["vip"],
        "non-empty string",
        id="contains-array",
    ),
    pytest.param(
        one("metadata.createdAt", "greaterThan", "2026-01-31T10:00:00"),
        "payload.criteria.conditions[0].value",
        "2026-01-31T10:00:00",
        "add one such as Z",
        id="date-without-zone",
    ),
    pytest.param(
        one("metadata.createdAt", "lessThan", "31.01.2026"),
        "payload.criteria.conditions[0].value",
        "31.01.2026",
        "ISO-8601",
        id="date-not-iso",
    ),
    pytest.param(
        one("metadata.createdAt", "lessThan", "2026-02-30"),
        "payload.criteria.conditions[0].value",
        "2026-02-30",
        "invalid date",
        id="date-impossible",
    ),
    pytest.param(
        one("metadata.lastEngagement", "equals", 1767225600),
        "payload.criteria.conditions[0].value",
        1767225600,
        "expected a date",
        id="date-as-number",
    ),
    pytest.param(
        one("status", "in", "active"),
        "payload.criteria.conditions[0].value",
        "active",
        "non-empty array",
        id="in-not-array",
    ),
    pytest.param(
        one("status", "notIn", []),
        "payload.criteria.conditions[0].value",
        [],
        "non-empty array",
        id="not-in-empty",
    ),
    pytest.param(
        one("status", "in", ["active", "gone"]),
        "payload.criteria.conditions[0].value[1]",
        "gone",
        "active, inactive, unsubscribed",
        id="in-bad-element",
    ),
    pytest.param(
        one("company", "in", [str(i) for i in range(MAX_IN_VALUES + 1)]),
        "payload.criteria.conditions[0].value",
        f"array of {MAX_IN_VALUES + 1} values",
        "at most 500 values",
        id="in-too-many",
    ),
    pytest.param(
        one("phone", "exists", "yes"),
        "payload.criteria.conditions[0].value",
        "yes",
        "true (field present) or false",
        id="exists-not-boolean",
    ),
    pytest.param(
        one("company", "equals", "x" * 1001),
        "payload.criteria.conditions[0].value",
        "x" * 50 + "...",
        "at most 1000 characters",
        id="string-too-long",
    ),
]


@pytest.mark.parametrize(("raw", "path", "value", "reason"), INVALID_CRITERIA)
def test_parse_rejects_invalid_criteria(raw: Any, path: str, value: Any, reason: str) -> None:
    error = rejection(raw)

    assert error.field == path
    if isinstance(value, float) and value != value:
        assert error.value != error.value
    else:
        assert error.value == value
    assert reason in error.reason


def test_parse_names_nested_path() -> None:
    raw = {
        "logic": "and",
        "conditions": [
            {"field": "company", "operator": "exists", "value": True},
            {
                "logic": "or",
                "conditions": [{"field": "phone", "operator": "matches", "value": "+49"}],
            },
        ],
    }

    error = rejection(raw)

    assert error.field == "payload.criteria.conditions[1].conditions[0].operator"
    assert error.value == "matches"


def test_parse_uses_given_field_prefix() -> None:
    with pytest.raises(FieldError) as caught:
        parse_criteria(one("phone", "exists", 1), field="payload.list.criteria")

    assert caught.value.field == "payload.list.criteria.conditions[0].value"


def nested(levels: int) -> dict[str, Any]:
    group: dict[str, Any] = {
        "logic": "and",
        "conditions": [{"field": "phone", "operator": "exists", "value": True}],
    }
    for _ in range(levels - 1):
        group = {"logic": "or", "conditions": [group]}
    return group


def test_parse_accepts_max_depth() -> None:
    criteria = parse_criteria(nested(MAX_DEPTH))

    assert referenced_fields(criteria) == {"phone"}


def test_parse_rejects_group_beyond_max_depth() -> None:
    error = rejection(nested(MAX_DEPTH + 1))

    path = "payload.criteria" + ".conditions[0]" * MAX_DEPTH
    assert error.field == path
    assert "at most 5 levels" in error.reason


def test_parse_rejects_too_many_conditions() -> None:
    condition = {"field": "phone", "operator": "exists", "value": True}
    half = MAX_CONDITIONS // 2
    raw = {
        "logic": "or",
        "conditions": [
            {"logic": "and", "conditions": [condition] * half},
            {"logic": "and", "conditions": [condition] * (half + 1)},
        ],
    }

    error = rejection(raw)

    assert error.field == f"payload.criteria.conditions[1].conditions[{half}]"
    assert "at most 200 conditions" in error.reason


def test_parse_accepts_max_conditions() -> None:
    condition = {"field": "phone", "operator": "exists", "value": True}

    criteria = parse_criteria({"logic": "and", "conditions": [condition] * MAX_CONDITIONS})

    assert len(criteria.conditions) == MAX_CONDITIONS


# --- Parsing: conversion -------------------------------------------------------------------


def test_parse_canonicalises_tags_alias() -> None:
    criteria = parse_criteria(one("tags", "equals", "vip"))

    assert criteria.conditions[0] == Condition("metadata.tags", "equals", "vip")
    assert referenced_fields(criteria) == {"metadata.tags"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-31", datetime(2026, 1, 31, tzinfo=UTC)),
        ("2026-01-31T10:00:00Z", datetime(2026, 1, 31, 10, tzinfo=UTC)),
        ("2026-01-31T10:00:00+02:00", datetime(2026, 1, 31, 8, tzinfo=UTC)),
        ("2026-01-31T10:00:00.123456Z", datetime(2026, 1, 31, 10, 0, 0, 123000, tzinfo=UTC)),
    ],
)
def test_parse_converts_dates_to_utc_milliseconds(text: str, expected: datetime) -> None:
    criteria = parse_criteria(one("metadata.createdAt", "greaterThan", text))

    value = first_condition(criteria).value
    assert value == expected
    assert value.utcoffset() == timedelta(0)


def test_parse_turns_lists_into_tuples() -> None:
    criteria = parse_criteria(one("status", "in", ["active", "inactive"]))

    assert first_condition(criteria).value == ("active", "inactive")


def test_condition_distinguishes_true_from_one() -> None:
    assert Condition("customFields.x", "equals", True) != Condition("customFields.x", "equals", 1)
    assert Condition("customFields.x", "equals", 1) == Condition("customFields.x", "equals", 1.0)


def test_condition_built_directly_is_checked() -> None:
    with pytest.raises(FieldError) as caught:
        Condition("version", "greaterThan", "three")

    assert caught.value.field == "value"


def test_group_built_directly_converts_values() -> None:
    group = Group("and", (Condition("metadata.updatedAt", "lessThan", "2026-03-01"),))

    assert first_condition(group).value == datetime(2026, 3, 1, tzinfo=UTC)


# --- Evaluation ------------------------------------------------------------------------------

EVALUATIONS = [
    ("company", "equals", "Acme GmbH", True),
    ("company", "equals", "acme gmbh", False),
    ("company", "contains", "ACME", True),
    ("company", "contains", "corp", False),
    ("email", "contains", "@EXAMPLE.", True),
    ("tags", "equals", "newsletter", True),
    ("tags", "contains", "vip", True),
    ("tags", "in", ["other", "newsletter"], True),
    ("tags", "notIn", ["newsletter"], False),
    ("metadata.tags", "notIn", ["other"], True),
    ("status", "in", ["active", "inactive"], True),
    ("status", "notIn", ["unsubscribed"], True),
    ("preferences.communicationChannels.email", "equals", True, True),
    ("preferences.communicationChannels.sms", "equals", True, False),
    ("preferences.communicationChannels.sms", "in", [False], True),
    ("preferences.frequency", "equals", "weekly", True),
    ("version", "greaterThan", 2, True),
    ("version", "greaterThan", 3, False),
    ("version", "lessThan", 3.5, True),
    ("version", "equals", 3.0, True),
    ("metadata.createdAt", "greaterThan", "2026-01-15", True),
    ("metadata.createdAt", "lessThan", "2026-01-15T10:30:00+01:00", False),
    ("metadata.createdAt", "equals", "2026-01-15T10:30:00+01:00", True),
    ("metadata.updatedAt", "equals", "2026-02-01T12:00:00.123999Z", True),
    ("metadata.lastEngagement", "exists", False, True),
    ("metadata.lastEngagement", "lessThan", "2030-01-01", False),
    ("metadata.lastEngagement", "notIn", ["2026-01-01"], True),
    ("phone", "exists", True, False),
    ("phone", "notIn", ["+4930123"], True),
    ("phone", "in", ["+4930123"], False),
    ("socialProfiles.linkedin", "exists", False, True),
    ("customFields.score", "greaterThan", 50, True),
    ("customFields.score", "greaterThan", "50", False),
    ("customFields.score", "lessThan", 72.5, True),
    ("customFields.plan", "greaterThan", "basic", True),
    ("customFields.plan", "greaterThan", 1, False),
    ("customFields.beta", "equals", True, True),
    ("customFields.beta", "equals", 1, False),
    ("customFields.beta", "in", [1, "true"], False),
    ("customFields.regions", "equals", "APAC", True),
    ("customFields.regions", "contains", "emea", True),
    ("customFields.regions", "lessThan", "B", True),
    ("customFields.missing", "exists", False, True),
    ("customFields.missing", "notIn", [1], True),
    ("customFields.missing", "equals", 1, False),
]


@pytest.mark.parametrize(("field", "operator", "value", "expected"), EVALUATIONS)
def test_matches_single_condition(field: str, operator: str, value: Any, expected: bool) -> None:
    criteria = parse_criteria(one(field, operator, value))

    assert matches(criteria, CONTACT) is expected


def test_matches_nested_groups() -> None:
    criteria = parse_criteria(
        {
            "logic": "and",
            "conditions": [
                {"field": "company", "operator": "contains", "value": "acme"},
                {
                    "logic": "or",
                    "conditions": [
                        {"field": "tags", "operator": "contains", "value": "gold"},
                        {"field": "customFields.score", "operator": "greaterThan", "value": 50},
                    ],
                },
            ],
        }
    )

    assert matches(criteria, CONTACT)
    assert not matches(criteria, {**CONTACT, "customFields": {"score": 10}})
    assert not matches(criteria, {**CONTACT, "company": "Globex"})


def test_matches_reads_naive_datetime_as_utc() -> None:
    contact = {"metadata": {"createdAt": datetime(2026, 1, 15, 9, 30)}}
    criteria = parse_criteria(one("metadata.createdAt", "equals", "2026-01-15T09:30:00Z"))

    assert matches(criteria, contact)


def test_matches_path_through_scalar_is_missing() -> None:
    contact = {"preferences": "weekly"}

    assert matches(parse_criteria(one("preferences.frequency", "exists", False)), contact)
    assert matches(parse_criteria(one("preferences.frequency", "notIn", ["daily"])), contact)
    assert not matches(parse_criteria(one("preferences.frequency", "in", ["daily"])), contact)


@pytest.mark.parametrize(
    ("needle", "stored", "expected"),
    [
        ("k", "Kelvin \u212a", True),
        ("\u212a", "kilo", True),
        ("ss", "Stra\u00dfe", False),
        ("\u00df", "STRA\u1e9eE", True),
        ("\u03c3", "\u039f\u03a3", True),
        ("i", "\u0130stanbul", False),
        ("I", "\u0131", False),
        ("a.c", "abc", False),
        ("a.c", "xA.Cx", True),
        ("[x]", "a[X]b", True),
        ("\x00", "a\x00b", True),
    ],
)
def test_contains_folds_simple_case_only(needle: str, stored: str, expected: bool) -> None:
    criteria = parse_criteria(one("title", "contains", needle))

    assert matches(criteria, {"title": stored}) is expected


# --- Queries ---------------------------------------------------------------------------------


def test_to_query_translates_every_operator() -> None:
    criteria = parse_criteria(
        {
            "logic": "and",
            "conditions": [
                {"field": "company", "operator": "equals", "value": "Acme"},
                {"field": "tags", "operator": "contains", "value": "vip+"},
                {"field": "version", "operator": "greaterThan", "value": 2},
                {"field": "metadata.createdAt", "operator": "lessThan", "value": "2026-01-31"},
                {"field": "status", "operator": "in", "value": ["active"]},
                {"field": "customFields.plan", "operator": "notIn", "value": ["free", 0]},
                {
                    "logic": "or",
                    "conditions": [{"field": "phone", "operator": "exists", "value": False}],
                },
            ],
        }
    )

    assert to_query(criteria) == {
        "$and": [
            {"company": {"$eq": "Acme"}},
            {"metadata.tags": {"$regex": "[Vv][Ii][Pp]\\+"}},
            {"version": {"$gt": 2}},
            {"metadata.createdAt": {"$lt": datetime(2026, 1, 31, tzinfo=UTC)}},
            {"status": {"$in": ["active"]}},
            {"customFields.plan": {"$nin": ["free", 0]}},
            {"$or": [{"phone": {"$exists": False}}]},
        ]
    }


def test_to_query_spells_out_case_variants() -> None:
    query = to_query(parse_criteria(one("title", "contains", "Sk\u00df 1.\n")))

    assert query == {
        "$and": [{"title": {"$regex": "[Ss\u017f][Kk\u212a][\u00df\u1e9e]\\ 1\\.\\x0a"}}]
    }


def test_to_query_uses_canonical_fields_only() -> None:
    criteria = parse_criteria(one("tags", "in", ["a", "b"]))

    assert to_query(criteria) == {"$and": [{"metadata.tags": {"$in": ["a", "b"]}}]}


# --- Round trip and fields ---------------------------------------------------------------------

ROUND_TRIP = {
    "logic": "or",
    "conditions": [
        {"field": "tags", "operator": "contains", "value": "vip"},
        {"field": "metadata.createdAt", "operator": "greaterThan", "value": "2026-01-31"},
        {
            "logic": "and",
            "conditions": [
                {"field": "customFields.score", "operator": "in", "value": [1, 2.5, "x", True]},
                {
                    "field": "metadata.lastEngagement",
                    "operator": "notIn",
                    "value": ["2026-01-31T10:00:00.5+05:30"],
                },
                {"field": "phone", "operator": "exists", "value": False},
            ],
        },
    ],
}


def test_criteria_to_json_round_trips() -> None:
    criteria = parse_criteria(ROUND_TRIP)

    as_json = criteria_to_json(criteria)

    assert parse_criteria(as_json) == criteria
    assert as_json["conditions"][0]["field"] == "metadata.tags"
    assert as_json["conditions"][1]["value"] == "2026-01-31T00:00:00.000Z"
    assert as_json["conditions"][2]["conditions"][1]["value"] == ["2026-01-31T04:30:00.500Z"]
    assert as_json["conditions"][2]["conditions"][0]["value"] == [1, 2.5, "x", True]


def test_criteria_survive_pickle() -> None:
    criteria = parse_criteria(ROUND_TRIP)

    restored = pickle.loads(pickle.dumps(criteria))

    assert restored == criteria
    assert matches(restored, CONTACT) == matches(criteria, CONTACT)


def test_referenced_fields_lists_nested_fields() -> None:
    criteria = parse_criteria(ROUND_TRIP)

    assert referenced_fields(criteria) == {
        "metadata.tags",
        "metadata.createdAt",
        "customFields.score",
        "metadata.lastEngagement",
        "phone",
    }


def test_date_in_other_zone_equals_stored_instant() -> None:
    stored = datetime(2026, 1, 31, 23, 0, tzinfo=UTC)
    in_tokyo = stored.astimezone(timezone(timedelta(hours=9))).isoformat()

    criteria = parse_criteria(one("metadata.createdAt", "in", [in_tokyo]))

    assert matches(criteria, {"metadata": {"createdAt": stored}})
