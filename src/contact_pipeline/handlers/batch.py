"""Apply a batch of raw contact-command messages to the store.

One batch costs a few bulk round trips, not one per command. Outcomes of
earlier deliveries and the contacts are read together: one query each on
MongoDB, concurrent point lookups on FerretDB. Writes go out as bulk inserts
and bulk replaces. Commands about one contact apply in arrival order:
each wave takes at most one command per contact, so a contact's second
command in a batch is decided on the result of its first.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from contact_pipeline.domain.commands import Decoded, SourcePosition, Undecodable, decode
from contact_pipeline.domain.errors import CommandRejected, FieldError
from contact_pipeline.domain.tokens import read_confirmation_token
from contact_pipeline.handlers.contacts import (
    AlreadyApplied,
    ContactCommand,
    Write,
    build_event,
    contact_doc_id,
    decide,
    is_live,
)
from contact_pipeline.handlers.memberships import TenantLists
from contact_pipeline.handlers.outcomes import build_outcome, rejection_errors, result_id
from contact_pipeline.handlers.validation import InvalidCommand, validate_command
from contact_pipeline.schemas import CommandSchemas
from contact_pipeline.store.catalog import ListCatalog
from contact_pipeline.store.mongo import Store, utcnow

logger = logging.getLogger(__name__)

CLAIM_GRACE_SECONDS = 300
"""Age after which an e-mail claim whose contact was never stored may be taken over."""

MAX_WRITE_ATTEMPTS = 5
"""Waves a command may be retried in after losing a race with another writer."""


@dataclass(frozen=True)
class RawMessage:
    """One consumed Kafka record."""

    value: bytes | None
    key: bytes | None
    position: SourcePosition


@dataclass
class BatchOutput:
    """Results, events and dead letters of one batch, published before its offsets commit."""

    results: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    membership_events: list[dict[str, Any]] = field(default_factory=list)
    consent_events: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[Undecodable] = field(default_factory=list)


@dataclass
class _Pending:
    decoded: Decoded
    command: ContactCommand
    attempts: int = 0


class ContactBatchApplier:
    """Applies contact commands idempotently, in order per contact, in bulk."""

    def __init__(
        self,
        store: Store,
        schemas: CommandSchemas,
        clock: Callable[[], datetime] = utcnow,
        catalog: ListCatalog | None = None,
        confirmation_secret: str = "contact-pipeline-development-secret",
        confirmation_max_age_seconds: int = 7 * 24 * 3600,
    ) -> None:
        self.confirmation_secret = confirmation_secret
        self.confirmation_max_age_seconds = confirmation_max_age_seconds
        self.store = store
        self.schemas = schemas
        self.clock = clock
        self.catalog = catalog or ListCatalog(store)
        self._lists: dict[str, TenantLists] = {}

    async def apply(self, messages: list[RawMessage]) -> BatchOutput:
        """Apply a batch; raises StoreUnavailable (retriable) if the store fails."""
        output = BatchOutput()
        decoded: list[Decoded] = []
        for message in messages:
            item = decode(message.value, message.key, message.position)
            if isinstance(item, Undecodable):
                output.dead_letters.append(item)
            else:
                decoded.append(item)

        # Redelivered commands: republish the outcome stored the first time. The
        # contacts of the first wave load at the same time, to save a round of waiting.
        stored, prefetched = await asyncio.gather(
            self.store.load_results(result_id(d) for d in decoded),
            self.store.load_contacts(_doc_ids(decoded)),
        )
        fresh: list[Decoded] = []
        seen: dict[str, Decoded] = {}
        repeats: list[Decoded] = []
        for item in decoded:
            item_id = result_id(item)
            if item_id in stored:
                _republish(output, stored[item_id])
            elif item_id in seen:
                repeats.append(item)
            else:
                seen[item_id] = item
                fresh.append(item)

        new_outcomes: dict[str, dict[str, Any]] = {}
        pending: list[_Pending] = []
        for item in fresh:
            try:
                command = validate_command(item, self.schemas)
                if command.type == "membership.confirm":
                    self._check_token(command)
            except FieldError as exc:
                new_outcomes[result_id(item)] = self._outcome(
                    item, "rejected", exc.code, exc.reason, errors=[exc.to_dict()]
                )
                continue
            except InvalidCommand as exc:
                new_outcomes[result_id(item)] = self._outcome(
                    item, "rejected", exc.code, exc.message, errors=exc.errors
                )
                continue
            pending.append(_Pending(item, command))

        self._lists = await self._load_lists(pending)
        await self._apply_in_waves(pending, new_outcomes, prefetched)
        await self._count_members(decoded, stored, new_outcomes)

        await self.store.save_results(list(new_outcomes.values()))
        for outcome in new_outcomes.values():
            _republish(output, outcome)
        for item in repeats:
            output.results.append(new_outcomes[result_id(item)]["result"])
        return output

    def _check_token(self, command: ContactCommand) -> None:
        """Check a confirmation token's signature, age and subject; keep its nonce."""
        claim = read_confirmation_token(
            self.confirmation_secret, command.fields["token"], self.confirmation_max_age_seconds
        )
        subject = (command.tenant_id, command.contact_id, command.list_id)
        if (claim.tenant_id, claim.contact_id, claim.list_id) != subject:
            raise FieldError(
                "payload.token",
                "(token of another membership)",
                "this confirmation token belongs to another contact or list; use the link "
                "from this contact's own confirmation e-mail",
                code="invalid_token",
            )
        command.fields["nonce"] = claim.nonce

    async def _load_lists(self, pending: list[_Pending]) -> dict[str, TenantLists]:
        """Return the lists of every tenant in the batch, as fresh as the catalog allows."""
        needed: dict[str, set[str]] = {}
        for item in pending:
            list_ids_of_tenant = needed.setdefault(item.command.tenant_id, set())
            if item.command.list_id is not None:
                list_ids_of_tenant.add(item.command.list_id)
        return {
            tenant_id: await self.catalog.tenant_lists(tenant_id, list_ids)
            for tenant_id, list_ids in needed.items()
        }

    async def _count_members(
        self,
        decoded: list[Decoded],
        stored: dict[str, dict[str, Any]],
        outcomes: dict[str, dict[str, Any]],
    ) -> None:
        """Add the batch's member-count changes to the per-partition counters, once.

        A change counts at the message where its command was first decided. The
        counter records the last offset it covers, so a batch delivered again
        after a crash adds nothing twice, and the same command sent again later
        (at another offset) adds nothing at all. A batch without membership
        changes reads and writes no counter.
        """
        changes: dict[str, list[tuple[Decoded, dict[str, int]]]] = {}
        for item in decoded:
            outcome = stored.get(result_id(item)) or outcomes.get(result_id(item))
            if outcome is None or not outcome.get("listDelta"):
                continue
            if outcome.get("origin") != _origin(item.position):
                continue
            changes.setdefault(_counter_id(item), []).append((item, outcome["listDelta"]))
        if not changes:
            return

        counters = await self.store.load_list_counts(changes)
        for counter_id, counted in changes.items():
            covered = counters.get(counter_id, {}).get("offset", -1)
            fresh = [(item, delta) for item, delta in counted if item.position.offset > covered]
            if not fresh:
                continue
            totals: dict[str, int] = {}
            for _, delta in fresh:
                for list_id, change in delta.items():
                    totals[list_id] = totals.get(list_id, 0) + change
            last = max(item.position.offset for item, _ in fresh)
            await self.store.add_list_counts(counter_id, fresh[0][0].tenant_id, last, totals)

    async def _apply_in_waves(
        self,
        pending: list[_Pending],
        outcomes: dict[str, dict[str, Any]],
        prefetched: dict[str, dict[str, Any]],
    ) -> None:
        queues: dict[str, deque[_Pending]] = {}
        for item in pending:
            queues.setdefault(item.command.doc_id, deque()).append(item)

        docs: dict[str, dict[str, Any]] | None = prefetched
        while queues:
            wave = [queue.popleft() for queue in queues.values()]
            queues = {doc_id: queue for doc_id, queue in queues.items() if queue}
            retry = await self._apply_wave(wave, outcomes, docs)
            docs = None
            for item in retry:
                item.attempts += 1
                if item.attempts >= MAX_WRITE_ATTEMPTS:
                    outcomes[result_id(item.decoded)] = self._outcome(
                        item.decoded,
                        "rejected",
                        "concurrent_modification",
                        "the contact kept changing under concurrent writers; "
                        "send the command again",
                    )
                    continue
                queues.setdefault(item.command.doc_id, deque()).appendleft(item)

    async def _apply_wave(
        self,
        wave: list[_Pending],
        outcomes: dict[str, dict[str, Any]],
        docs: dict[str, dict[str, Any]] | None,
    ) -> list[_Pending]:
        """Apply one command per contact; return the commands to retry in the next wave.

        ``docs`` contains the wave's contacts when they were loaded ahead; otherwise
        they are loaded here.
        """
        now = self.clock()
        if docs is None:
            docs = await self.store.load_contacts(item.command.doc_id for item in wave)

        writes: list[tuple[_Pending, Write]] = []
        for item in wave:
            try:
                decision = decide(
                    docs.get(item.command.doc_id),
                    item.command,
                    now,
                    self._lists.get(item.command.tenant_id),
                )
            except CommandRejected as exc:
                outcomes[result_id(item.decoded)] = self._rejected(item.decoded, exc)
                continue
            if isinstance(decision, AlreadyApplied):
                outcomes[result_id(item.decoded)] = self._from_history(
                    item, decision, docs[item.command.doc_id]
                )
                continue
            decision.document["_commands"][-1]["origin"] = _origin(item.decoded.position)
            writes.append((item, decision))

        retry: list[_Pending] = []
        writes = await self._claim_emails(writes, outcomes, retry, now)

        inserts = [write for _, write in writes if write.previous_version is None]
        replaces = [write for _, write in writes if write.previous_version is not None]
        failed = await self.store.insert_contacts([write.document for write in inserts])
        failed |= await self.store.replace_contacts(
            [(write.document, write.previous_version) for write in replaces]  # type: ignore[misc]
        )

        releases: list[tuple[str, str]] = []
        for item, write in writes:
            if write.document["_id"] in failed:
                retry.append(item)
                continue
            if write.release_email_key:
                releases.append(
                    (_claim_id(item.command, write.release_email_key), write.document["_id"])
                )
            outcomes[result_id(item.decoded)] = self._applied(item, write)
        await self.store.release_email_keys(releases)
        return retry

    async def _claim_emails(
        self,
        writes: list[tuple[_Pending, Write]],
        outcomes: dict[str, dict[str, Any]],
        retry: list[_Pending],
        now: datetime,
    ) -> list[tuple[_Pending, Write]]:
        """Claim new e-mail keys; hold back writes whose address another contact has.

        A claim is a document whose ``_id`` is the tenant and e-mail key, so of
        two contacts that race for one address exactly one insert succeeds,
        whichever worker runs them.
        """
        claiming = [(item, write) for item, write in writes if write.claim_email_key]
        if not claiming:
            return writes

        claim_ids = {
            id(write): _claim_id(item.command, write.claim_email_key)  # type: ignore[arg-type]
            for item, write in claiming
        }

        # Insert claims first: usually no contact has the address yet, and the
        # insert both checks and claims it in one round trip.
        blocked: set[int] = set()
        first_claims: list[tuple[str, str]] = []
        claimed_in_wave: set[str] = set()
        inserting: list[tuple[_Pending, Write]] = []
        contested: list[tuple[_Pending, Write]] = []
        for item, write in claiming:
            claim_id = claim_ids[id(write)]
            if claim_id in claimed_in_wave:
                # Another contact in this wave claims the same address first; the
                # next wave reads its claim and decides.
                blocked.add(id(write))
                retry.append(item)
                continue
            claimed_in_wave.add(claim_id)
            first_claims.append((claim_id, write.document["_id"]))
            inserting.append((item, write))
        for index in await self.store.claim_email_keys(first_claims, now):
            contested.append(inserting[index])
        if not contested:
            return [(item, write) for item, write in writes if id(write) not in blocked]

        claims = await self.store.load_email_claims(claim_ids[id(w)] for _, w in contested)
        owner_docs = await self.store.load_contacts(claim["owner"] for claim in claims.values())
        for item, write in contested:
            claim_id = claim_ids[id(write)]
            claim = claims.get(claim_id)
            if claim is None:
                # Released between our insert and our read: try again.
                blocked.add(id(write))
                retry.append(item)
                continue
            owner = claim["owner"]
            if owner == write.document["_id"]:
                continue
            owner_doc = owner_docs.get(owner)
            if _claim_is_held(claim, owner_doc, write.claim_email_key, now):
                blocked.add(id(write))
                if owner_doc is None:
                    # Claimed moments ago by a writer that has not stored its contact yet.
                    retry.append(item)
                else:
                    self._email_taken(item, owner_doc, outcomes, retry)
                continue
            if not await self.store.take_over_email_key(
                claim_id, owner, write.document["_id"], now
            ):
                blocked.add(id(write))
                retry.append(item)
        return [(item, write) for item, write in writes if id(write) not in blocked]

    def _email_taken(
        self,
        item: _Pending,
        owner_doc: dict[str, Any],
        outcomes: dict[str, dict[str, Any]],
        retry: list[_Pending],
    ) -> None:
        command = item.command
        if command.type == "contact.create" and command.if_exists == "merge":
            # Merge into the contact that has the address; the next wave loads it.
            item.command = replace(command, contact_id=owner_doc["id"])
            retry.append(item)
            return
        outcomes[result_id(item.decoded)] = self._rejected(
            item.decoded,
            CommandRejected(
                "duplicate_email",
                f"contact {owner_doc['id']} already has this e-mail address; update that contact, "
                'or send contact.create with "ifExists": "merge"',
                field="payload.changes.email"
                if command.type == "contact.update"
                else "payload.email",
                value=command.fields.get("email"),
                existingContactId=owner_doc["id"],
            ),
        )

    def _applied(self, item: _Pending, write: Write) -> dict[str, Any]:
        outcome = self._outcome(
            item.decoded,
            "applied",
            write.code,
            _applied_message(write),
            contact_id=write.command.contact_id,
            version=write.document["version"],
            changed_fields=write.changed_fields,
            event=write.event,
            merged=write.merged,
        )
        _add_memberships(outcome, write.membership_events, write.list_delta, write.document)
        if write.consent_events:
            outcome["consentEvents"] = write.consent_events
        if write.ignored_fields:
            outcome["result"]["ignoredFields"] = write.ignored_fields
        return outcome

    def _from_history(
        self, item: _Pending, decision: AlreadyApplied, doc: dict[str, Any]
    ) -> dict[str, Any]:
        entry = decision.entry
        event = None
        if entry.get("eventId") and doc.get("version") == entry["version"]:
            event_type = {"created": "contact.created", "deleted": "contact.deleted"}.get(
                entry["code"], "contact.updated"
            )
            event = build_event(
                item.command.envelope, event_type, doc, entry["changedFields"], entry["at"]
            )
        outcome = self._outcome(
            item.decoded,
            "applied",
            entry["code"],
            "command was applied before; nothing changed this time",
            contact_id=item.command.contact_id,
            version=entry["version"],
            changed_fields=entry["changedFields"],
            event=event,
            merged=entry["code"] == "merged",
        )
        _add_memberships(
            outcome, entry.get("membershipEvents") or [], entry.get("listDelta") or {}, entry
        )
        if entry.get("consentEvents"):
            outcome["consentEvents"] = entry["consentEvents"]
        return outcome

    def _rejected(self, decoded: Decoded, exc: CommandRejected) -> dict[str, Any]:
        extra = {k: v for k, v in exc.details.items() if k not in ("field", "value")}
        outcome = self._outcome(
            decoded, "rejected", exc.code, exc.message, errors=rejection_errors(exc)
        )
        outcome["result"].update(extra)
        return outcome

    def _outcome(
        self,
        decoded: Decoded,
        outcome: str,
        code: str,
        message: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        contact_id: str | None = None,
        version: int | None = None,
        changed_fields: list[str] | None = None,
        event: dict[str, Any] | None = None,
        merged: bool = False,
    ) -> dict[str, Any]:
        stored = build_outcome(
            decoded,
            outcome,
            code,
            message,
            self.clock(),
            subject={"contactId": contact_id},
            errors=errors,
            version=version,
            changed_fields=changed_fields,
            event=event,
        )
        stored["merged"] = merged
        if merged:
            stored["result"]["merged"] = True
        return stored


