"""The audit collections of the document store: chain heads and the queryable projection.

``audit_chains`` has one document per chain (``_id`` = chain id) with the seq,
hash and source offset of its last published entry. ``audit_entries`` contains
every entry of the ``audit-log`` topic under ``_id`` = ``"<chain>:<seq>"``, so
projecting an entry twice changes nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo import ASCENDING, InsertOne
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError

from contact_pipeline.audit.chain import ChainHead, format_time, safe_id
from contact_pipeline.domain.errors import StoreUnavailable
from contact_pipeline.store.mongo import DUPLICATE_KEY, Store

MAX_LOG_ENTRIES = 10_000
"""Entries one ``audit log`` query returns at most, unless the caller sets a limit."""


class AuditStore:
    """Chain heads and projected entries in one contact-pipeline database."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.chains = store.db["audit_chains"]
        self.entries = store.db["audit_entries"]

    async def ensure_indexes(self) -> None:
        """Create the indexes of the log queries; safe to call on every start."""
        # NOTE: FerretDB 1.24 (SQLite) uses only the _id index, so there these queries
        # scan the collection; MongoDB uses the indexes.
        indexes = [
            [("tenantId", ASCENDING), ("entity.contactId", ASCENDING), ("time", ASCENDING)],
            [("tenantId", ASCENDING), ("entity.listId", ASCENDING), ("time", ASCENDING)],
            [("tenantId", ASCENDING), ("time", ASCENDING)],
        ]
        for keys in indexes:
            await _guard(self.entries.create_index(keys))

    async def load_heads(self, chains: list[str]) -> dict[str, ChainHead]:
        """Return the saved heads of these chains by chain id. A new chain has none."""
        heads = {}
        for chain in chains:
            # One find by exactly {_id} per chain: the only lookup FerretDB serves by index.
            doc = await _guard(self.chains.find_one({"_id": chain}))
            if doc is not None:
                heads[chain] = _head(doc)
        return heads

    async def all_heads(self) -> list[ChainHead]:
        """Return every saved chain head."""
        docs = await _guard(self.chains.find({}).to_list(None))
        return [_head(doc) for doc in docs]

    async def save_head(self, head: ChainHead) -> bool:
        """Move a chain head forward; False if the saved head is already at or past it.

        The condition keeps a worker that lost the partition in a rebalance from
        moving the head back after the new owner moved it on.
        """
        document = {"seq": head.seq, "hash": head.hash, "offset": head.offset}
        try:
            await self.chains.update_one(
                {"_id": head.chain, "seq": {"$lt": head.seq}}, {"$set": document}, upsert=True
            )
        except DuplicateKeyError:
            # The filter missed because the saved head is ahead, so the upsert tried an insert.
            return False
        except PyMongoError as exc:
            raise StoreUnavailable(f"saving audit chain head {head.chain} failed: {exc}") from exc
        return True

    async def insert_entries(self, entries: list[dict[str, Any]]) -> int:
        """Project entries; return how many were new. Entries projected before are kept."""
        if not entries:
            return 0
        documents = [{"_id": f"{entry['chain']}:{entry['seq']}", **entry} for entry in entries]
        try:
            await self.entries.bulk_write([InsertOne(doc) for doc in documents], ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            other = [error for error in errors if error.get("code") != DUPLICATE_KEY]
            if other:
                raise StoreUnavailable(f"projecting audit entries failed: {other[0]}") from exc
            return len(documents) - len(errors)
        except PyMongoError as exc:
            raise StoreUnavailable(f"projecting audit entries failed: {exc}") from exc
        return len(documents)

    async def query(
        self,
        tenant_id: str,
        *,
        contact_id: str | None = None,
        list_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = MAX_LOG_ENTRIES,
    ) -> list[dict[str, Any]]:
        """Return a tenant's entries in time order, optionally of one contact or list.

        ``since`` is inclusive and ``until`` exclusive. An event republished by
        the worker is chained twice under one entry id; only its first entry is
        returned.
        """
        query: dict[str, Any] = {"tenantId": safe_id(tenant_id)}
        if contact_id is not None:
            query["entity.contactId"] = safe_id(contact_id)
        if list_id is not None:
            query["entity.listId"] = safe_id(list_id)
        window: dict[str, str] = {}
        if since is not None:
            window["$gte"] = format_time(since)
        if until is not None:
            window["$lt"] = format_time(until)
        if window:
            query["time"] = window

        cursor = self.entries.find(query, {"_id": 0}).sort(
            [("time", ASCENDING), ("chain", ASCENDING), ("seq", ASCENDING)]
        )
        entries: list[dict[str, Any]] = []
        seen: set[str] = set()
        async for entry in cursor:
            if entry["id"] in seen:
                continue
            seen.add(entry["id"])
            entries.append(entry)
            if len(entries) >= limit:
                break
        await cursor.close()
        return entries


def _head(doc: dict[str, Any]) -> ChainHead:
    return ChainHead(doc["_id"], int(doc["seq"]), str(doc["hash"]), int(doc["offset"]))


async def _guard(awaitable: Any) -> Any:
    try:
        return await awaitable
    except PyMongoError as exc:
        raise StoreUnavailable(f"audit store operation failed: {exc}") from exc
