"""Audit entries: built from change events, hash-chained per source partition, and verified.

Each partition of a source topic has one chain, ``"<topic>/<partition>"``, and
one writer, because one consumer of the group owns that partition. An entry's
``hash`` is the SHA-256 of its canonical JSON without ``hash``, and it names the
previous entry's hash in ``prevHash``, so changing, removing, inserting or
moving an entry breaks the chain at that spot.

Entries depend only on the chain head and the source record, never on the
clock, so a batch chained again after a crash yields byte-identical entries,
which the verifier skips as republished.

Everything here is pure: no Kafka, no store.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from contact_pipeline.kafka import topics as topic_names

GENESIS_HASH = "0" * 64
"""The ``prevHash`` of seq 0 of every chain."""

ENTRY_NAMESPACE = uuid.UUID("eb439a0e-ea6a-457f-aca7-f48eaa3df3ca")
"""UUID namespace of audit entry ids, which derive from the source event id."""

SOURCE_TOPICS = (
    topic_names.EVENTS,
    topic_names.MEMBERSHIP_EVENTS,
    topic_names.LIST_EVENTS,
    topic_names.CONSENT_EVENTS,
    topic_names.CONTACTABILITY_REPLIES,
)
"""Base names of the topics whose records become audit entries."""

REPUBLISH_WINDOW = 10_000
"""Entries per chain whose hashes the verifier keeps to recognise a republished copy.

A crash between publishing a batch and saving the chain head republishes at most
that batch, which is far smaller by default (``CONTACT_PIPELINE_BATCH_MAX_MESSAGES``, 500)."""

DECISION_ACTION = "contactability.decided"
UNREADABLE_ACTION = "audit.unreadable_source"

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")
_PHONE = re.compile(r"\+[\d\s().-]{6,24}")
_CODE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


@dataclass(frozen=True)
class SourceRecord:
    """One record of a source topic; ``topic`` is the base name without the deployment prefix."""

    topic: str
    partition: int
    offset: int
    value: bytes
    timestamp_ms: int
    """Kafka record time, used only when the event carries no readable time."""

    @property
    def chain(self) -> str:
        """Return the id of the chain this record belongs to."""
        return chain_id(self.topic, self.partition)


@dataclass(frozen=True)
class ChainHead:
    """The last entry of a chain: its seq and hash, and the source offset it came from."""

    chain: str
    seq: int = -1
    hash: str = GENESIS_HASH
    offset: int = -1


def chain_id(topic: str, partition: int) -> str:
    """Return the chain id of a source partition: ``"<base topic>/<partition>"``."""
    return f"{topic}/{partition}"


def canonical_json(value: Any) -> bytes:
    """Encode as canonical JSON: sorted keys, no spaces, UTF-8 without escapes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def entry_hash(entry: dict[str, Any]) -> str:
    """Return the hex SHA-256 of an entry's canonical JSON without its ``hash`` field."""
    body = {key: value for key, value in entry.items() if key != "hash"}
    return hashlib.sha256(canonical_json(body)).hexdigest()


def encode_entry(entry: dict[str, Any]) -> bytes:
    """Return the bytes an entry is published as: its canonical JSON, hash included."""
    return canonical_json(entry)


def safe_id(value: Any) -> str | None:
    """Return an id as a string, replacing one that is an e-mail address or phone number.

    Ids are chosen by callers, and some use an address as the id. The
    replacement is a SHA-256 prefix, so the same id always maps to the same value
    and a query can map its argument the same way.
    """
    if value is None:
        return None
    text = str(value)
    if _EMAIL.search(text) is None and _PHONE.fullmatch(text) is None:
        return text
    # NOTE: an unkeyed hash hides the address from readers, but anyone who guesses the
    # address can compute the same value and so find the entries.
    return "redacted-" + hashlib.sha256(text.encode()).hexdigest()[:16]


def build_entry(head: ChainHead, record: SourceRecord) -> dict[str, Any]:
    """Build the entry that follows ``head`` for one source record.

    Only ids, codes and field names are taken from the event. Its ``data``,
    which may contain e-mail addresses and phone numbers, is never copied. A
    membership entry takes only the status and source codes from there.
    """
    event = _decode(record.value)
    facts = _describe(record, event) if event is not None else _unreadable(record)
    entry = {
        "chain": record.chain,
        "seq": head.seq + 1,
        "prevHash": head.hash,
        **facts,
        "source": {"topic": record.topic, "partition": record.partition, "offset": record.offset},
    }
    entry["hash"] = entry_hash(entry)
    return entry


