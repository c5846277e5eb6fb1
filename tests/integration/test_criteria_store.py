"""Criteria against the real document store: the store's query and matches() must agree.

The property test inserts random contact documents and checks that the store
finds, for random criteria, exactly the documents that ``matches`` accepts.
Each example tags its documents with a unique ``batch`` value and deletes them
afterwards, instead of dropping collections, which sometimes hangs FerretDB.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection

from contact_pipeline.domain.criteria import (
    FIELD_TYPES,
    MAX_DEPTH,
    OPERATORS,
    Group,
    criteria_to_json,
    matches,
    parse_criteria,
    to_query,
)
from contact_pipeline.store.mongo import Store
from contact_pipeline.store.search import search_contacts
from tests.integration.conftest import Servers

CUSTOM_NAMES = ("score", "plan", "Region", "_flag")
STATUSES = ("active", "inactive", "unsubscribed")
FREQUENCIES = ("daily", "weekly", "monthly", "quarterly")
SOURCES = ("manual", "import", "form", "integration")

# Letters whose case variants differ between engines (dotted and dotless i, Kelvin
# sign, long s, sharp s, final sigma), regex metacharacters, and then any character
# that UTF-8 can encode.
TRICKY_LETTERS = "aAbBiIİıkKKsSſßẞσΣςéÉ"
TRICKY_CHARACTERS = TRICKY_LETTERS + " -_.%*+?()[]{}|\\^$\n\t\x00"
CHARACTERS = st.one_of(st.sampled_from(TRICKY_CHARACTERS), st.characters(exclude_categories=["Cs"]))
# Short strings of few letters collide across contacts and criteria far more often.
TEXTS = st.one_of(
    st.text(st.sampled_from(TRICKY_LETTERS), max_size=3), st.text(CHARACTERS, max_size=6)
)
INT64 = st.integers(-(2**63), 2**63 - 1)
NUMBERS = st.one_of(
    st.integers(-3, 60),
    st.sampled_from([0, 1, -0.0, 0.5, 1.0, 50.0, 2**53, 2**53 + 1, float(2**53)]),
    st.floats(allow_nan=False, allow_infinity=False),
    INT64,
)
DATES = st.datetimes(
    min_value=datetime(1960, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
).map(lambda moment: moment.replace(microsecond=moment.microsecond // 1000 * 1000))


def optional_object(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=fields)


CUSTOM_VALUES = st.one_of(TEXTS, NUMBERS, st.booleans(), st.lists(TEXTS, max_size=3))
CONTACTS = optional_object(
    id=TEXTS,
    firstName=TEXTS,
    lastName=TEXTS,
    title=TEXTS,
    company=st.one_of(st.sampled_from(["Acme", "acme", "ACME Ltd"]), TEXTS),
    email=TEXTS,
    phone=TEXTS,
    status=st.sampled_from(STATUSES),
    socialProfiles=optional_object(linkedin=TEXTS, github=TEXTS),
    preferences=optional_object(
        communicationChannels=optional_object(
            email=st.booleans(), sms=st.booleans(), social=st.booleans()
        ),
        frequency=st.sampled_from(FREQUENCIES),
        timezone=TEXTS,
    ),
    metadata=optional_object(
        source=st.sampled_from(SOURCES),
        tags=st.lists(TEXTS, max_size=4),
        createdAt=DATES,
        updatedAt=DATES,
        lastEngagement=DATES,
    ),
    version=st.integers(1, 30),
    customFields=st.dictionaries(st.sampled_from(CUSTOM_NAMES), CUSTOM_VALUES, max_size=4),
)


def value_kind(value: Any) -> str | None:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, datetime):
        return "date"
    return None


class Pools:
    """Values that occur in an example's contacts, by field path and by type.

    Criteria drawn from the values of their own field select some contacts and
    not others far more often than criteria drawn from anywhere.
    """

    def __init__(self, contacts: list[dict[str, Any]]) -> None:
        self.by_field: dict[tuple[str, str], list[Any]] = {}
        self.by_kind: dict[str, list[Any]] = {}
        for contact in contacts:
            self._collect(contact, "")

    def _collect(self, value: Any, path: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                self._collect(item, f"{path}{key}" if not path else f"{path}.{key}")
            return
        for item in value if isinstance(value, list) else [value]:
            kind = value_kind(item)
            if kind is not None:
                self._add(path, kind, item)

    def _add(self, path: str, kind: str, value: Any) -> None:
        self.by_field.setdefault((path, kind), []).append(value)
        self.by_kind.setdefault(kind, []).append(value)

    def values(
        self, field: str, kind: str, fallback: st.SearchStrategy[Any]
    ) -> st.SearchStrategy[Any]:
        """Return a strategy that mostly draws the field's values, then other values of the kind."""
        own = self.by_field.get((field, kind), [])
        other = self.by_kind.get(kind, [])
        choices = [st.sampled_from(own)] * 3 if own else []
        if other:
            choices.append(st.sampled_from(other))
        return st.one_of(*choices, fallback)