def _claim_is_held(
    claim: dict[str, Any], owner_doc: dict[str, Any] | None, key: str | None, now: datetime
) -> bool:
    """Tell whether a claim still protects its owner's address.

    A claim outlives its purpose when the owner was deleted or changed its
    address and a crash skipped the release. It also does when the owner's
    insert never happened, but that is only assumed after a grace period,
    because another worker may be between its claim and its insert.
    """
    if owner_doc is None:
        claimed_at = claim.get("claimedAt")
        return claimed_at is None or (now - claimed_at).total_seconds() < CLAIM_GRACE_SECONDS
    return is_live(owner_doc) and owner_doc.get("emailKey") == key


def _republish(output: BatchOutput, stored: dict[str, Any]) -> None:
    output.results.append(stored["result"])
    if stored.get("event") is not None:
        output.events.append(stored["event"])
    output.membership_events.extend(stored.get("membershipEvents") or [])
    output.consent_events.extend(stored.get("consentEvents") or [])


def _add_memberships(
    outcome: dict[str, Any],
    events: list[dict[str, Any]],
    delta: dict[str, int],
    source: dict[str, Any],
) -> None:
    """Attach membership events and count changes to an outcome, with the message that made them.

    ``source`` is the written document, whose last history entry has the
    command's origin, or that history entry itself.
    """
    entry = source["_commands"][-1] if "_commands" in source else source
    outcome["origin"] = entry.get("origin")
    if events:
        outcome["membershipEvents"] = events
        outcome["result"]["membershipChanges"] = [
            {"listId": event["listId"], "type": event["type"], "reason": event["reason"]}
            for event in events
        ]
    if delta:
        outcome["listDelta"] = delta


