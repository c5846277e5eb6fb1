"""Backfills: bring every affected contact's membership in line after a list changes.

A new dynamic list, new criteria or a deleted list changes who belongs to the
list. The runner reads the tenant's contacts and, for each contact whose
membership would change, sends a ``membership.evaluate`` command to the
contact-commands topic with the contact's key. The contact worker applies it
in order with the contact's other commands, so the backfill never races a
live change and stays the only writer of no contact.

A backfill survives the worker that runs it: its state is a document with a
lease. Any worker's timer takes over a backfill whose lease ran out and scans
again from the start. The evaluate commands have ids derived from backfill and
contact, so commands sent twice apply once.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from contact_pipeline import metrics
from contact_pipeline.domain.criteria import Group, matches, parse_criteria, referenced_fields
from contact_pipeline.store.mongo import Store, utcnow

logger = logging.getLogger(__name__)

EVALUATE_NAMESPACE = uuid.UUID("5b0e1c2d-8f3a-4e6b-9c7d-2a1b0c9d8e7f")

Send = Callable[[list[tuple[bytes, dict[str, Any]]]], Awaitable[list[int]]]
"""Produces (key, command) pairs to the contact-commands topic, waits for the broker and
returns the partition of each command."""

Announce = Callable[[dict[str, Any]], Awaitable[None]]
"""Publishes a list event."""


@dataclass(frozen=True)
class BackfillSettings:
    """Timing of backfills."""

    grace_seconds: float = 5.0
    """Wait between the list change and the scan. It must exceed the list cache's age
    bound plus one batch, so that every contact write after the scan saw the change."""

    lease_seconds: float = 30.0
    progress_interval_seconds: float = 2.0
    max_in_flight: int = 20_000
    """Maximum evaluate commands sent but not yet applied. The limit keeps other
    tenants' commands from waiting behind a whole backfill."""

    send_chunk: int = 1_000
    scan_batch: int = 2_000


class LeaseLost(Exception):
    """Another worker took the backfill over; this runner stops without retrying."""

    retriable = False


