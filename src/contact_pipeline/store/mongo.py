"""Everything the pipeline reads from and writes to the MongoDB-compatible document store.

The code runs on MongoDB and on FerretDB (SQLite backend), so it avoids what
FerretDB 1.24 lacks or does differently: no transactions, and a unique-index
violation inside an ``update`` fails the whole command there instead of one
write. E-mail uniqueness is therefore kept by inserting claim documents into
``email_keys``, whose ``_id`` is unique on every server, and contact writes are
guarded by the document version instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import AsyncMongoClient, InsertOne, ReplaceOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, PyMongoError

from contact_pipeline.domain.errors import StoreUnavailable

logger = logging.getLogger(__name__)

DUPLICATE_KEY = 11000
FERRETDB_LOOKUP_CONCURRENCY = 32
FERRETDB_UPDATE_CHUNK = 25
"""Updates per command on FerretDB. FerretDB 1.24 (SQLite) keeps one pooled SQLite
connection open per update until the command ends, from a pool of 100 per database,
so a command with about 100 updates waits for itself forever and stalls the server."""


class Store:
    """The collections of one contact-pipeline database."""

    def __init__(self, client: AsyncMongoClient, database: str, *, ferretdb: bool = False) -> None:
        self.client = client
        self.ferretdb = ferretdb
        """True on FerretDB, where only a find by exactly ``{_id: value}`` uses an index."""
        self.db: AsyncDatabase = client[database]
        self.contacts = self.db["contacts"]
        self.email_keys = self.db["email_keys"]
        self.command_results = self.db["command_results"]
        self.lists = self.db["lists"]
        self.backfills = self.db["backfills"]
        self.list_counts = self.db["list_counts"]
        """Active member counts per list, one document per tenant and command partition."""

    @classmethod
    async def connect(cls, uri: str, database: str, *, timeout_ms: int = 10_000) -> Store:
        """Connect and ping the server; call inside the running event loop."""
        client: AsyncMongoClient = AsyncMongoClient(
            uri, serverSelectionTimeoutMS=timeout_ms, tz_aware=True
        )
        try:
            await client.admin.command("ping")
        except PyMongoError as exc:
            await client.close()
            raise StoreUnavailable(
                f"document store at {_redact(uri)} is not reachable: {exc}; "
                "check MONGODB_URI or start the local servers with `contact-pipeline dev up`"
            ) from exc
        build_info = await client.admin.command("buildInfo")
        return cls(client, database, ferretdb="ferretdbVersion" in build_info)

    async def close(self) -> None:
        """Close the client's connections."""
        await self.client.close()

    async def ensure_indexes(self) -> None:
        """Create the indexes the queries need; safe to call on every start."""
        await self._guard(self.contacts.create_index([("tenantId", 1), ("emailKey", 1)]))
        await self._guard(self.contacts.create_index([("tenantId", 1), ("status", 1)]))
        await self._guard(
            self.command_results.create_index([("tenantId", 1), ("correlationId", 1)])
        )

    async def load_contacts(self, doc_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Return the stored contacts with these document ids, by id."""
        return await self._find_by_ids(self.contacts, doc_ids)

    async def load_results(self, result_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Return stored command outcomes by ``<tenant>:<commandId>``."""
        return await self._find_by_ids(self.command_results, result_ids)

    async def load_email_claims(self, claim_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Return the claim documents (owner, claimedAt) of e-mail keys, by claim id."""
        return await self._find_by_ids(self.email_keys, claim_ids)

    async def claim_email_keys(self, claims: list[tuple[str, str]], now: datetime) -> set[int]:
        """Insert ``(claim id, owner)`` pairs; return the indexes of claims another writer holds."""
        if not claims:
            return set()
        documents = [
            {"_id": claim_id, "owner": owner, "claimedAt": now} for claim_id, owner in claims
        ]
        return set(await self._insert_unordered(self.email_keys, documents))

    async def take_over_email_key(
        self, claim_id: str, stale_owner: str, new_owner: str, now: datetime
    ) -> bool:
        """Move a claim away from an owner that lost the address; False if it moved meanwhile."""
        result = await self._guard(
            self.email_keys.update_one(
                {"_id": claim_id, "owner": stale_owner},
                {"$set": {"owner": new_owner, "claimedAt": now}},
            )
        )
        return result.matched_count == 1

    async def release_email_keys(self, claims: list[tuple[str, str]]) -> None:
        """Delete claims, each only while it still belongs to the given owner."""
        for claim_id, owner in claims:
            await self._guard(self.email_keys.delete_one({"_id": claim_id, "owner": owner}))

    async def insert_contacts(self, documents: list[dict[str, Any]]) -> set[str]:
        """Insert new contacts; return the ids of those that already existed."""
        if not documents:
            return set()
        failed_indexes = await self._insert_unordered(self.contacts, documents)
        return {documents[index]["_id"] for index in failed_indexes}

    async def replace_contacts(self, writes: list[tuple[dict[str, Any], int]]) -> set[str]:
        """Replace contacts that are still at the given version; return the ids that were not.

        The bulk result only counts matches, so when fewer matched than were
        sent, the documents are read back to find which writes did not land.
        """
        if not writes:
            return set()
        if self.ferretdb:
            # NOTE: FerretDB 1.24 uses its _id index only for a filter of exactly
            # {_id: value}; with the version added, every write scans the collection and
            # 500 of them stall the server. Partition ownership still gives each contact
            # one writer, but two workers overlapping in a rebalance could overwrite each
            # other here, which the version filter prevents on MongoDB.
            operations = [ReplaceOne({"_id": doc["_id"]}, doc) for doc, _ in writes]
        else:
            operations = [
                ReplaceOne({"_id": doc["_id"], "version": previous}, doc)
                for doc, previous in writes
            ]
        matched = 0
        chunk = FERRETDB_UPDATE_CHUNK if self.ferretdb else len(operations)
        for start in range(0, len(operations), chunk):
            result = await self._guard(
                self.contacts.bulk_write(operations[start : start + chunk], ordered=False)
            )
            matched += result.matched_count
        if matched == len(writes):
            return set()
        stored = await self.load_contacts(doc["_id"] for doc, _ in writes)
        return {
            doc["_id"]
            for doc, _ in writes
            if stored.get(doc["_id"], {}).get("version") != doc["version"]
        }

    async def load_tenant_lists(self, tenant_id: str) -> list[dict[str, Any]]:
        """Return every list document of a tenant, deleted ones included."""
        cursor = self.lists.find({"tenantId": tenant_id}, {"_commands": 0})
        return list(await self._guard(cursor.to_list(None)))

    async def load_list(self, doc_id: str) -> dict[str, Any] | None:
        """Return one list document by ``<tenant>:<listId>``."""
        return await self._guard(self.lists.find_one({"_id": doc_id}))

    async def save_list(self, document: dict[str, Any], previous_version: int | None) -> bool:
        """Insert or replace a list; False if another writer changed it first."""
        if previous_version is None:
            return not await self._insert_unordered(self.lists, [document])
        query: dict[str, Any] = {"_id": document["_id"]}
        if not self.ferretdb:
            query["version"] = previous_version
        result = await self._guard(self.lists.replace_one(query, document))
        return bool(result.matched_count)

    async def load_list_counts(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Return member-count documents by id (``<tenant>:<topic>:<partition>``)."""
        return await self._find_by_ids(self.list_counts, ids)

    async def add_list_counts(
        self, doc_id: str, tenant_id: str, offset: int, deltas: dict[str, int]
    ) -> None:
        """Add member-count changes and record the last source offset they cover.

        One single-document update, so the counts and the offset move together.
        """
        update: dict[str, Any] = {"$set": {"tenantId": tenant_id, "offset": offset}}
        if deltas:
            update["$inc"] = {f"counts.{list_id}": delta for list_id, delta in deltas.items()}
        await self._guard(self.list_counts.update_one({"_id": doc_id}, update, upsert=True))

    async def list_member_counts(self, tenant_id: str) -> dict[str, int]:
        """Return the active member count of every list of a tenant that has members."""
        totals: dict[str, int] = {}
        async for doc in self.list_counts.find({"tenantId": tenant_id}):
            for list_id, count in doc.get("counts", {}).items():
                totals[list_id] = totals.get(list_id, 0) + count
        return totals

    async def save_backfill(self, document: dict[str, Any]) -> None:
        """Record a backfill; one recorded before under this id is kept as it was."""
        await self._insert_unordered(self.backfills, [document])

    async def load_backfill(self, backfill_id: str) -> dict[str, Any] | None:
        """Return one backfill by id."""
        return await self._guard(self.backfills.find_one({"_id": backfill_id}))

    async def claim_backfill(
        self, backfill_id: str, owner: str, now: datetime, lease_seconds: float
    ) -> dict[str, Any] | None:
        """Take a queued backfill, or one whose runner stopped renewing its lease.

        Returns the backfill if this owner has the lease now, else None.
        """
        query = {
            "_id": backfill_id,
            "status": {"$in": ["queued", "running"]},
            "$or": [{"leaseUntil": {"$exists": False}}, {"leaseUntil": {"$lt": now}}],
        }
        update = {
            "$set": {
                "status": "running",
                "owner": owner,
                "leaseUntil": now + timedelta(seconds=lease_seconds),
                "updatedAt": now,
            }
        }
        result = await self._guard(self.backfills.update_one(query, update))
        if not result.modified_count:
            return None
        return await self.load_backfill(backfill_id)

    async def update_backfill(self, backfill_id: str, owner: str, fields: dict[str, Any]) -> bool:
        """Set progress fields of a backfill this owner holds; False if it lost the lease."""
        result = await self._guard(
            self.backfills.update_one({"_id": backfill_id, "owner": owner}, {"$set": fields})
        )
        return bool(result.matched_count)

    async def open_backfills(self) -> list[dict[str, Any]]:
        """Return the backfills that are queued or running."""
        cursor = self.backfills.find({"status": {"$in": ["queued", "running"]}})
        return list(await self._guard(cursor.to_list(None)))

    async def tenant_backfills(self, tenant_id: str) -> dict[str, dict[str, Any]]:
        """Return the latest backfill of each list of a tenant, by list id."""
        latest: dict[str, dict[str, Any]] = {}
        async for doc in self.backfills.find({"tenantId": tenant_id}):
            current = latest.get(doc["listId"])
            if current is None or doc["listVersion"] > current["listVersion"]:
                latest[doc["listId"]] = doc
        return latest

    async def save_results(self, documents: list[dict[str, Any]]) -> None:
        """Store command outcomes; an outcome stored before is kept as it was."""
        if documents:
            await self._insert_unordered(self.command_results, documents)

    async def _find_by_ids(self, collection: Any, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        unique = list(set(ids))
        if not unique:
            return {}
        if not self.ferretdb:
            cursor = collection.find({"_id": {"$in": unique}})
            docs = await self._guard(cursor.to_list(None))
            return {doc["_id"]: doc for doc in docs}

        # NOTE: FerretDB 1.24 (SQLite) evaluates $in by reading the whole collection,
        # but pushes a filter of exactly {_id: value} down to its index, so many
        # concurrent point lookups beat one $in query once a collection grows.
        limit = asyncio.Semaphore(FERRETDB_LOOKUP_CONCURRENCY)

        async def find_one(doc_id: str) -> dict[str, Any] | None:
            async with limit:
                return await collection.find_one({"_id": doc_id})

        found = await self._guard(asyncio.gather(*(find_one(doc_id) for doc_id in unique)))
        return {doc["_id"]: doc for doc in found if doc is not None}

    async def _insert_unordered(
        self, collection: Any, documents: list[dict[str, Any]]
    ) -> list[int]:
        try:
            await collection.bulk_write([InsertOne(doc) for doc in documents], ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            other = [error for error in errors if error.get("code") != DUPLICATE_KEY]
            if other:
                raise StoreUnavailable(
                    f"bulk insert into {collection.name} failed: {other[0]}"
                ) from exc
            return [error["index"] for error in errors]
        except PyMongoError as exc:
            raise StoreUnavailable(f"bulk insert into {collection.name} failed: {exc}") from exc
        return []

    @staticmethod
    async def _guard(awaitable: Any) -> Any:
        try:
            return await awaitable
        except PyMongoError as exc:
            raise StoreUnavailable(f"document store operation failed: {exc}") from exc


def utcnow() -> datetime:
    """Return the current time in UTC with millisecond precision, as BSON stores it."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def to_utc_millis(text: str) -> datetime:
    """Parse an RFC 3339 time (already schema-checked) into UTC at BSON's millisecond precision."""
    parsed = datetime.fromisoformat(text).astimezone(UTC)
    return parsed.replace(microsecond=parsed.microsecond // 1000 * 1000)


def _redact(uri: str) -> str:
    if "@" not in uri:
        return uri
    scheme, _, rest = uri.partition("://")
    return f"{scheme}://***@{rest.split('@', 1)[1]}"


async def summarise_results(store: Store, tenant_id: str, correlation_id: str) -> dict[str, Any]:
    """Count the outcomes of one job (such as an import) and list its rejections."""
    query = {"tenantId": tenant_id, "correlationId": correlation_id}
    counts: dict[str, int] = {}
    rejected: list[dict[str, Any]] = []
    lists: dict[str, int] = {}
    cursor = store.command_results.find(query, {"code": 1, "outcome": 1, "result": 1})
    async for doc in cursor:
        if doc["result"].get("type") == "membership.add":
            # An import's list memberships are reported apart from its contacts.
            lists[doc["code"]] = lists.get(doc["code"], 0) + 1
            continue
        counts[doc["code"]] = counts.get(doc["code"], 0) + 1
        if doc["outcome"] == "rejected":
            rejected.append(doc["result"])
    rejected.sort(key=lambda result: (result.get("meta") or {}).get("row", 0))
    return {"codes": counts, "rejected": rejected, "memberships": lists}


async def count_contacts(store: Store, tenant_id: str) -> int:
    """Count the tenant's contacts that are not deleted."""
    return await store.contacts.count_documents({"tenantId": tenant_id, "deleted": {"$ne": True}})