def extend_chain(
    head: ChainHead, records: Iterable[SourceRecord]
) -> tuple[list[dict[str, Any]], ChainHead]:
    """Chain records after ``head``; return the new entries and the new head.

    Records at or below the head's source offset are skipped, because an earlier
    batch chained them and saved its head before the consumer offsets were committed.
    """
    entries = []
    for record in records:
        if record.chain != head.chain:
            raise ValueError(f"record of chain {record.chain} passed to chain {head.chain}")
        if record.offset <= head.offset:
            continue
        entry = build_entry(head, record)
        entries.append(entry)
        head = ChainHead(head.chain, entry["seq"], entry["hash"], record.offset)
    return entries, head


def _decode(value: bytes) -> dict[str, Any] | None:
    try:
        event = json.loads(value)
    except (UnicodeDecodeError, ValueError):
        return None
    return event if isinstance(event, dict) else None


def _describe(record: SourceRecord, event: dict[str, Any]) -> dict[str, Any]:
    if record.topic == topic_names.CONTACTABILITY_REPLIES:
        return _decision(record, event)

    contact_id = safe_id(event.get("contactId"))
    list_id = safe_id(event.get("listId"))
    entity, changes = _entity_and_changes(record.topic, event, contact_id, list_id)
    event_id = safe_id(event.get("id"))
    return {
        "id": _entry_id(record, event_id),
        "time": _time(event.get("time"), record.timestamp_ms),
        "tenantId": safe_id(event.get("tenantId")),
        "actor": _actor(event.get("actor")),
        "action": _code(event.get("type")) or "unknown",
        "entity": entity,
        "changes": changes,
        "eventId": event_id,
        "commandId": safe_id(event.get("commandId")),
    }


