"""Search of a tenant's contacts by the criteria of a dynamic list, page by page."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pymongo.errors import PyMongoError

from contact_pipeline.domain.criteria import Group, to_query
from contact_pipeline.domain.errors import StoreUnavailable
from contact_pipeline.handlers.contacts import INTERNAL_FIELDS, public_contact
from contact_pipeline.store.mongo import Store

MAX_PAGE_SIZE = 1000


@dataclass
class SearchPage:
    """One page of matching contacts, ordered by contact id."""

    contacts: list[dict[str, Any]]
    next_cursor: str | None
    """Contact id to pass as ``after`` for the next page, or None when this page is the last."""


async def search_contacts(
    store: Store, tenant_id: str, criteria: Group, *, limit: int = 100, after: str | None = None
) -> SearchPage:
    """Return the tenant's contacts that are not deleted and match the criteria.

    Pages follow the contact id (``id``, not the document ``_id``): ``after`` is the
    id that the previous page ended with. A full page sets ``next_cursor``, so the
    page after one that ends exactly with the last match is empty. Contacts come
    without the store's internal fields. Raises ValueError when ``limit`` is not
    between 1 and 1000, and StoreUnavailable when the store fails.
    """
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE_SIZE}, got {limit}")

    scope: dict[str, Any] = {"tenantId": tenant_id, "deleted": {"$ne": True}}
    if after is not None:
        scope["id"] = {"$gt": after}
    query = {"$and": [scope, to_query(criteria)]}
    # Excluding the command history here saves transferring up to 50 entries per contact.
    projection = {name: 0 for name in INTERNAL_FIELDS}

    cursor = store.contacts.find(query, projection).sort("id", 1).limit(limit)
    try:
        documents = await cursor.to_list(None)
    except PyMongoError as exc:
        raise StoreUnavailable(f"contact search of tenant {tenant_id} failed: {exc}") from exc
    contacts = [public_contact(document) for document in documents]

    next_cursor = contacts[-1]["id"] if len(contacts) == limit else None
    return SearchPage(contacts, next_cursor)