@st.composite
def date_texts(draw: st.DrawFn, field: str, pools: Pools) -> str:
    """Draw a date criterion: a stored instant in another zone, or any date or instant."""
    moment = draw(pools.values(field, "date", DATES))
    if draw(st.booleans()):
        moment += timedelta(milliseconds=draw(st.sampled_from([-1, 1])))
    form = draw(st.sampled_from(["zulu", "offset", "micro", "plain"]))
    if form == "plain":
        return moment.date().isoformat()
    if form == "zulu":
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    offset = timezone(timedelta(minutes=draw(st.integers(-14 * 60, 14 * 60))))
    # Microseconds below the millisecond: parsing drops them, as BSON would.
    if form == "micro":
        moment += timedelta(microseconds=draw(st.integers(0, 999)))
    return moment.astimezone(offset).isoformat()


# Letters that some regex engine treats as case variants of each other and another does not.
LOOKALIKES = str.maketrans("iIıİkKKsSſßẞσςΣ", "ıİiIKkkſſsẞßςΣσ")


def lookalike(text: str) -> str:
    return text.translate(LOOKALIKES)


CASE_CHANGES: list[Callable[[str], str]] = [
    str,
    str.upper,
    str.lower,
    str.swapcase,
    str.casefold,
    lookalike,
]


@st.composite
def contains_texts(draw: st.DrawFn, field: str, pools: Pools) -> str:
    """Draw a non-empty substring of a stored string in changed letter case, or other text."""
    if draw(st.integers(0, 5)) == 0:
        return draw(st.text(st.sampled_from(TRICKY_LETTERS), min_size=1, max_size=2))
    source = draw(pools.values(field, "string", TEXTS))
    if source and draw(st.integers(0, 3)) > 0:
        start = draw(st.integers(0, len(source) - 1))
        end = draw(st.integers(start + 1, len(source)))
        piece = source[start:end]
        change = draw(st.sampled_from(CASE_CHANGES))
        source = change(piece)
    return source or draw(st.text(CHARACTERS, min_size=1, max_size=3))


def twin(value: bool | int | float) -> bool | int | float:
    """Return the value as another type that Python calls equal: True and 1, 1 and 1.0.

    The store distinguishes them by BSON type (except int and double), so a custom
    field that stores True must not match a criterion of 1.
    """
    if isinstance(value, bool):
        return int(value)
    if value in (0, 1):
        return bool(value)
    if isinstance(value, int):
        return float(value)
    return value


@st.composite
def scalars(draw: st.DrawFn, field: str, pools: Pools) -> Any:
    """Draw one value of the field's type, as criteria JSON gives it."""
    field_type = FIELD_TYPES.get(field)
    if field_type is not None and field_type.enum:
        return draw(st.sampled_from(field_type.enum))
    if field_type is None:
        stored_kinds = [kind for path, kind in pools.by_field if path == field and kind != "date"]
        kind = draw(st.sampled_from(stored_kinds or ["string", "number", "boolean"]))
        kind = draw(st.sampled_from([kind, kind, "string", "number", "boolean"]))
    else:
        kind = {"array of strings": "string"}.get(field_type.name, field_type.name)

    if kind == "boolean":
        value = draw(st.booleans())
    elif kind == "number":
        value = draw(pools.values(field, "number", NUMBERS))
    else:
        value = None
    if value is not None:
        return twin(value) if field_type is None and draw(st.integers(0, 3)) == 0 else value
    if kind == "date":
        return draw(date_texts(field, pools))
    return draw(pools.values(field, "string", TEXTS))


@st.composite
def conditions(draw: st.DrawFn, pools: Pools) -> dict[str, Any]:
    # Half of the conditions read custom fields, whose values mix types from contact to contact.
    custom = [f"customFields.{name}" for name in (*CUSTOM_NAMES, "unused")]
    field = draw(st.one_of(st.sampled_from([*FIELD_TYPES, "tags"]), st.sampled_from(custom)))
    canonical = "metadata.tags" if field == "tags" else field
    allowed = FIELD_TYPES[canonical].operators if canonical in FIELD_TYPES else OPERATORS
    operator = draw(st.sampled_from(allowed))

    if operator == "exists":
        value: Any = draw(st.booleans())
    elif operator == "contains":
        value = draw(contains_texts(canonical, pools))
    elif operator in ("in", "notIn"):
        value = draw(st.lists(scalars(canonical, pools), min_size=1, max_size=4))
    elif operator in ("greaterThan", "lessThan") and canonical.startswith("customFields."):
        kind = draw(st.sampled_from(["number", "string"]))
        value = draw(pools.values(canonical, kind, NUMBERS if kind == "number" else TEXTS))
    else:
        value = draw(scalars(canonical, pools))
    return {"field": field, "operator": operator, "value": value}