def _entity_and_changes(
    topic: str, event: dict[str, Any], contact_id: str | None, list_id: str | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    fields = _field_names(event.get("changedFields"))
    version = event.get("version") if isinstance(event.get("version"), int) else None
    data = event.get("data")
    if not isinstance(data, dict):
        data = {}

    if topic == topic_names.MEMBERSHIP_EVENTS:
        entity = {
            "type": "membership",
            "id": f"{list_id}:{contact_id}",
            "contactId": contact_id,
            "listId": list_id,
        }
        changes = {
            "status": _code(data.get("status")),
            "source": _code(data.get("source")),
            "reason": _code(event.get("reason")),
        }
        return entity, changes

    if topic == topic_names.LIST_EVENTS:
        entity = {"type": "list", "id": list_id, "listId": list_id}
        if str(event.get("type", "")).startswith("list.backfill."):
            return entity, {
                "backfillId": safe_id(event.get("backfillId")),
                "reason": _code(event.get("reason")),
            }
        return entity, {"fields": fields, "version": version}

    if topic == topic_names.CONSENT_EVENTS:
        entity = {"type": "consent", "id": contact_id, "contactId": contact_id}
        if list_id is not None:
            entity["listId"] = list_id
        channel = event.get("channel", data.get("channel"))
        return entity, {"channel": _code(channel), "fields": fields}

    entity = {"type": "contact", "id": contact_id, "contactId": contact_id}
    return entity, {"fields": fields, "version": version}


def _decision(record: SourceRecord, reply: dict[str, Any]) -> dict[str, Any]:
    request_id = safe_id(reply.get("requestId"))
    reasons = reply.get("reasons")
    if not isinstance(reasons, list):
        reasons = []
    codes = [
        _code(reason.get("code") if isinstance(reason, dict) else reason) for reason in reasons
    ]
    actor = reply.get("actor") or {"type": "system", "id": "contactability"}
    return {
        "id": _entry_id(record, request_id),
        "time": _time(reply.get("decidedAt"), record.timestamp_ms),
        "tenantId": safe_id(reply.get("tenantId")),
        "actor": _actor(actor),
        "action": DECISION_ACTION,
        "entity": {
            "type": "decision",
            "id": request_id,
            "contactId": safe_id(reply.get("contactId")),
            "listId": safe_id(reply.get("listId")),
        },
        "changes": {
            "decision": _code(reply.get("decision")),
            "reasons": [code for code in codes if code is not None],
            "channel": _code(reply.get("channel")),
        },
        "eventId": request_id,
        "commandId": None,
    }


def _unreadable(record: SourceRecord) -> dict[str, Any]:
    # The record still gets an entry, so the chain accounts for every source offset.
    return {
        "id": _entry_id(record, None),
        "time": _time(None, record.timestamp_ms),
        "tenantId": None,
        "actor": None,
        "action": UNREADABLE_ACTION,
        "entity": {"type": "unknown", "id": None},
        "changes": {"error": "not a JSON object"},
        "eventId": None,
        "commandId": None,
    }


def _entry_id(record: SourceRecord, event_id: str | None) -> str:
    # From the event id, so a republished event keeps its entry id; a record without
    # one is named by its position instead.
    if event_id is not None:
        source = f"{record.topic}\n{event_id}"
    else:
        source = f"{record.topic}\n{record.partition}\n{record.offset}"
    return str(uuid.uuid5(ENTRY_NAMESPACE, source))


def _actor(actor: Any) -> dict[str, Any] | None:
    if not isinstance(actor, dict):
        return None
    return {"type": _code(actor.get("type")), "id": safe_id(actor.get("id"))}


def _code(value: Any) -> str | None:
    """Return a short code (status, reason, type) as it is; free text and other values as None."""
    if isinstance(value, str) and _CODE.fullmatch(value) and _EMAIL.search(value) is None:
        return value
    return None


def _field_names(value: Any) -> list[str]:
    if not isinstance(value, list):
        return []
    return [name for name in (safe_id(item) for item in value if isinstance(item, str)) if name]


def _time(value: Any, fallback_ms: int) -> str:
    """Return a UTC time of fixed width, so that entry times sort as strings."""
    parsed = None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = None
    if parsed is None:
        parsed = datetime.fromtimestamp(fallback_ms / 1000, UTC)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return format_time(parsed)


def format_time(moment: datetime) -> str:
    """Format a time as entries store it: UTC, microseconds, ``Z``."""
    return moment.astimezone(UTC).strftime(_TIME_FORMAT)


# --- verification -------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """The first bad entry found: what is wrong and where it is."""

    kind: str
    """``altered``, ``removed``, ``inserted`` or ``reordered``."""
    location: str
    """Input position for people: ``line N`` or ``partition P offset O``."""
    index: int
    """Position in the input, to pick the first problem across chains."""
    detail: str
    chain: str | None = None
    seq: int | None = None
    entry_id: str | None = None

    def describe(self) -> str:
        """Return one line naming the entry and what is wrong with it."""
        if self.chain is None:
            # Not even an entry: nothing but its place in the input can name it.
            return f"{self.kind} entry at {self.location}: {self.detail}"
        return (
            f"{self.kind} entry: chain={self.chain} seq={self.seq} id={self.entry_id} "
            f"at {self.location}: {self.detail}"
        )


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of a verification: counts, and the first problem if there is one."""

    entries: int
    """Entries verified, republished copies not counted."""
    chains: int
    republished: int
    problem: Problem | None

    @property
    def ok(self) -> bool:
        """Tell whether every chain verified."""
        return self.problem is None

    def summary(self) -> str:
        """Return the one-line result for people."""
        if self.problem is not None:
            return f"audit verify failed: {self.problem.describe()}"
        text = f"{self.entries} entries in {self.chains} chains verified"
        if self.republished:
            text += f"; {self.republished} republished duplicates skipped"
        return text


@dataclass
class _Linked:
    hash: str
    location: str


@dataclass
class _ChainState:
    last_seq: int = -1
    recent: dict[int, _Linked] = field(default_factory=dict)
    problem: Problem | None = None
    missing_from: int | None = None
    """First missing seq of a gap, until a later entry shows it was moved instead."""


class ChainVerifier:
    """Verifier of audit entries in the order they were read, chain by chain.

    Feed every entry with :meth:`add`, optionally the heads saved in the store
    with :meth:`check_heads`, then read :meth:`result`. Memory grows with the
    number of chains and :data:`REPUBLISH_WINDOW`, not with the log.
    """

    def __init__(self, window: int = REPUBLISH_WINDOW) -> None:
        self.window = window
        self.chains: dict[str, _ChainState] = {}
        self.read = 0
        self.republished = 0
        self.problems: list[Problem] = []

    def add(self, location: str, raw: bytes | str) -> None:
        """Check the next entry read from ``location``."""
        index = self.read
        self.read += 1
        entry, error = _parse_entry(raw)
        if entry is None:
            self.problems.append(Problem("altered", location, index, error))
            return

        state = self.chains.setdefault(entry["chain"], _ChainState())
        if state.problem is not None:
            self._resolve_gap(state, entry, location)
            return

        problem = self._check(state, entry, location, index)
        if problem is not None:
            state.problem = problem
            self.problems.append(problem)

    def check_heads(self, heads: Iterable[ChainHead]) -> None:
        """Compare the chains read with the heads saved in the store.

        A head is saved only after its entries were published, so a chain that
        ends before its head lost entries at the end, which the links alone
        cannot show. A chain may run past its head after a crash.
        """
        for head in sorted(heads, key=lambda item: item.chain):
            state = self.chains.get(head.chain)
            if state is not None and state.problem is not None:
                continue
            index = self.read + len(self.problems)
            location = f"end of chain {head.chain}"
            if state is None or state.last_seq < head.seq:
                last = "no entries" if state is None else f"its last entry is seq {state.last_seq}"
                self.problems.append(
                    Problem(
                        "removed",
                        location,
                        index,
                        f"{last}, but the chain head in the store is at seq {head.seq}",
                        head.chain,
                        head.seq,
                    )
                )
                continue
            linked = state.recent.get(head.seq)
            if linked is not None and linked.hash != head.hash:
                self.problems.append(
                    Problem(
                        "altered",
                        linked.location,
                        index,
                        "its hash differs from the chain head saved in the store",
                        head.chain,
                        head.seq,
                    )
                )

    def result(self) -> VerifyResult:
        """Return the counts and the first problem in input order."""
        first = min(self.problems, key=lambda problem: problem.index, default=None)
        verified = self.read - self.republished
        return VerifyResult(verified, len(self.chains), self.republished, first)

    def _check(
        self, state: _ChainState, entry: dict[str, Any], location: str, index: int
    ) -> Problem | None:
        seq = entry["seq"]
        hash_ok = entry["hash"] == entry_hash(entry)

        def problem(kind: str, detail: str) -> Problem:
            return Problem(kind, location, index, detail, entry["chain"], seq, entry.get("id"))

        known = state.recent.get(seq)
        if known is not None:
            if hash_ok and entry["hash"] == known.hash:
                # A batch chained again after a crash: byte-identical, so nothing changed.
                self.republished += 1
                return None
            return problem(
                "inserted", f"seq {seq} is already at {known.location} with other content"
            )
        if seq <= state.last_seq:
            return problem(
                "inserted",
                f"seq {seq} lies more than {self.window} entries before the chain's last "
                f"seq {state.last_seq}, too far back to be a republished copy",
            )
        if not hash_ok:
            return problem("altered", "its hash does not match its content")
        if seq > state.last_seq + 1:
            state.missing_from = state.last_seq + 1
            missing = (
                f"seq {state.missing_from} is"
                if seq == state.missing_from + 1
                else f"seq {state.missing_from} to {seq - 1} are"
            )
            return problem("removed", f"{missing} missing before it")

        previous = state.recent.get(state.last_seq)
        expected = previous.hash if previous is not None else GENESIS_HASH
        if entry["prevHash"] != expected:
            where = (
                f"seq {state.last_seq} at {previous.location}" if previous else "the chain start"
            )
            return problem(
                "removed",
                f"its prevHash does not match the hash of {where}: an entry was removed or "
                "replaced there",
            )

        state.last_seq = seq
        state.recent[seq] = _Linked(entry["hash"], location)
        state.recent.pop(seq - self.window, None)
        return None

    def _resolve_gap(self, state: _ChainState, entry: dict[str, Any], location: str) -> None:
        # A "missing" seq that turns up later in the same chain was moved, not removed.
        problem = state.problem
        if problem is None or state.missing_from is None or problem.seq is None:
            return
        if not state.missing_from <= entry["seq"] < problem.seq:
            return
        state.problem = Problem(
            "reordered",
            problem.location,
            problem.index,
            f"seq {problem.seq} comes before seq {entry['seq']}, which is at {location}",
            problem.chain,
            problem.seq,
            problem.entry_id,
        )
        state.missing_from = None
        self.problems = [state.problem if item is problem else item for item in self.problems]


def _parse_entry(raw: bytes | str) -> tuple[dict[str, Any] | None, str]:
    try:
        entry = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        return None, "not a JSON audit entry"
    if not isinstance(entry, dict):
        return None, "not a JSON object"
    for name, kind in (("chain", str), ("seq", int), ("hash", str), ("prevHash", str)):
        value = entry.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            return None, f"field {name!r} is missing or not a {kind.__name__}"
    return entry, ""


def verify_entries(
    items: Iterable[tuple[str, bytes | str]], heads: Iterable[ChainHead] | None = None
) -> VerifyResult:
    """Verify ``(location, raw entry)`` pairs in order, and the store's heads if given."""
    verifier = ChainVerifier()
    for location, raw in items:
        verifier.add(location, raw)
    if heads is not None:
        verifier.check_heads(heads)
    return verifier.result()
