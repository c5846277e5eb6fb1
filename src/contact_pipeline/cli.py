"""The ``contact-pipeline`` command line."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from tqdm import tqdm

from contact_pipeline.audit.cli import audit_app
from contact_pipeline.kafka import topics as topic_names
from contact_pipeline.settings import REPOSITORY_ROOT, get_settings

app = typer.Typer(
    help="Contact-management pipeline: Kafka commands applied to a document store.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
topics_app = typer.Typer(
    help="Create and check the Kafka topics of topics.yaml.", no_args_is_help=True
)
dev_app = typer.Typer(
    help="Local Kafka and FerretDB servers for development and tests.", no_args_is_help=True
)
app.add_typer(topics_app, name="topics")
app.add_typer(dev_app, name="dev")
lists_app = typer.Typer(
    help="Read lists with their exact member counts, backfill progress and members.",
    no_args_is_help=True,
)
app.add_typer(lists_app, name="lists")
app.add_typer(audit_app, name="audit")

logger = logging.getLogger("contact_pipeline.cli")

MAX_REJECTED_LINES = 20
"""Rejected rows an import prints; `summary --show-rejected N` lists more."""

IDLE_TIMEOUT_SECONDS = 60.0
"""Stop waiting for results when none arrived for this long: the worker is likely not running."""


def _setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )


def _fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=1)


@app.command()
def worker(
    log_level: Annotated[str, typer.Option(help="Log level: DEBUG, INFO, WARNING.")] = "",
) -> None:
    """Run the worker: consume contact commands and apply them to the store."""
    from faust import Worker

    from contact_pipeline.agents.worker import create_app

    settings = get_settings()
    level = (log_level or settings.log_level).lower()
    faust_app = create_app(settings)
    Worker(faust_app, loglevel=level).execute_from_commandline()


@topics_app.command("apply")
def topics_apply(
    replication_factor: Annotated[
        int | None,
        typer.Option(
            help="Override the declared replication factor (1 for a single local broker)."
        ),
    ] = None,
) -> None:
    """Create missing topics; report existing topics whose settings differ from topics.yaml."""
    _setup_logging("WARNING")
    settings = get_settings()
    specs = topic_names.load_topics(settings.topics_file, settings.topic_prefix)
    try:
        created, drifts = asyncio.run(
            topic_names.apply_topics(
                settings.kafka_bootstrap_servers, specs, replication_factor=replication_factor
            )
        )
    except RuntimeError as exc:
        _fail(str(exc))
    for name in created:
        typer.echo(f"created {name}")
    for drift in drifts:
        typer.secho(
            f"differs {drift.topic}: {drift.setting} is {drift.actual}, topics.yaml declares "
            f"{drift.declared} (not changed: alter it by hand if intended)",
            fg=typer.colors.YELLOW,
        )
    unchanged = len(specs) - len(created)
    typer.echo(f"{len(created)} created, {unchanged} existed, {len(drifts)} settings differ")


@topics_app.command("list")
def topics_list() -> None:
    """Print the declared topics with partitions, key and purpose."""
    settings = get_settings()
    for spec in topic_names.load_topics(settings.topics_file, settings.topic_prefix):
        typer.echo(f"{spec.name}  partitions={spec.partitions}  key={spec.key}")
        typer.echo(f"    {spec.purpose}")


@app.command()
def send(
    file: Annotated[
        Path,
        typer.Argument(help="JSON Lines file: one command per line.", exists=True, dir_okay=False),
    ],
    wait: Annotated[bool, typer.Option(help="Wait for each command's result and print it.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the results.")] = 60.0,
) -> None:
    """Produce the commands of a JSON Lines file; list commands go first, to list-commands."""
    commands: list[dict[str, Any]] = []
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            command = json.loads(line)
        except json.JSONDecodeError as exc:
            _fail(f"{file}:{number}: not valid JSON ({exc.msg}); fix the line or remove it")
        if not isinstance(command, dict):
            _fail(f"{file}:{number}: expected a JSON object, got {type(command).__name__}")
        for field in ("commandId", "tenantId"):
            if not isinstance(command.get(field), str) or not command[field]:
                # The worker cannot address a result to such a message, only dead-letter it.
                _fail(
                    f"{file}:{number}: {field} is missing or not a string; every command needs one"
                )
        commands.append(command)
    outcome = asyncio.run(_send_in_order(commands, wait, timeout))
    counts: dict[str, int] = {}
    for command in commands:
        result = outcome["results"].get(str(command["commandId"]))
        if result is None:
            continue
        counts[result["outcome"]] = counts.get(result["outcome"], 0) + 1
        typer.echo(json.dumps(result, ensure_ascii=False))
    if wait:
        typer.echo(
            f"{counts.get('applied', 0)} applied, {counts.get('rejected', 0)} rejected, "
            f"{len(outcome['missing'])} without a result",
            err=True,
        )
    if wait and outcome["missing"]:
        _fail(
            f"{len(outcome['missing'])} results did not arrive (no progress for "
            f"{IDLE_TIMEOUT_SECONDS:g} s or more than {timeout:g} s in all); is a worker running? "
            "Start one with `contact-pipeline worker`; the commands stay on the topic"
        )


async def _send_in_order(
    commands: list[dict[str, Any]], wait: bool, timeout: float
) -> dict[str, Any]:
    """Send list commands first and wait for them, then the rest.

    List and contact commands travel on different topics, so nothing orders
    them against each other: a membership.add could otherwise reach the worker
    before the list.create above it in the file.
    """
    from contact_pipeline.kafka.client import is_list_command

    lists = [command for command in commands if is_list_command(command)]
    others = [command for command in commands if not is_list_command(command)]
    if not lists or not others:
        return await _send_and_collect(commands, wait, timeout, label="commands")
    first = await _send_and_collect(lists, True, timeout, label="list commands")
    second = await _send_and_collect(others, wait, timeout, label="commands")
    return {
        "results": {**first["results"], **second["results"]},
        "missing": first["missing"] + second["missing"],
    }


async def _send_and_collect(
    commands: list[dict[str, Any]], wait: bool, timeout: float, label: str
) -> dict[str, Any]:
    from contact_pipeline.kafka.client import ResultCollector, command_topic, produce_commands

    settings = get_settings()
    result_topic = topic_names.topic_name(topic_names.RESULTS, settings.topic_prefix)
    collector = ResultCollector(settings.kafka_bootstrap_servers, result_topic) if wait else None
    if collector:
        await collector.start()
    try:
        with tqdm(
            total=len(commands),
            desc=f"sending {label}",
            unit="cmd",
            file=sys.stderr,
            disable=len(commands) < 1000,
        ) as bar:
            await produce_commands(
                settings.kafka_bootstrap_servers,
                lambda command: command_topic(command, settings.topic_prefix),
                commands,
                on_sent=lambda sent: bar.update(sent - bar.n),
            )
        if not collector:
            return {"results": {}, "missing": []}
        ids = {str(command.get("commandId")) for command in commands}
        with tqdm(
            total=len(ids),
            desc="waiting for results",
            unit="cmd",
            file=sys.stderr,
            disable=len(ids) < 1000,
        ) as bar:
            results = await collector.wait_for(
                ids, timeout, on_result=lambda _: bar.update(1), idle_timeout=IDLE_TIMEOUT_SECONDS
            )
        return {"results": results, "missing": sorted(ids - set(results))}
    finally:
        if collector:
            await collector.stop()


@app.command("import")
def import_csv(
    file: Annotated[
        Path,
        typer.Argument(
            help="CSV export with a header row, UTF-8 with or without BOM.",
            exists=True,
            dir_okay=False,
        ),
    ],
    tenant: Annotated[str, typer.Option(help="Tenant id the contacts belong to.")],
    format: Annotated[
        str, typer.Option(help="Column mapping preset: auto, mailchimp or hubspot.")
    ] = "auto",
    map: Annotated[
        list[str] | None,
        typer.Option(
            "--map",
            help='Override one column mapping, "Column=field.path"; "Column=" ignores the column.',
        ),
    ] = None,
    import_id: Annotated[
        str | None,
        typer.Option(
            help=(
                "Id of this import; the default derives it from tenant and file content, "
                "so re-running the same file applies nothing twice."
            )
        ),
    ] = None,
    phone_region: Annotated[
        str | None,
        typer.Option(
            help=(
                "Two-letter country code (ISO 3166) for phone numbers written without "
                "a country code, such as US or DE."
            )
        ),
    ] = None,
    list_id: Annotated[
        str | None,
        typer.Option(
            "--list",
            help=(
                "Also add every imported contact to this static list (source import). "
                "Contacts that unsubscribed from the list stay off it."
            ),
        ),
    ] = None,
    wait: Annotated[
        bool, typer.Option(help="Wait for the worker's results and report rejected rows.")
    ] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the results.")] = 300.0,
) -> str:
    """Import a contact export; each row becomes a contact.create that merges into a match.

    Returns the import id, which `summary --import-id` takes.
    """
    from contact_pipeline.importer import csv_import

    if not tenant.replace("-", "").replace("_", "").isalnum():
        _fail(f"--tenant {tenant!r} is invalid: use letters, digits, '-' and '_'")
    try:
        plan = _plan_import(file, tenant, format, map or [], import_id, phone_region, list_id)
    except (csv_import.CsvImportError, ValueError) as exc:
        _fail(str(exc))
    if list_id is not None:
        from contact_pipeline.domain.errors import StoreUnavailable

        try:
            problem = asyncio.run(_static_list_problem(tenant, list_id))
        except StoreUnavailable as exc:
            _fail(f"--list {list_id}: cannot check the list: {exc}")
        if problem:
            _fail(f"--list {list_id}: {problem}; nothing was sent")
    typer.echo(
        f"import {plan['import_id']}: {plan['rows']} rows, format {plan['format']}, "
        f"{len(plan['commands'])} commands, {plan['skipped']} rows skipped"
    )
    for column in plan["ignored_columns"]:
        typer.echo(f"  column not imported: {column}")
    for problem in plan["problems"]:
        typer.echo(f"  row {problem.row}: {problem.column} {problem.value!r}: {problem.reason}")
    if plan["problems"]:
        typer.echo(
            f"  {len(plan['problems'])} problems in the file; rows without e-mail were skipped"
        )

    outcome = asyncio.run(_send_and_collect(plan["commands"], wait, timeout, label="rows"))
    if not wait:
        typer.echo(f"sent {len(plan['commands'])} commands; results are on the results topic")
        return str(plan["import_id"])
    _print_import_report(plan, outcome)
    if outcome["missing"]:
        _fail(
            f"{len(outcome['missing'])} results did not arrive (no progress for "
            f"{IDLE_TIMEOUT_SECONDS:g} s or more than {timeout:g} s in all); is a worker running? "
            "Start one with `contact-pipeline worker`; the commands stay on the topic"
        )
    return str(plan["import_id"])


async def _static_list_problem(tenant: str, list_id: str) -> str | None:
    """Return why contacts cannot be added to this list, or None if they can."""
    from contact_pipeline.store.mongo import Store

    settings = get_settings()
    store = await Store.connect(settings.mongodb_uri.get_secret_value(), settings.mongodb_database)
    try:
        doc = await store.load_list(f"{tenant}:{list_id}")
    finally:
        await store.close()
    if doc is None or doc.get("deleted"):
        return f"no such list in tenant {tenant}; create it with a list.create command first"
    if doc.get("type") != "static":
        return "the list is dynamic, so its criteria decide its members; import without --list"
    return None


def _plan_import(
    file: Path,
    tenant: str,
    format: str,
    overrides: list[str],
    import_id: str | None,
    phone_region: str | None = None,
    list_id: str | None = None,
) -> dict[str, Any]:
    import phonenumbers

    from contact_pipeline.domain.errors import FieldError
    from contact_pipeline.domain.normalize import normalize_phone
    from contact_pipeline.importer import csv_import

    if phone_region is not None and phone_region.upper() not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(
            f"--phone-region {phone_region!r} is not a known region: use a two-letter "
            "country code (ISO 3166-1 alpha-2) such as US, DE or FR"
        )

    headers = csv_import.read_header(file)
    if format != "auto" and format not in csv_import.MAPPINGS:
        known = ", ".join(["auto", *csv_import.MAPPINGS])
        raise ValueError(f"--format {format!r} is not a known preset; choose one of {known}")
    chosen = csv_import.detect_format(headers) if format == "auto" else format
    if chosen not in csv_import.MAPPINGS:
        known = ", ".join(csv_import.MAPPINGS)
        raise ValueError(
            f"--format {format!r}: no preset matches the columns of {file.name}; "
            f"choose one of {known} and adjust columns with --map"
        )
    override_map = csv_import.parse_mapping_overrides(overrides)
    unknown = csv_import.missing_columns(headers, override_map)
    if unknown:
        raise ValueError(
            f"--map names columns that {file.name} does not have: {', '.join(unknown)}"
        )
    mapping = {**csv_import.MAPPINGS[chosen], **override_map}
    # The id covers everything that shapes the commands, so a re-run with other
    # options is a new import rather than a replay of the first one's results.
    options = json.dumps([tenant, chosen, sorted(override_map.items()), phone_region, list_id])
    digest = hashlib.sha256(file.read_bytes() + options.encode()).hexdigest()[:12]
    chosen_id = import_id or f"{file.stem[:40]}-{digest}"

    commands: list[dict[str, Any]] = []
    problems: list[Any] = []
    rows = 0
    for row in csv_import.read_rows(file):
        rows += 1
        fields, row_problems = csv_import.row_to_fields(row, mapping)
        problems.extend(row_problems)
        if "email" not in fields:
            continue
        if phone_region and isinstance(fields.get("phone"), str):
            # The worker has no region to assume, so numbers are completed here. A number
            # that still does not parse is sent as it is, and the worker rejects it.
            with contextlib.suppress(FieldError):
                fields["phone"] = normalize_phone(
                    fields["phone"], default_region=phone_region.upper()
                )
        create = csv_import.build_create_command(
            fields,
            tenant_id=tenant,
            row_number=row.number,
            import_id=chosen_id,
            source_name=file.name,
        )
        commands.append(create)
        if list_id:
            commands.append(csv_import.build_list_command(create, list_id))
    return {
        "import_id": chosen_id,
        "format": chosen,
        "rows": rows,
        "commands": commands,
        "problems": problems,
        "skipped": rows - sum(1 for c in commands if c["type"] == "contact.create"),
        "list_id": list_id,
        "ignored_columns": csv_import.ignored_columns(headers, mapping),
        "tenant": tenant,
        "phone_region": phone_region,
    }


def _print_import_report(plan: dict[str, Any], outcome: dict[str, Any]) -> None:
    everything = list(outcome["results"].values())
    results = [r for r in everything if r.get("type") != "membership.add"]
    _print_list_report(plan, [r for r in everything if r.get("type") == "membership.add"])
    counts: dict[str, int] = {}
    for result in results:
        counts[result["code"]] = counts.get(result["code"], 0) + 1
    rejected = sorted(
        (r for r in results if r["outcome"] == "rejected"),
        key=lambda r: (r.get("meta") or {}).get("row", 0),
    )
    for result in rejected[:MAX_REJECTED_LINES]:
        typer.echo(_rejection_line(result))
    if len(rejected) > MAX_REJECTED_LINES:
        typer.echo(
            f"  ... {len(rejected) - MAX_REJECTED_LINES} more rejected rows; list them with "
            f"`contact-pipeline summary --tenant {plan['tenant']} --import-id {plan['import_id']} "
            f"--show-rejected {len(rejected)}`"
        )
    national = sum(
        1
        for result in rejected
        for error in result.get("errors") or []
        if error.get("field", "").endswith("phone") and "country code" in error.get("reason", "")
    )
    if national and not plan.get("phone_region"):
        typer.echo(
            f"  {national} rows have phone numbers without a country code; "
            "re-run with --phone-region (for example US or DE) to read them"
        )
    summary = ", ".join(f"{code} {count}" for code, count in sorted(counts.items()))
    typer.echo(f"import {plan['import_id']} finished: {summary or 'no results'}")


def _print_list_report(plan: dict[str, Any], results: list[dict[str, Any]]) -> None:
    if not plan.get("list_id"):
        return
    counts: dict[str, int] = {}
    for result in results:
        counts[result["code"]] = counts.get(result["code"], 0) + 1
    typer.echo(
        f"list {plan['list_id']}: {counts.pop('added', 0)} added, "
        f"{counts.pop('unchanged', 0)} already members, "
        f"{counts.pop('unsubscribed_from_list', 0)} kept off because they unsubscribed, "
        f"{counts.pop('contact_not_found', 0)} skipped because the row was rejected"
    )
    for code, count in sorted(counts.items()):
        example = next(r for r in results if r["code"] == code)
        typer.echo(f"  {count} x {code}: {example['message']}")


def _rejection_line(result: dict[str, Any]) -> str:
    row = (result.get("meta") or {}).get("row", "?")
    errors = result.get("errors") or [{"field": "", "value": None, "reason": result["message"]}]
    parts = [
        f"{e['field']} {e['value']!r}: {e['reason']}" if e["field"] else e["reason"] for e in errors
    ]
    return f"  row {row} rejected ({result['code']}): " + "; ".join(parts)


@app.command()
def summary(
    tenant: Annotated[str, typer.Option(help="Tenant id.")],
    import_id: Annotated[
        list[str] | None, typer.Option(help="Import id (correlation id); repeat for several.")
    ] = None,
    show_rejected: Annotated[
        int, typer.Option(help="How many rejected rows to list per import.")
    ] = 20,
) -> None:
    """Print the tenant's stored contacts and the outcomes of the imports given by --import-id."""
    report = asyncio.run(_summary(tenant, import_id or []))
    typer.echo(f"tenant {tenant}: {report['contacts']} contacts stored")
    for correlation_id, data in report["imports"].items():
        codes = data["codes"]
        if not codes:
            typer.echo(
                f"import {correlation_id}: not found; no results are stored for this tenant "
                "and import id (the import prints its id when it starts)"
            )
            continue
        merged = codes.get("merged", 0) + codes.get("unchanged", 0)
        rejected = sum(
            count
            for code, count in codes.items()
            if code not in ("created", "merged", "unchanged", "updated")
        )
        typer.echo(
            f"import {correlation_id}: {sum(codes.values())} rows processed, "
            f"{codes.get('created', 0)} created, {merged} duplicates merged "
            f"({codes.get('merged', 0)} merged, {codes.get('unchanged', 0)} unchanged), "
            f"{rejected} rejected"
        )
        reasons: dict[str, int] = {}
        for result in data["rejected"]:
            for error in result.get("errors") or [{"field": "", "reason": result["code"]}]:
                label = (
                    f"{error['field']}: {error['reason']}" if error["field"] else error["reason"]
                )
                reasons[label] = reasons.get(label, 0) + 1
        if data.get("memberships"):
            listed = ", ".join(
                f"{code} {count}" for code, count in sorted(data["memberships"].items())
            )
            typer.echo(f"    list memberships: {listed}")
        for label, count in sorted(reasons.items(), key=lambda item: -item[1]):
            typer.echo(f"    {count:5d} x {label}")
        for result in data["rejected"][:show_rejected]:
            typer.echo(_rejection_line(result))
        if len(data["rejected"]) > show_rejected:
            typer.echo(f"    ... {len(data['rejected']) - show_rejected} more")