@st.composite
def criteria_json(draw: st.DrawFn, pools: Pools, level: int = 1) -> dict[str, Any]:
    items: list[dict[str, Any]] = []
    # Mostly small groups, where each condition decides the outcome more often.
    for _ in range(draw(st.sampled_from([1, 1, 2, 3, 4]))):
        if level < MAX_DEPTH and draw(st.integers(0, 3)) == 0:
            items.append(draw(criteria_json(pools, level + 1)))
        else:
            items.append(draw(conditions(pools)))
    return {"logic": draw(st.sampled_from(["and", "or"])), "conditions": items}


@pytest_asyncio.fixture(scope="module")
async def database(servers: Servers) -> AsyncIterator[Any]:
    client: AsyncMongoClient = AsyncMongoClient(servers.mongodb_uri, tz_aware=True)
    try:
        yield client[f"cp_criteria_{uuid.uuid4().hex[:10]}"]
    finally:
        await client.close()


async def matching_ids(collection: AsyncCollection, batch: str, criteria: Group) -> set[str]:
    cursor = collection.find({"batch": batch, **to_query(criteria)}, {"_id": 1})
    return {document["_id"] async for document in cursor}


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
async def test_store_query_agrees_with_matches(database: Any, data: st.DataObject) -> None:
    collection = database["property"]
    contacts = data.draw(st.lists(CONTACTS, min_size=1, max_size=10), label="contacts")
    pools = Pools(contacts)
    batch = uuid.uuid4().hex
    documents = [
        {**contact, "_id": f"{batch}-{index}", "batch": batch}
        for index, contact in enumerate(contacts)
    ]
    await collection.insert_many(documents)
    try:
        # The store returns what it stored, so compare against the documents as read back.
        stored = [document async for document in collection.find({"batch": batch})]
        for _ in range(data.draw(st.integers(1, 4), label="criteria count")):
            raw = data.draw(criteria_json(pools), label="criteria")
            criteria = parse_criteria(raw)
            assert parse_criteria(criteria_to_json(criteria)) == criteria

            expected = {document["_id"] for document in stored if matches(criteria, document)}
            found = await matching_ids(collection, batch, criteria)
            event(_selection(len(expected), len(stored)))
            assert found == expected, (
                f"store found {sorted(found - expected)} that matches() rejects and missed "
                f"{sorted(expected - found)}; query {to_query(criteria)!r}"
            )
    finally:
        await collection.delete_many({"batch": batch})


async def test_contains_case_variants_agree_with_store(database: Any) -> None:
    collection = database["letters"]
    batch = uuid.uuid4().hex
    await collection.insert_many(
        [
            {"_id": f"{batch}-{index}", "batch": batch, "title": f"x{letter}y"}
            for index, letter in enumerate(TRICKY_LETTERS)
        ]
    )
    stored = [document async for document in collection.find({"batch": batch})]

    for needle in TRICKY_LETTERS:
        criteria = parse_criteria(
            {
                "logic": "and",
                "conditions": [{"field": "title", "operator": "contains", "value": needle}],
            }
        )
        expected = {document["title"] for document in stored if matches(criteria, document)}
        found = {
            document["title"]
            async for document in collection.find({"batch": batch, **to_query(criteria)})
        }
        assert found == expected, f"needle {needle!r}"

    await collection.delete_many({"batch": batch})


# Stored custom values of every type, with the pairs that Python calls equal and
# BSON does not (True and 1), and integers next to the 2**53 limit of doubles.
BRACKETING_VALUES: list[Any] = [
    True,
    False,
    0,
    1,
    1.0,
    -0.0,
    0.5,
    2,
    2**53,
    2**53 + 1,
    float(2**53),
    -(2**63),
    "",
    "1",
    "a",
    "B",
    [],
    [1],
    [True],
    ["1", "b"],
]
BRACKETING_CRITERIA: list[Any] = [True, False, 0, 1, 1.0, 0.5, 2**53, 2**53 + 1, "", "1", "a"]