class BackfillRunner:
    """Runs backfills of one worker and takes over those of stopped workers."""

    def __init__(
        self,
        store: Store,
        send: Send,
        announce: Announce,
        settings: BackfillSettings | None = None,
        owner: str | None = None,
    ) -> None:
        self.store = store
        self.send = send
        self.announce = announce
        self.settings = settings or BackfillSettings()
        self.owner = owner or f"worker-{uuid.uuid4().hex[:8]}"
        self._running: dict[str, asyncio.Task[None]] = {}

    def start(self, backfill_id: str) -> None:
        """Run a backfill in the background unless this worker already runs it."""
        task = self._running.get(backfill_id)
        if task is not None and not task.done():
            return
        self._running[backfill_id] = asyncio.create_task(
            self._run_logged(backfill_id), name=f"backfill-{backfill_id}"
        )

    async def resume_stopped(self) -> None:
        """Start every open backfill; a backfill whose lease another worker has stays with it."""
        for backfill in await self.store.open_backfills():
            self.start(backfill["_id"])

    async def stop(self) -> None:
        """Cancel the running backfills; another worker resumes them when the lease ends."""
        for task in self._running.values():
            task.cancel()
        await asyncio.gather(*self._running.values(), return_exceptions=True)

    async def _run_logged(self, backfill_id: str) -> None:
        try:
            await self.run(backfill_id)
        except asyncio.CancelledError:
            raise
        except LeaseLost as exc:
            logger.warning("backfill stopped: %s", exc)
        except Exception:
            # The lease runs out and a worker's timer retries the whole backfill.
            logger.exception("backfill failed backfill_id=%s", backfill_id)

    async def run(self, backfill_id: str) -> None:
        """Run one backfill to completion, if this worker can take it."""
        backfill = await self.store.claim_backfill(
            backfill_id, self.owner, utcnow(), self.settings.lease_seconds
        )
        if backfill is None:
            return
        started = time.monotonic()
        list_doc = await self._wait_for_list(backfill)
        if list_doc is None or _superseded(backfill, list_doc):
            await self._finish(backfill, "superseded", {})
            return
        delay = backfill["createdAt"] + timedelta(seconds=self.settings.grace_seconds) - utcnow()
        if delay.total_seconds() > 0:
            await asyncio.sleep(delay.total_seconds())

        logger.info(
            "backfill started backfill_id=%s tenant=%s list=%s reason=%s",
            backfill_id,
            backfill["tenantId"],
            backfill["listId"],
            backfill["reason"],
        )
        before = await self._members(backfill)
        scanned, queued = await self._scan(backfill, list_doc)
        await self._progress(backfill, scanned=scanned, queued=queued, applied=queued)
        await self._finish(
            backfill,
            "completed",
            {
                "scanned": scanned,
                "queued": queued,
                "applied": queued,
                "membersBefore": before,
                "membersAfter": await self._members(backfill),
                "seconds": round(time.monotonic() - started, 3),
            },
        )

    async def _members(self, backfill: dict[str, Any]) -> int:
        counts = await self.store.list_member_counts(backfill["tenantId"])
        return counts.get(backfill["listId"], 0)

    async def _wait_for_list(self, backfill: dict[str, Any]) -> dict[str, Any] | None:
        # The backfill is recorded just before its list version; wait for that write.
        doc_id = f"{backfill['tenantId']}:{backfill['listId']}"
        for _ in range(50):
            doc = await self.store.load_list(doc_id)
            if doc is not None and doc["version"] >= backfill["listVersion"]:
                return doc
            await asyncio.sleep(0.2)
        return None

    async def _scan(self, backfill: dict[str, Any], list_doc: dict[str, Any]) -> tuple[int, int]:
        list_id = list_doc["id"]
        deleted = bool(list_doc.get("deleted"))
        criteria = None if deleted else parse_criteria(list_doc["criteria"])
        query: dict[str, Any] = {"tenantId": backfill["tenantId"], "deleted": {"$ne": True}}
        projection = None
        if deleted:
            query[f"lists.{list_id}"] = {"$exists": True}
        else:
            assert criteria is not None
            fields = referenced_fields(criteria) | {"id", "metadata.updatedAt", f"lists.{list_id}"}
            projection = dict.fromkeys(fields, 1)
        since = backfill["createdAt"] - timedelta(seconds=self.settings.grace_seconds)

        scanned = queued = 0
        tracker = _ResultTracker(
            self.store, self.settings.max_in_flight // self.settings.send_chunk
        )
        chunk: list[tuple[bytes, dict[str, Any]]] = []
        last_progress = time.monotonic()
        cursor = self.store.contacts.find(query, projection, batch_size=self.settings.scan_batch)
        async for contact in cursor:
            scanned += 1
            if deleted or _needs_evaluation(contact, list_id, criteria, since):
                chunk.append(_evaluate_command(backfill, contact["id"]))
            if len(chunk) >= self.settings.send_chunk:
                queued += await self._send(backfill, chunk, tracker)
                chunk = []
            if time.monotonic() - last_progress >= self.settings.progress_interval_seconds:
                await self._progress(backfill, scanned=scanned, queued=queued)
                last_progress = time.monotonic()
        if chunk:
            queued += await self._send(backfill, chunk, tracker)
        await self._progress(backfill, scanned=scanned, queued=queued, scanDone=True)
        await tracker.wait_all(lambda: self._progress(backfill, scanned=scanned, queued=queued))
        return scanned, queued

    async def _send(
        self,
        backfill: dict[str, Any],
        chunk: list[tuple[bytes, dict[str, Any]]],
        tracker: _ResultTracker,
    ) -> int:
        await tracker.wait_for_room(lambda: self._progress(backfill))
        partitions = await self.send(chunk)
        tracker.sent(backfill["tenantId"], chunk, partitions)
        return len(chunk)

    async def _progress(self, backfill: dict[str, Any], **fields: Any) -> None:
        now = utcnow()
        fields.update(
            updatedAt=now, leaseUntil=now + timedelta(seconds=self.settings.lease_seconds)
        )
        if not await self.store.update_backfill(backfill["_id"], self.owner, fields):
            raise LeaseLost(f"backfill {backfill['_id']} was taken over by another worker")

    async def _finish(self, backfill: dict[str, Any], status: str, fields: dict[str, Any]) -> None:
        now = utcnow()
        await self._progress(backfill, status=status, completedAt=now, **fields)
        event = {
            "specversion": "1.0",
            "id": str(uuid.uuid5(EVALUATE_NAMESPACE, f"{backfill['_id']}\n{status}")),
            "type": f"list.backfill.{status}",
            "source": "contact-pipeline/worker",
            "subject": f"tenants/{backfill['tenantId']}/lists/{backfill['listId']}",
            "time": now.isoformat(),
            "tenantId": backfill["tenantId"],
            "listId": backfill["listId"],
            "backfillId": backfill["_id"],
            "reason": backfill["reason"],
            "actor": {"type": "system", "id": "backfill"},
            "data": {key: _jsonable(value) for key, value in fields.items()},
        }
        await self.announce(event)
        metrics.BACKFILLS.labels(status=status).inc()
        logger.info(
            "backfill %s backfill_id=%s tenant=%s list=%s %s",
            status,
            backfill["_id"],
            backfill["tenantId"],
            backfill["listId"],
            " ".join(f"{key}={value}" for key, value in fields.items()),
        )