def _origin(position: SourcePosition) -> list[Any]:
    return [position.topic, position.partition, position.offset]


def _counter_id(decoded: Decoded) -> str:
    position = decoded.position
    return f"{decoded.tenant_id}:{position.topic}:{position.partition}"


def _applied_message(write: Write) -> str:
    command_type = write.command.type
    if write.code == "unchanged":
        if command_type.startswith("membership."):
            return "command applied; the membership already was in this state"
        return "command applied; the contact already had these values"
    if write.ignored_fields:
        kept = ", ".join(write.ignored_fields)
        return f"command applied; kept {kept} because the contact unsubscribed"
    if command_type.startswith("membership."):
        return f"membership of list {write.command.list_id} {write.code}"
    if command_type.startswith("consent."):
        return f"{write.command.fields['channel']} consent {write.code}"
    if command_type == "message.sent":
        return "send recorded"
    return f"contact {write.code}"


def _doc_ids(decoded: list[Decoded]) -> set[str]:
    """Return the contact document ids that the messages name, as far as they can be read."""
    ids = set()
    for item in decoded:
        payload = item.message.get("payload")
        if isinstance(payload, dict) and isinstance(payload.get("contactId"), str):
            ids.add(contact_doc_id(item.tenant_id, payload["contactId"]))
    return ids


def _claim_id(command: ContactCommand, key: str) -> str:
    return f"{command.tenant_id}:{key}"


__all__ = ["BatchOutput", "ContactBatchApplier", "RawMessage", "contact_doc_id"]
