"""Criteria of dynamic lists: validation, in-memory evaluation and MongoDB queries.

Criteria are a tree of groups (``logic`` "and" or "or") and conditions
(``field``, ``operator``, ``value``) over the stored contact document::

    {"logic": "and", "conditions": [
      {"field": "company", "operator": "equals", "value": "Acme"},
      {"logic": "or", "conditions": [
        {"field": "tags", "operator": "contains", "value": "vip"},
        {"field": "customFields.score", "operator": "greaterThan", "value": 50}]},
      {"field": "phone", "operator": "exists", "value": true}]}

:func:`matches` and :func:`to_query` implement the semantics of a MongoDB query.
A condition never matches a value of another BSON type, so a number never
matches a string and ``true`` is not ``1``. An array matches when any of its
elements does, ``notIn`` matches a missing field, and ``exists`` tests whether
the key is present. ``contains`` is a case-insensitive substring test; see
:func:`_contains_pattern` for why it spells out each letter's case variants
instead of using the regex option ``i``.

Each node compiles its predicate once, when it is built, so that evaluating a
contact against many lists only walks dictionaries and calls closures.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, time
from typing import Any, TypeVar

from contact_pipeline.domain.contact import FIELD_NAME_PATTERN
from contact_pipeline.domain.errors import FieldError

MAX_DEPTH = 5
"""Nesting levels of groups, counting the top group as level 1."""

MAX_CONDITIONS = 200
"""Conditions in the whole tree."""

MAX_IN_VALUES = 500
"""Values in the list of one ``in`` or ``notIn`` condition."""

MAX_TEXT_LENGTH = 1000
"""Characters in one string value. Stored contact strings are at most 500 characters
long, except custom fields, which have no length limit."""

ERROR_CODE = "invalid_criteria"
LOGICS = ("and", "or")
OPERATORS = ("equals", "contains", "greaterThan", "lessThan", "in", "notIn", "exists")
FIELD_ALIASES = {"tags": "metadata.tags"}
CUSTOM_PREFIX = "customFields."

# BSON integers have 64 bits, so a larger criteria number could not be sent to the store.
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_CUSTOM_NAME = re.compile(FIELD_NAME_PATTERN)
_PLAIN_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")

Predicate = Callable[[dict[str, Any]], bool]
_Node = TypeVar("_Node")
ValueTest = Callable[[Any], bool]


class _Missing:
    """Marker of a field that the document does not have."""


_MISSING: Any = _Missing()


# --- Field catalogue -----------------------------------------------------------------


@dataclass(frozen=True)
class _FieldType:
    """Type of a criteria field and the operators that apply to it."""

    name: str
    operators: tuple[str, ...]
    enum: tuple[str, ...] = ()


_ALL = OPERATORS
_TEXT_OPERATORS = ("equals", "contains", "in", "notIn", "exists")
_ORDERED_OPERATORS = ("equals", "greaterThan", "lessThan", "in", "notIn", "exists")

_STRING = _FieldType("string", _TEXT_OPERATORS)
_BOOLEAN = _FieldType("boolean", ("equals", "in", "notIn", "exists"))
_NUMBER = _FieldType("number", _ORDERED_OPERATORS)
_DATE = _FieldType("date", _ORDERED_OPERATORS)
_STRING_ARRAY = _FieldType("array of strings", _TEXT_OPERATORS)
_CUSTOM = _FieldType("custom", _ALL)


def _enum(*values: str) -> _FieldType:
    return _FieldType("string", _TEXT_OPERATORS, values)


FIELD_TYPES: dict[str, _FieldType] = {
    "id": _STRING,
    "firstName": _STRING,
    "lastName": _STRING,
    "title": _STRING,
    "company": _STRING,
    "email": _STRING,
    "phone": _STRING,
    "status": _enum("active", "inactive", "unsubscribed"),
    "socialProfiles.linkedin": _STRING,
    "socialProfiles.github": _STRING,
    "preferences.frequency": _enum("daily", "weekly", "monthly", "quarterly"),
    "preferences.timezone": _STRING,
    "metadata.source": _enum("manual", "import", "form", "integration"),
    "preferences.communicationChannels.email": _BOOLEAN,
    "preferences.communicationChannels.sms": _BOOLEAN,
    "preferences.communicationChannels.social": _BOOLEAN,
    "version": _NUMBER,
    "metadata.createdAt": _DATE,
    "metadata.updatedAt": _DATE,
    "metadata.lastEngagement": _DATE,
    "metadata.tags": _STRING_ARRAY,
}
"""Stored document paths that criteria can read, except ``customFields.<name>``."""


def _field_type(name: Any) -> tuple[str, _FieldType]:
    """Return the canonical path and type of a criteria field, or raise FieldError."""
    if not isinstance(name, str):
        raise FieldError("field", name, 'field must be a string such as "company"', ERROR_CODE)

    canonical = FIELD_ALIASES.get(name, name)
    known = FIELD_TYPES.get(canonical)
    if known is not None:
        return canonical, known

    if name.startswith(CUSTOM_PREFIX):
        custom_name = name[len(CUSTOM_PREFIX) :]
        if _CUSTOM_NAME.match(custom_name) is None:
            raise FieldError(
                "field",
                name,
                f"invalid custom field name {custom_name!r}; use customFields.<name> where the "
                "name has 1 to 64 letters, digits or underscores and does not start with a digit",
                ERROR_CODE,
            )
        return name, _CUSTOM

    raise FieldError(
        "field",
        name,
        f"unknown field {name!r}; use one of {', '.join(sorted([*FIELD_TYPES, *FIELD_ALIASES]))}, "
        "or customFields.<name> for custom data",
        ERROR_CODE,
    )


# --- Value validation ------------------------------------------------------------------


def _convert_value(field_name: str, field_type: _FieldType, operator: str, value: Any) -> Any:
    """Check a condition's value and return it converted (dates to datetime, lists to tuples).

    Already converted values pass unchanged, so a node can check its own value
    however it was built. Raises FieldError with a path relative to the condition.
    """
    if operator == "exists":
        if not isinstance(value, bool):
            raise _value_error(value, "exists needs true (field present) or false (field absent)")
        return value

    if operator in ("in", "notIn"):
        return _convert_list(field_name, field_type, operator, value)

    if operator == "contains":
        if not isinstance(value, str) or not value:
            raise _value_error(value, "contains needs a non-empty string to search for")
        _check_length(value, "value")
        return value

    if operator in ("greaterThan", "lessThan"):
        return _convert_bound(field_name, field_type, operator, value)

    return _convert_scalar(field_name, field_type, value, "value")


def _convert_list(field_name: str, field_type: _FieldType, operator: str, value: Any) -> Any:
    if not isinstance(value, list | tuple) or not value:
        raise _value_error(
            value, f'{operator} needs a non-empty array of values, such as ["a", "b"]'
        )
    if len(value) > MAX_IN_VALUES:
        raise _value_error(
            f"array of {len(value)} values",
            f"{operator} accepts at most {MAX_IN_VALUES} values; split the condition into "
            'several conditions in an "or" group',
        )
    return tuple(
        _convert_scalar(field_name, field_type, item, f"value[{index}]")
        for index, item in enumerate(value)
    )


def _convert_bound(field_name: str, field_type: _FieldType, operator: str, value: Any) -> Any:
    if field_type is _CUSTOM:
        if isinstance(value, str):
            _check_length(value, "value")
            return value
        if _is_number(value):
            return _check_number(value, "value")
        raise _value_error(
            value, f"{operator} on a custom field needs a number or a string to compare with"
        )
    if field_type is _DATE:
        return _convert_date(value, "value")
    return _check_number(value, "value")


def _convert_scalar(field_name: str, field_type: _FieldType, value: Any, path: str) -> Any:
    if value is None:
        raise FieldError(
            path,
            value,
            "null is not a value to compare with; to select contacts without this field use "
            "the exists operator with false",
            ERROR_CODE,
        )

    if field_type is _CUSTOM:
        if isinstance(value, str):
            _check_length(value, path)
            return value
        if isinstance(value, bool):
            return value
        if _is_number(value):
            return _check_number(value, path)
        raise FieldError(
            path, value, "a custom field value must be a string, a number or a boolean", ERROR_CODE
        )

    if field_type is _BOOLEAN:
        if not isinstance(value, bool):
            raise FieldError(
                path, value, f"{field_name} is a boolean; use true or false", ERROR_CODE
            )
        return value

    if field_type is _NUMBER:
        return _check_number(value, path)

    if field_type is _DATE:
        return _convert_date(value, path)

    if not isinstance(value, str):
        raise FieldError(path, value, f"{field_name} is a string field; give a string", ERROR_CODE)
    if field_type.enum and value not in field_type.enum:
        raise FieldError(
            path,
            value,
            f"{field_name} is one of {', '.join(field_type.enum)}; use one of these values",
            ERROR_CODE,
        )
    _check_length(value, path)
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_number(value: Any, path: str) -> int | float:
    if not _is_number(value):
        raise FieldError(path, value, "expected a number such as 42 or 4.5", ERROR_CODE)
    if isinstance(value, float) and not math.isfinite(value):
        raise FieldError(path, value, "expected a finite number, not NaN or infinity", ERROR_CODE)
    if isinstance(value, int) and not _INT64_MIN <= value <= _INT64_MAX:
        raise FieldError(
            path, value, "integers must fit in 64 bits (at most 9223372036854775807)", ERROR_CODE
        )
    return value


def _check_length(text: str, path: str) -> None:
    if len(text) > MAX_TEXT_LENGTH:
        raise FieldError(
            path,
            text[:50] + "...",
            f"string values have at most {MAX_TEXT_LENGTH} characters; shorten it",
            ERROR_CODE,
        )


def _convert_date(value: Any, path: str) -> datetime:
    """Return a date criterion as an aware UTC datetime with millisecond precision.

    BSON dates have millisecond precision, so parsing drops finer digits.
    Otherwise the store and :func:`matches` would compare different instants.
    """
    if isinstance(value, datetime) and value.tzinfo is not None:
        return _to_bson_precision(value, path)

    hint = (
        'use an ISO-8601 date-time with a time zone ("2026-01-31T09:30:00Z") '
        'or a date ("2026-01-31")'
    )
    if not isinstance(value, str):
        raise FieldError(path, value, f"expected a date; {hint}", ERROR_CODE)

    try:
        if _PLAIN_DATE.match(value):
            parsed = datetime.combine(datetime.fromisoformat(value).date(), time(), UTC)
        else:
            parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise FieldError(path, value, f"invalid date ({exc}); {hint}", ERROR_CODE) from exc

    if parsed.tzinfo is None:
        raise FieldError(
            path, value, "the date-time has no time zone; add one such as Z or +01:00", ERROR_CODE
        )
    return _to_bson_precision(parsed, path)


def _to_bson_precision(value: datetime, path: str) -> datetime:
    try:
        utc = value.astimezone(UTC)
    except OverflowError as exc:
        raise FieldError(path, value, "the date is outside years 1 to 9999", ERROR_CODE) from exc
    return utc.replace(microsecond=utc.microsecond // 1000 * 1000)


def _value_error(value: Any, reason: str) -> FieldError:
    return FieldError("value", value, reason, ERROR_CODE)


def _value_key(value: Any) -> Any:
    """Return the value tagged with its type, because Python treats True as 1 and BSON does not."""
    if isinstance(value, tuple):
        return tuple(_value_key(item) for item in value)
    return (type(value).__name__ if isinstance(value, bool) else "other", value)


# --- Nodes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    """One test of one contact field, such as ``company equals "Acme"``.

    ``field`` is the canonical stored path (the alias ``tags`` becomes
    ``metadata.tags``) and ``value`` is converted: dates are aware UTC datetimes,
    ``in`` and ``notIn`` lists are tuples. Building one checks field, operator and
    value and raises FieldError (code ``invalid_criteria``) with a path relative
    to the condition, such as ``value[2]``.
    """

    field: str
    operator: str
    value: Any
    _value_key: Any = dataclasses.field(init=False, repr=False)
    _predicate: Predicate = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        canonical, field_type = _field_type(self.field)
        if self.operator not in OPERATORS:
            raise FieldError(
                "operator",
                self.operator,
                f"unknown operator {self.operator!r}; use one of {', '.join(OPERATORS)}",
                ERROR_CODE,
            )
        if self.operator not in field_type.operators:
            raise FieldError(
                "operator",
                self.operator,
                f"{self.operator} does not apply to the {field_type.name} field {canonical}; "
                f"use one of {', '.join(field_type.operators)}",
                ERROR_CODE,
            )
        value = _convert_value(canonical, field_type, self.operator, self.value)

        object.__setattr__(self, "field", canonical)
        object.__setattr__(self, "value", value)
        object.__setattr__(self, "_value_key", _value_key(value))
        object.__setattr__(self, "_predicate", _compile_condition(canonical, self.operator, value))

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickle cannot store the compiled predicate (a closure), so unpickling rebuilds it.
        return (Condition, (self.field, self.operator, self.value))


@dataclass(frozen=True)
class Group:
    """Conditions and nested groups joined by ``logic``, "and" or "or".

    Building one checks the logic, that there is at least one condition, the
    depth (``MAX_DEPTH``) and the number of conditions (``MAX_CONDITIONS``).
    """

    logic: str
    conditions: tuple[Condition | Group, ...]
    _depth: int = dataclasses.field(init=False, repr=False, compare=False)
    _size: int = dataclasses.field(init=False, repr=False, compare=False)
    _predicate: Predicate = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.logic not in LOGICS:
            raise FieldError("logic", self.logic, 'logic must be "and" or "or"', ERROR_CODE)
        if not self.conditions:
            raise FieldError(
                "conditions", self.conditions, "a group needs at least one condition", ERROR_CODE
            )
        children = tuple(self.conditions)
        for child in children:
            if not isinstance(child, Condition | Group):
                raise FieldError("conditions", child, "expected a Condition or a Group", ERROR_CODE)

        depth = 1 + max((child._depth for child in children if isinstance(child, Group)), default=0)
        size = sum(child._size if isinstance(child, Group) else 1 for child in children)
        if depth > MAX_DEPTH:
            raise FieldError("conditions", depth, _depth_reason(), ERROR_CODE)
        if size > MAX_CONDITIONS:
            raise FieldError("conditions", size, _size_reason(), ERROR_CODE)

        object.__setattr__(self, "conditions", children)
        object.__setattr__(self, "_depth", depth)
        object.__setattr__(self, "_size", size)
        predicates = tuple(child._predicate for child in children)
        compiled = _all_of(predicates) if self.logic == "and" else _any_of(predicates)
        object.__setattr__(self, "_predicate", compiled)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Group, (self.logic, self.conditions))


Criteria = Group


def _depth_reason() -> str:
    return (
        f"groups nest at most {MAX_DEPTH} levels deep, counting the top group as level 1; "
        "flatten the criteria"
    )


def _size_reason() -> str:
    return (
        f"criteria have at most {MAX_CONDITIONS} conditions; use in or notIn for many values of "
        "one field, or split the list"
    )


# --- Parsing -------------------------------------------------------------------------------

_CONDITION_KEYS = ("field", "operator", "value")
_GROUP_KEYS = ("logic", "conditions")


def parse_criteria(raw: Any, field: str = "payload.criteria") -> Group:
    """Validate criteria JSON and return the compiled tree.

    Raises FieldError (code ``invalid_criteria``) whose ``field`` is the JSON path
    of the invalid part, such as ``payload.criteria.conditions[1].operator``, with
    the invalid value and a reason that states what to change.
    """
    if isinstance(raw, dict) and "field" in raw and "logic" not in raw:
        raise FieldError(
            field,
            raw,
            'the criteria must be a group; wrap the condition as {"logic": "and", '
            '"conditions": [...]}',
            ERROR_CODE,
        )
    counter = [0]
    return _parse_group(raw, field, 1, counter)


def _parse_group(raw: Any, path: str, level: int, counter: list[int]) -> Group:
    if not isinstance(raw, dict):
        raise FieldError(
            path, raw, 'expected a group object {"logic": "and", "conditions": [...]}', ERROR_CODE
        )
    _reject_unknown_keys(raw, path, _GROUP_KEYS, "a group has the keys logic and conditions")
    if level > MAX_DEPTH:
        raise FieldError(path, _summary(raw), _depth_reason(), ERROR_CODE)
    if "logic" not in raw:
        raise FieldError(
            f"{path}.logic", None, 'missing logic; add "logic": "and" or "or"', ERROR_CODE
        )

    items = raw.get("conditions")
    if not isinstance(items, list) or not items:
        raise FieldError(
            f"{path}.conditions",
            items,
            "a group needs a non-empty array of conditions and groups",
            ERROR_CODE,
        )

    children: list[Condition | Group] = []
    for index, item in enumerate(items):
        item_path = f"{path}.conditions[{index}]"
        children.append(_parse_item(item, item_path, level, counter))
    return _build(path, lambda: Group(raw["logic"], tuple(children)))


def _parse_item(item: Any, path: str, level: int, counter: list[int]) -> Condition | Group:
    if not isinstance(item, dict):
        raise FieldError(
            path,
            item,
            'expected a condition {"field", "operator", "value"} '
            'or a group {"logic", "conditions"}',
            ERROR_CODE,
        )
    if "field" in item and "logic" in item:
        raise FieldError(
            path,
            _summary(item),
            "an item is either a condition (field, operator, value) or a group (logic, "
            "conditions), not both; move the condition into the group's conditions",
            ERROR_CODE,
        )
    if "logic" in item or "conditions" in item:
        return _parse_group(item, path, level + 1, counter)
    if "field" not in item:
        _reject_unknown_keys(
            item, path, _CONDITION_KEYS, "a condition has the keys field, operator and value"
        )
        raise FieldError(
            f"{path}.field",
            None,
            "missing field; a condition needs field, operator and value",
            ERROR_CODE,
        )
    return _parse_condition(item, path, counter)


def _parse_condition(item: dict[str, Any], path: str, counter: list[int]) -> Condition:
    _reject_unknown_keys(
        item, path, _CONDITION_KEYS, "a condition has the keys field, operator and value"
    )
    for key in ("operator", "value"):
        if key not in item:
            raise FieldError(
                f"{path}.{key}",
                None,
                f"missing {key}; a condition needs field, operator and value",
                ERROR_CODE,
            )

    counter[0] += 1
    if counter[0] > MAX_CONDITIONS:
        raise FieldError(path, _summary(item), _size_reason(), ERROR_CODE)
    return _build(path, lambda: Condition(item["field"], item["operator"], item["value"]))


def _build(path: str, make: Callable[[], _Node]) -> _Node:
    try:
        return make()
    except FieldError as exc:
        raise FieldError(f"{path}.{exc.field}", exc.value, exc.reason, exc.code) from None


def _reject_unknown_keys(
    raw: dict[Any, Any], path: str, allowed: tuple[str, ...], shape: str
) -> None:
    for key in raw:
        if key not in allowed:
            raise FieldError(f"{path}.{key}", raw[key], f"unknown key {key!r}; {shape}", ERROR_CODE)


def _summary(raw: dict[str, Any]) -> dict[str, Any]:
    """Return a group without its nested conditions, to keep error values short."""
    return {key: ("[...]" if key == "conditions" else value) for key, value in raw.items()}


# --- Back to JSON, fields ----------------------------------------------------------------


def criteria_to_json(criteria: Group) -> dict[str, Any]:
    """Return the criteria in their JSON form, with dates as ISO-8601 strings in UTC."""
    return _node_to_json(criteria)


def _node_to_json(node: Condition | Group) -> dict[str, Any]:
    if isinstance(node, Group):
        return {
            "logic": node.logic,
            "conditions": [_node_to_json(child) for child in node.conditions],
        }
    return {"field": node.field, "operator": node.operator, "value": _value_to_json(node.value)}


def _value_to_json(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_value_to_json(item) for item in value]
    if isinstance(value, datetime):
        return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return value


def referenced_fields(criteria: Group) -> frozenset[str]:
    """Return the canonical field paths that the criteria read, such as ``metadata.tags``."""
    return frozenset(condition.field for condition in _conditions(criteria))


def _conditions(group: Group) -> list[Condition]:
    found: list[Condition] = []
    for child in group.conditions:
        if isinstance(child, Group):
            found.extend(_conditions(child))
        else:
            found.append(child)
    return found


# --- MongoDB query -------------------------------------------------------------------------

_QUERY_OPERATORS = {
    "greaterThan": "$gt",
    "lessThan": "$lt",
    "in": "$in",
    "notIn": "$nin",
    "exists": "$exists",
    "equals": "$eq",
}


def to_query(criteria: Group) -> dict[str, Any]:
    """Return the MongoDB filter that selects exactly the documents :func:`matches` accepts.

    The filter's only top-level key is ``$and`` or ``$or``, so callers can merge
    it with their own keys (tenant, deletion) in one dictionary.
    """
    return _node_query(criteria)


def _node_query(node: Condition | Group) -> dict[str, Any]:
    if isinstance(node, Group):
        return {f"${node.logic}": [_node_query(child) for child in node.conditions]}
    if node.operator == "contains":
        return {node.field: {"$regex": _contains_pattern(node.value)}}
    value = list(node.value) if isinstance(node.value, tuple) else node.value
    return {node.field: {_QUERY_OPERATORS[node.operator]: value}}


# --- Case-insensitive substrings ---------------------------------------------------------

# Cased characters end below U+1E950 (Adlam) in the Unicode versions of Python 3.11-3.13.
_LAST_CASED = 0x1E950


@functools.cache
def _case_variants() -> dict[str, str]:
    """Return, for each cased character, all characters of the same simple case folding.

    Built on first use, in about 0.1 s: ``k`` maps to ``KkK`` (with the Kelvin sign),
    ``ß`` to ``ßẞ``, while ``İ`` and ``ı`` fold only to themselves.
    """
    classes: dict[str, set[str]] = {}
    for code in range(_LAST_CASED):
        if 0xD800 <= code <= 0xDFFF:
            continue
        char = chr(code)
        folded = _simple_fold(char)
        if folded != char:
            classes.setdefault(folded, {folded}).add(char)
    variants: dict[str, str] = {}
    for members in classes.values():
        joined = "".join(sorted(members))
        for member in members:
            variants[member] = joined
    return variants


def _simple_fold(char: str) -> str:
    """Return the simple case folding (Unicode CaseFolding.txt, status C and S) of a character.

    Python offers only the full folding, which maps some characters to several
    (``ß`` to ``ss``). Where it does, the single-character lowercase is the simple
    folding, and where that is several characters too, there is no simple folding.
    """
    folded = char.casefold()
    if len(folded) == 1:
        return folded
    lower = char.lower()
    return lower if len(lower) == 1 else char


def _contains_pattern(text: str) -> str:
    """Return a regex that finds ``text`` in any letter case, spelling out each letter's variants.

    The regex option ``i`` folds case differently on each engine: Python's ``re``
    matches ``i`` in ``İ`` and ``ı``, FerretDB 1.24 (Go's regexp) does not, and
    MongoDB uses a third engine, PCRE. A pattern of explicit character classes such
    as ``[Kk\u212a]`` needs no case folding, so Python, FerretDB and MongoDB select
    the same strings.
    """
    variants = _case_variants()
    parts: list[str] = []
    for char in text:
        group = variants.get(char)
        if group is None:
            parts.append(_escape(char))
        else:
            parts.append("[" + "".join(_escape(member) for member in group) + "]")
    return "".join(parts)


def _escape(char: str) -> str:
    # Escaping ASCII punctuation is valid in Python, Go (RE2) and PCRE alike. Control
    # characters become \xHH because MongoDB rejects a pattern with a NUL byte in it.
    if not char.isascii() or char.isalnum() or char == "_":
        return char
    if ord(char) < 0x20 or char == "\x7f":
        return f"\\x{ord(char):02x}"
    return "\\" + char


# --- In-memory evaluation ------------------------------------------------------------------


def matches(criteria: Group, contact: dict[str, Any]) -> bool:
    """Tell whether a stored contact document meets the criteria, as :func:`to_query` would.

    ``contact`` is the document as stored, with timezone-aware datetimes (a naive
    datetime counts as UTC). NOTE: paths are followed through nested objects only.
    MongoDB would also follow a path through an array of objects, which stored
    contacts never contain on the criteria fields.
    """
    return criteria._predicate(contact)


def _all_of(predicates: tuple[Predicate, ...]) -> Predicate:
    if len(predicates) == 1:
        return predicates[0]

    def all_of(doc: dict[str, Any]) -> bool:
        # A plain loop: all() over a generator costs a frame per call on this hot path.
        for predicate in predicates:  # noqa: SIM110
            if not predicate(doc):
                return False
        return True

    return all_of


def _any_of(predicates: tuple[Predicate, ...]) -> Predicate:
    if len(predicates) == 1:
        return predicates[0]

    def any_of(doc: dict[str, Any]) -> bool:
        for predicate in predicates:  # noqa: SIM110 - see all_of
            if predicate(doc):
                return True
        return False

    return any_of


def _compile_condition(path: str, operator: str, value: Any) -> Predicate:
    get = _getter(tuple(path.split(".")))
    if operator == "exists":
        return _compile_exists(get, value)

    test = _element_test(operator, value)

    # As in MongoDB, an array satisfies a test when any of its elements does. The array
    # walk is inlined because this runs for every condition of every list on each change.
    def predicate(doc: dict[str, Any]) -> bool:
        found = get(doc)
        if found is _MISSING:
            return False
        if test(found):
            return True
        if isinstance(found, list):
            for element in found:
                if test(element):
                    return True
        return False

    if operator == "notIn":
        # notIn is the negation of in, so it matches a missing field and fails when any
        # element of an array is in the list, as $nin does.
        return lambda doc: not predicate(doc)
    return predicate


def _compile_exists(get: Callable[[dict[str, Any]], Any], present: bool) -> Predicate:
    if present:
        return lambda doc: get(doc) is not _MISSING
    return lambda doc: get(doc) is _MISSING


def _getter(path: tuple[str, ...]) -> Callable[[dict[str, Any]], Any]:
    """Return a function that reads the value at ``path``, or _MISSING."""
    if len(path) == 1:
        (key,) = path
        return lambda doc: doc.get(key, _MISSING)

    if len(path) == 2:
        outer, inner = path

        def get_nested(doc: dict[str, Any]) -> Any:
            parent = doc.get(outer)
            if not isinstance(parent, dict):
                return _MISSING
            return parent.get(inner, _MISSING)

        return get_nested

    def get_deep(doc: dict[str, Any]) -> Any:
        found: Any = doc
        for key in path:
            if not isinstance(found, dict):
                return _MISSING
            found = found.get(key, _MISSING)
            if found is _MISSING:
                return _MISSING
        return found

    return get_deep


def _element_test(operator: str, value: Any) -> ValueTest:
    """Return the test of one stored value (an array's element or a scalar) for an operator."""
    if operator == "contains":
        search = re.compile(_contains_pattern(value)).search
        return lambda found: isinstance(found, str) and search(found) is not None
    if operator in ("in", "notIn"):
        return _membership_test(value)
    if operator == "equals":
        return _equals_test(value)
    return _compare_test(value, greater=operator == "greaterThan")


def _equals_test(value: Any) -> ValueTest:
    if isinstance(value, bool):
        return lambda found: found is value
    if isinstance(value, datetime):
        return lambda found: isinstance(found, datetime) and _aware(found) == value
    if isinstance(value, str):
        return lambda found: found == value
    # Numbers: int and float compare by value, but a stored boolean is never a number.
    return lambda found: found == value and not isinstance(found, bool)


def _compare_test(bound: Any, *, greater: bool) -> ValueTest:
    if isinstance(bound, datetime):
        if greater:
            return lambda found: isinstance(found, datetime) and _aware(found) > bound
        return lambda found: isinstance(found, datetime) and _aware(found) < bound
    if isinstance(bound, str):
        # Python compares strings by code point, which is the order of their UTF-8
        # bytes, the binary comparison that MongoDB uses without a collation.
        if greater:
            return lambda found: isinstance(found, str) and found > bound
        return lambda found: isinstance(found, str) and found < bound
    if greater:
        return lambda found: _is_number(found) and found > bound
    return lambda found: _is_number(found) and found < bound


def _membership_test(values: tuple[Any, ...]) -> ValueTest:
    # One set per BSON type, because Python's sets treat True, 1 and 1.0 as one member.
    strings = frozenset(item for item in values if isinstance(item, str))
    booleans = frozenset(item for item in values if isinstance(item, bool))
    numbers = frozenset(item for item in values if _is_number(item))
    dates = frozenset(item for item in values if isinstance(item, datetime))

    def is_member(found: Any) -> bool:
        if isinstance(found, str):
            return found in strings
        if isinstance(found, bool):
            return found in booleans
        if isinstance(found, int | float):
            return found in numbers
        if isinstance(found, datetime):
            return _aware(found) in dates
        return False

    return is_member


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
