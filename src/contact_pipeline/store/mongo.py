"""Everything the pipeline reads from and writes to the MongoDB-compatible document store.

The code runs on MongoDB and on FerretDB (SQLite backend), so it avoids what
FerretDB 1.24 lacks or does differently: no transactions, and a unique-index
violation inside an ``update`` fails the whole command there instead of one
write. E-mail uniqueness is therefore kept by inserting claim documents into
``email_keys``, whose ``_id`` is unique on every server, and contact writes are
guarded by the document version instead.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from pymongo import AsyncMongoClient, InsertOne, ReplaceOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, PyMongoError

from contact_pipeline.domain.errors import StoreUnavailable

logger = logging.getLogger(__name__)

DUPLICATE_KEY = 11000


class Store:
    """The collections of one contact-pipeline database."""

    def __init__(self, client: AsyncMongoClient, database: str) -> None:
        self.client = client
        self.db: AsyncDatabase = client[database]
        self.contacts = self.db["contacts"]
        self.email_keys = self.db["email_keys"]
        self.command_results = self.db["command_results"]

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
        return cls(client, database)

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
        ids = list(set(doc_ids))
        if not ids:
            return {}
        cursor = self.contacts.find({"_id": {"$in": ids}})
        docs = await self._guard(cursor.to_list(None))
        return {doc["_id"]: doc for doc in docs}

    async def load_results(self, result_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Return stored command outcomes by ``<tenant>:<commandId>``."""
        ids = list(set(result_ids))
        if not ids:
            return {}
        cursor = self.command_results.find({"_id": {"$in": ids}})
        docs = await self._guard(cursor.to_list(None))
        return {doc["_id"]: doc for doc in docs}

    async def load_email_claims(self, claim_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Return the claim documents (owner, claimedAt) of e-mail keys, by claim id."""
        ids = list(set(claim_ids))
        if not ids:
            return {}
        cursor = self.email_keys.find({"_id": {"$in": ids}})
        docs = await self._guard(cursor.to_list(None))
        return {doc["_id"]: doc for doc in docs}

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
        """Move a claim from an owner that no longer has the address; False if it moved meanwhile."""
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
        operations = [
            ReplaceOne({"_id": doc["_id"], "version": previous}, doc) for doc, previous in writes
        ]
        result = await self._guard(self.contacts.bulk_write(operations, ordered=False))
        if result.matched_count == len(writes):
            return set()
        stored = await self.load_contacts(doc["_id"] for doc, _ in writes)
        return {
            doc["_id"]
            for doc, _ in writes
            if stored.get(doc["_id"], {}).get("version") != doc["version"]
        }

    async def save_results(self, documents: list[dict[str, Any]]) -> None:
        """Store command outcomes; an outcome stored before is kept as it was."""
        if documents:
            await self._insert_unordered(self.command_results, documents)

    async def _insert_unordered(self, collection: Any, documents: list[dict[str, Any]]) -> list[int]:
        try:
            await collection.bulk_write([InsertOne(doc) for doc in documents], ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            other = [error for error in errors if error.get("code") != DUPLICATE_KEY]
            if other:
                raise StoreUnavailable(f"bulk insert into {collection.name} failed: {other[0]}") from exc
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
    cursor = store.command_results.find(query, {"code": 1, "outcome": 1, "result": 1})
    async for doc in cursor:
        counts[doc["code"]] = counts.get(doc["code"], 0) + 1
        if doc["outcome"] == "rejected":
            rejected.append(doc["result"])
    rejected.sort(key=lambda result: (result.get("meta") or {}).get("row", 0))
    return {"codes": counts, "rejected": rejected}


async def count_contacts(store: Store, tenant_id: str) -> int:
    """Count the tenant's contacts that are not deleted."""
    return await store.contacts.count_documents({"tenantId": tenant_id, "deleted": {"$ne": True}})
