"""The ``contact-pipeline audit`` commands: verify, export and query the audit trail.

Runs on its own too: ``python -m contact_pipeline.audit.cli verify``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from aiokafka.errors import KafkaError

from contact_pipeline.audit.chain import ChainHead, ChainVerifier, VerifyResult, encode_entry
from contact_pipeline.audit.reader import read_audit_log
from contact_pipeline.audit.store import MAX_LOG_ENTRIES, AuditStore
from contact_pipeline.domain.errors import StoreUnavailable
from contact_pipeline.kafka import topics as topic_names
from contact_pipeline.settings import get_settings
from contact_pipeline.store.mongo import Store

audit_app = typer.Typer(
    help="Verify, export and query the hash-chained audit trail.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=1)


@audit_app.command("verify")
def verify(
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            exists=True,
            dir_okay=False,
            help="Verify this copy (one entry per line, as `audit export` writes) "
            "instead of the audit-log topic.",
        ),
    ] = None,
    heads: Annotated[
        bool | None,
        typer.Option(
            "--heads/--no-heads",
            help="Also compare each chain's end with the chain head saved in the store, "
            "which shows entries removed from the end. Default: on for the topic, off for --file.",
        ),
    ] = None,
) -> None:
    """Check every chain of the audit log; exit 1 naming the first bad entry."""
    check_heads = heads if heads is not None else file is None
    try:
        result = asyncio.run(_verify(file, check_heads))
    except (StoreUnavailable, KafkaError, RuntimeError) as exc:
        _fail(f"reading the audit log failed: {exc}")
    if not result.ok:
        typer.secho(result.summary(), fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1)
    typer.echo(result.summary())
    if not check_heads:
        typer.echo(
            "chain ends were not compared with the heads saved in the store, so entries cut "
            "from the end of a chain would pass; add --heads to compare them"
        )


async def _verify(file: Path | None, check_heads: bool) -> VerifyResult:
    verifier = ChainVerifier()
    # Heads are read before the entries because a head is saved only after its entries
    # are in the topic, so every head read first has its entries in what is read next.
    saved_heads = await _load_heads() if check_heads else None
    if file is not None:
        for location, line in _file_lines(file):
            verifier.add(location, line)
    else:
        settings = get_settings()
        topic = topic_names.topic_name(topic_names.AUDIT_LOG, settings.topic_prefix)
        async for record in read_audit_log(settings.kafka_bootstrap_servers, topic):
            verifier.add(record.location, record.value)
    if saved_heads is not None:
        verifier.check_heads(saved_heads)
    return verifier.result()


def _file_lines(path: Path) -> Iterator[tuple[str, str]]:
    with path.open(encoding="utf-8", newline="\n") as lines:
        for number, line in enumerate(lines, start=1):
            text = line.rstrip("\n")
            if text.strip():
                yield f"line {number}", text


async def _load_heads() -> list[ChainHead]:
    store = await _connect()
    try:
        return await AuditStore(store).all_heads()
    finally:
        await store.close()


@audit_app.command("export")
def export(
    out: Annotated[
        Path, typer.Option("--out", dir_okay=False, help="File to write, one entry per line.")
    ],
) -> None:
    """Copy every entry of the audit-log topic to a file, partition by partition."""
    try:
        count = asyncio.run(_export(out))
    except (KafkaError, RuntimeError, OSError) as exc:
        _fail(f"exporting the audit log failed: {exc}")
    typer.echo(f"{count} entries written to {out}")


async def _export(out: Path) -> int:
    settings = get_settings()
    topic = topic_names.topic_name(topic_names.AUDIT_LOG, settings.topic_prefix)
    count = 0
    with out.open("wb") as target:
        async for record in read_audit_log(settings.kafka_bootstrap_servers, topic):
            # Written as published, so the copy verifies byte for byte.
            target.write(record.value + b"\n")
            count += 1
    return count


@audit_app.command("log")
def log(
    tenant: Annotated[str, typer.Option(help="Tenant id.")],
    contact: Annotated[str | None, typer.Option(help="Only entries about this contact id.")] = None,
    list_id: Annotated[
        str | None, typer.Option("--list", help="Only entries about this list id.")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(help="Only entries at or after this RFC 3339 time; UTC when no offset."),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(help="Only entries before this RFC 3339 time; UTC when no offset."),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="Maximum entries printed.")] = MAX_LOG_ENTRIES,
) -> None:
    """Print a tenant's audit entries from the store as JSON lines, oldest first."""
    start = _parse_time("--since", since)
    end = _parse_time("--until", until)
    if start is not None and end is not None and start >= end:
        _fail(f"--since {since} is not before --until {until}")
    try:
        entries = asyncio.run(_log(tenant, contact, list_id, start, end, limit))
    except StoreUnavailable as exc:
        _fail(str(exc))
    for entry in entries:
        typer.echo(encode_entry(entry).decode())


async def _log(
    tenant: str,
    contact: str | None,
    list_id: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
) -> list[dict[str, Any]]:
    store = await _connect()
    try:
        return await AuditStore(store).query(
            tenant, contact_id=contact, list_id=list_id, since=since, until=until, limit=limit
        )
    finally:
        await store.close()


def _parse_time(option: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        _fail(f"{option} {value!r} is not an RFC 3339 time such as 2026-12-01T10:00:00Z")
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


async def _connect() -> Store:
    settings = get_settings()
    return await Store.connect(settings.mongodb_uri.get_secret_value(), settings.mongodb_database)


if __name__ == "__main__":
    audit_app()