class _ResultTracker:
    """Tells when sent evaluate commands have been applied, with a few point reads.

    A contact worker applies each partition in offset order and stores the
    outcomes of a batch together, so once the last command sent to a partition
    has an outcome, so do all before it there. Counting the outcomes instead
    would scan the whole outcome collection on FerretDB, every time.
    """

    POLL_SECONDS = 0.2

    def __init__(self, store: Store, max_chunks_in_flight: int) -> None:
        self.store = store
        self.max_chunks_in_flight = max(1, max_chunks_in_flight)
        self.chunks: list[dict[int, str]] = []
        """The last outcome id per partition of each chunk not known to be applied."""

    def sent(
        self, tenant_id: str, chunk: list[tuple[bytes, dict[str, Any]]], partitions: list[int]
    ) -> None:
        tails: dict[int, str] = {}
        for (_, message), partition in zip(chunk, partitions, strict=True):
            tails[partition] = f"{tenant_id}:{message['commandId']}"
        self.chunks.append(tails)

    async def wait_for_room(self, heartbeat: Callable[[], Awaitable[None]]) -> None:
        while len(self.chunks) >= self.max_chunks_in_flight:
            await self._wait_chunk(self.chunks[0], heartbeat)
            self.chunks.pop(0)

    async def wait_all(self, heartbeat: Callable[[], Awaitable[None]]) -> None:
        latest: dict[int, str] = {}
        for tails in self.chunks:
            latest.update(tails)
        await self._wait_chunk(latest, heartbeat)
        self.chunks.clear()

    async def _wait_chunk(
        self, tails: dict[int, str], heartbeat: Callable[[], Awaitable[None]]
    ) -> None:
        waiting = set(tails.values())
        last_beat = time.monotonic()
        while waiting:
            waiting -= set(await self.store.load_results(waiting))
            if not waiting:
                return
            if time.monotonic() - last_beat > 2.0:
                await heartbeat()
                last_beat = time.monotonic()
            await asyncio.sleep(self.POLL_SECONDS)


def _superseded(backfill: dict[str, Any], list_doc: dict[str, Any]) -> bool:
    """Tell whether a later list change started a backfill that covers this one."""
    if list_doc.get("deleted") and backfill["reason"] != "list_deleted":
        return True
    return bool(list_doc.get("criteriaVersion", 0) > backfill.get("criteriaVersion", 0))


def _needs_evaluation(
    contact: dict[str, Any], list_id: str, criteria: Group | None, since: datetime
) -> bool:
    """Tell whether the contact's membership may change, or it changed near the list change."""
    entry = contact.get("lists", {}).get(list_id)
    if entry is not None and entry.get("status") == "unsubscribed":
        return False
    updated_at = contact.get("metadata", {}).get("updatedAt")
    if isinstance(updated_at, datetime) and updated_at >= since:
        # Written while workers may still have had the old criteria: check in order.
        return True
    assert criteria is not None
    matched = matches(criteria, contact)
    if matched:
        return entry is None
    return entry is not None and entry.get("source") == "dynamic"


def _evaluate_command(backfill: dict[str, Any], contact_id: str) -> tuple[bytes, dict[str, Any]]:
    tenant_id = backfill["tenantId"]
    source = f"{backfill['_id']}:{contact_id}"
    command_id = f"evaluate-{uuid.uuid5(EVALUATE_NAMESPACE, source)}"
    return (
        f"{tenant_id}:{contact_id}".encode(),
        {
            "commandId": command_id,
            "type": "membership.evaluate",
            "tenantId": tenant_id,
            "issuedAt": utcnow().isoformat(),
            "actor": {"type": "system", "id": "backfill"},
            "correlationId": backfill["_id"],
            "payload": {
                "contactId": contact_id,
                "listId": backfill["listId"],
                "backfillId": backfill["_id"],
            },
        },
    )


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value