async def _summary(tenant: str, import_ids: list[str]) -> dict[str, Any]:
    from contact_pipeline.store.mongo import Store, count_contacts, summarise_results

    settings = get_settings()
    store = await Store.connect(settings.mongodb_uri.get_secret_value(), settings.mongodb_database)
    try:
        report: dict[str, Any] = {"contacts": await count_contacts(store, tenant), "imports": {}}
        for import_id in import_ids:
            report["imports"][import_id] = await summarise_results(store, tenant, import_id)
        return report
    finally:
        await store.close()


def _criteria_argument(text: str) -> Any:
    """Read criteria given as JSON text or as @FILE."""
    if text.startswith("@"):
        try:
            raw = Path(text[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            _fail(f"cannot read criteria file {text[1:]}: {exc.strerror}")
    else:
        raw = text
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        _fail(f"criteria are not valid JSON: {exc}; give a JSON object or @FILE")


@app.command()
def search(
    tenant: Annotated[str, typer.Option(help="Tenant id.")],
    criteria: Annotated[
        str,
        typer.Argument(
            help='Criteria as JSON, e.g. \'{"logic":"and","conditions":[{"field":"company",'
            '"operator":"equals","value":"Acme"}]}\', or @FILE.'
        ),
    ],
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Contacts per page.")] = 100,
    after: Annotated[
        str | None, typer.Option(help="Contact id the previous page ended with.")
    ] = None,
) -> None:
    """Print one page of the tenant's contacts matching criteria, one JSON object per line."""
    from contact_pipeline.domain.criteria import parse_criteria
    from contact_pipeline.domain.errors import FieldError

    try:
        parsed = parse_criteria(_criteria_argument(criteria), field="criteria")
    except FieldError as exc:
        _fail(f"{exc.field}: {exc.reason} (value: {exc.value!r})")
    page = asyncio.run(_search(tenant, parsed, limit, after))
    for contact in page.contacts:
        typer.echo(json.dumps(contact, ensure_ascii=False, default=str))
    if page.next_cursor:
        typer.echo(f"more results: add --after {page.next_cursor}", err=True)


async def _search(tenant: str, criteria: Any, limit: int, after: str | None) -> Any:
    from contact_pipeline.store.mongo import Store
    from contact_pipeline.store.search import search_contacts

    settings = get_settings()
    store = await Store.connect(settings.mongodb_uri.get_secret_value(), settings.mongodb_database)
    try:
        return await search_contacts(store, tenant, criteria, limit=limit, after=after)
    finally:
        await store.close()


@lists_app.command("show")
def lists_show(
    tenant: Annotated[str, typer.Option(help="Tenant id.")],
    list_id: Annotated[str | None, typer.Argument(help="List id; all lists when left out.")] = None,
) -> None:
    """Print lists as JSON with metadata.contactCount and the latest backfill."""
    for item in asyncio.run(_lists_show(tenant, list_id)):
        typer.echo(json.dumps(item, ensure_ascii=False, default=str))


async def _lists_show(tenant: str, list_id: str | None) -> list[dict[str, Any]]:
    from contact_pipeline.handlers.lists import public_list
    from contact_pipeline.store.mongo import Store

    settings = get_settings()
    store = await Store.connect(settings.mongodb_uri.get_secret_value(), settings.mongodb_database)
    try:
        documents = await store.load_tenant_lists(tenant)
        counts = await store.list_member_counts(tenant)
        backfills = await store.tenant_backfills(tenant)
    finally:
        await store.close()
    selected = []
    for doc in sorted(documents, key=lambda d: d["id"]):
        if list_id is not None and doc["id"] != list_id:
            continue
        item = public_list(doc)
        item["metadata"]["contactCount"] = counts.get(doc["id"], 0)
        latest = backfills.get(doc["id"])
        if latest is not None:
            item["backfill"] = {
                key: latest.get(key)
                for key in (
                    "_id",
                    "status",
                    "reason",
                    "scanned",
                    "queued",
                    "applied",
                    "membersBefore",
                    "membersAfter",
                    "createdAt",
                    "completedAt",
                )
                if latest.get(key) is not None
            }
        selected.append(item)
    if list_id is not None and not selected:
        _fail(
            f"list {list_id} not found in tenant {tenant}; `lists show --tenant {tenant}` lists all"
        )
    return selected


@dev_app.command("up")
def dev_up() -> None:
    """Start local Kafka and FerretDB on 127.0.0.1, building or downloading what is missing."""
    from contact_pipeline.dev import services

    _setup_logging()
    endpoints = services.up()
    typer.echo(f"KAFKA_BOOTSTRAP_SERVERS={endpoints.kafka_bootstrap_servers}")
    typer.echo(f"MONGODB_URI={endpoints.mongodb_uri}")


@dev_app.command("down")
def dev_down(
    wipe: Annotated[bool, typer.Option(help="Also delete the servers' data.")] = False,
) -> None:
    """Stop the local servers."""
    from contact_pipeline.dev import services

    _setup_logging()
    services.down(wipe=wipe)


@dev_app.command("status")
def dev_status() -> None:
    """Show whether the local servers run, with pid, address and log file."""
    from contact_pipeline.dev import services

    for name, info in services.status().items():
        typer.echo(f"{name}: " + "  ".join(f"{key}={value}" for key, value in info.items()))


@app.command()
def demo(
    tenant: Annotated[str, typer.Option(help="Tenant id for the example data.")] = "demo",
    files: Annotated[
        list[Path] | None,
        typer.Option("--file", help="CSV files to import; default the two example exports."),
    ] = None,
) -> None:
    """Run the main job on the example data: servers, topics, worker, imports, summary."""
    from contact_pipeline.dev import services

    _setup_logging()
    endpoints = services.up()
    os.environ["KAFKA_BOOTSTRAP_SERVERS"] = endpoints.kafka_bootstrap_servers
    os.environ["MONGODB_URI"] = endpoints.mongodb_uri
    get_settings.cache_clear()
    typer.echo("== topics")
    topics_apply(replication_factor=1)

    typer.echo("== worker")
    log_path = REPOSITORY_ROOT / ".local" / "run" / "worker.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "contact_pipeline.cli", "worker"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ},
        )
    typer.echo(f"worker pid={process.pid}, log {log_path}")
    try:
        import_ids = []
        for path in files or sorted((REPOSITORY_ROOT / "examples").glob("*.csv")):
            typer.echo(f"== import {path.name}")
            started = time.monotonic()
            import_id = import_csv(
                path,
                tenant=tenant,
                format="auto",
                map=None,
                import_id=None,
                phone_region=None,
                wait=True,
                timeout=300.0,
            )
            typer.echo(f"   took {time.monotonic() - started:.1f} s")
            import_ids.append(import_id)
        typer.echo("== summary (read back from the store)")
        summary(tenant=tenant, import_id=import_ids, show_rejected=10)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
    typer.echo("local servers keep running; stop them with `contact-pipeline dev down`")


def main() -> None:
    """Entry point of the console script."""
    app()


if __name__ == "__main__":
    main()