async def test_custom_field_types_agree_with_store(database: Any) -> None:
    collection = database["types"]
    batch = uuid.uuid4().hex
    documents = [
        {"_id": f"{batch}-{index}", "batch": batch, "customFields": {"v": value}}
        for index, value in enumerate(BRACKETING_VALUES)
    ]
    documents.append({"_id": f"{batch}-missing", "batch": batch, "customFields": {}})
    await collection.insert_many(documents)
    stored = [document async for document in collection.find({"batch": batch})]

    raws: list[dict[str, Any]] = [
        {"field": "customFields.v", "operator": operator, "value": value}
        for operator in ("equals", "greaterThan", "lessThan")
        for value in BRACKETING_CRITERIA
        if operator == "equals" or not isinstance(value, bool)
    ]
    raws += [
        {"field": "customFields.v", "operator": operator, "value": [value]}
        for operator in ("in", "notIn")
        for value in BRACKETING_CRITERIA
    ]
    raws.append({"field": "customFields.v", "operator": "in", "value": [True, 2, "B"]})
    raws.append({"field": "customFields.v", "operator": "contains", "value": "b"})

    for raw in raws:
        criteria = parse_criteria({"logic": "and", "conditions": [raw]})
        expected = {document["_id"] for document in stored if matches(criteria, document)}
        found = await matching_ids(collection, batch, criteria)
        assert found == expected, f"{raw}: store {sorted(found)}, matches() {sorted(expected)}"

    await collection.delete_many({"batch": batch})


def _selection(selected: int, total: int) -> str:
    if selected == 0:
        return "criteria selected no contact"
    if selected == total:
        return "criteria selected every contact"
    return "criteria selected some contacts"


def acme_contact(tenant: str, contact_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "_id": f"{tenant}:{contact_id}",
        "id": contact_id,
        "tenantId": tenant,
        "company": "Acme",
        "version": 1,
        "emailKey": f"{contact_id}@example.com",
        "_commands": [{"id": "cmd-1"}],
        "metadata": {"tags": ["vip"], "createdAt": datetime(2026, 1, 1, tzinfo=UTC)},
        **fields,
    }


@pytest.fixture
def tenant() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


async def test_search_pages_through_tenant_matches(database: Any, tenant: str) -> None:
    store = Store(database.client, database.name)
    matching = [acme_contact(tenant, f"c{index:02d}") for index in range(25)]
    others = [
        acme_contact(tenant, "d01", deleted=True, status="deleted"),
        acme_contact(tenant, "c05x", company="Globex"),
        acme_contact(f"{tenant}other", "c03"),
    ]
    await store.contacts.insert_many([*reversed(matching), *others])
    criteria = parse_criteria(
        {
            "logic": "and",
            "conditions": [
                {"field": "company", "operator": "equals", "value": "Acme"},
                {"field": "tags", "operator": "contains", "value": "VIP"},
            ],
        }
    )

    first = await search_contacts(store, tenant, criteria, limit=10)
    second = await search_contacts(store, tenant, criteria, limit=10, after=first.next_cursor)
    third = await search_contacts(store, tenant, criteria, limit=10, after=second.next_cursor)

    pages = [first, second, third]
    assert [len(page.contacts) for page in pages] == [10, 10, 5]
    assert first.next_cursor == "c09"
    assert second.next_cursor == "c19"
    assert third.next_cursor is None
    ids = [contact["id"] for page in pages for contact in page.contacts]
    assert ids == [f"c{index:02d}" for index in range(25)]
    assert all(contact["tenantId"] == tenant for page in pages for contact in page.contacts)
    for contact in first.contacts:
        assert "_id" not in contact
        assert "_commands" not in contact
        assert "emailKey" not in contact


async def test_search_full_last_page_ends_with_empty_page(database: Any, tenant: str) -> None:
    store = Store(database.client, database.name)
    await store.contacts.insert_many([acme_contact(tenant, f"c{index}") for index in range(4)])
    criteria = parse_criteria(
        {"logic": "or", "conditions": [{"field": "version", "operator": "equals", "value": 1}]}
    )

    full = await search_contacts(store, tenant, criteria, limit=4)
    empty = await search_contacts(store, tenant, criteria, limit=4, after=full.next_cursor)

    assert full.next_cursor == "c3"
    assert empty.contacts == []
    assert empty.next_cursor is None


@pytest.mark.parametrize("limit", [0, 1001])
async def test_search_rejects_page_size(database: Any, limit: int) -> None:
    store = Store(database.client, database.name)
    criteria = parse_criteria(
        {"logic": "and", "conditions": [{"field": "phone", "operator": "exists", "value": True}]}
    )

    with pytest.raises(ValueError, match="limit must be between 1 and 1000"):
        await search_contacts(store, "tenant-a", criteria, limit=limit)
