"""CSV import: read an export from a CRM and turn each row into a contact.create command.

The importer converts only the shape of the data: it maps columns to contact fields,
trims cells, splits tags and converts dates and numbers of known custom fields. It
does not validate e-mail addresses, phone numbers or time zones, because the worker
validates and normalises every command again and reports each rejected value with
its field and reason. A row with a bad value is therefore still sent, and only a row
without an e-mail address is held back, because a contact.create needs one.

Typical use::

    headers = read_header(path)
    mapping = {**MAPPINGS[detect_format(headers)], **parse_mapping_overrides(items)}
    for row in read_rows(path):
        fields, problems = row_to_fields(row, mapping)
        if "email" in fields:
            command = build_create_command(fields, tenant_id=..., row_number=row.number,
                                           import_id=..., source_name=path.name)
"""

from __future__ import annotations

import codecs
import copy
import csv
import difflib
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from contact_pipeline.domain.errors import FieldError
from contact_pipeline.domain.normalize import email_key, normalize_email
from contact_pipeline.handlers.contacts import derive_contact_id

ENCODING_CHUNK_BYTES = 1 << 20

CUSTOM_FIELD_PREFIX = "customFields."
CUSTOM_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")

# Contact field paths a column can map to, from schemas/contact-fields.json.
# metadata.source is missing on purpose: every imported contact gets "import".
STANDARD_TARGETS = (
    "firstName",
    "lastName",
    "title",
    "company",
    "email",
    "phone",
    "status",
    "socialProfiles.linkedin",
    "socialProfiles.github",
    "preferences.communicationChannels.email",
    "preferences.communicationChannels.sms",
    "preferences.communicationChannels.social",
    "preferences.frequency",
    "preferences.timezone",
    "metadata.tags",
    "metadata.lastEngagement",
)
BOOLEAN_TARGETS = frozenset(
    {
        "preferences.communicationChannels.email",
        "preferences.communicationChannels.sms",
        "preferences.communicationChannels.social",
    }
)
# Enum fields whose values are lower case, so "Active" from a spreadsheet becomes "active".
LOWER_CASE_TARGETS = frozenset({"status", "preferences.frequency"})
TAGS_TARGET = "metadata.tags"
DATETIME_TARGET = "metadata.lastEngagement"

INTEGER = "integer"
DATETIME = "datetime"

# JSON type of the custom fields that the presets fill. The type belongs to the stored
# field, so a column mapped to one of these names by --map is converted the same way.
# Custom fields not listed here are stored as text.
CUSTOM_FIELD_TYPES: dict[str, str] = {
    "memberRating": INTEGER,
    "optinTime": DATETIME,
    "confirmTime": DATETIME,
    "hubspotCreatedAt": DATETIME,
}

# Column name -> contact field path. An empty target means the column is ignored on
# purpose, so it is listed by ignored_columns() like a column that has no entry.
MAPPINGS: dict[str, dict[str, str]] = {
    "mailchimp": {
        "Email Address": "email",
        "First Name": "firstName",
        "Last Name": "lastName",
        "Address": "customFields.address",
        "Phone Number": "phone",
        "MEMBER_RATING": "customFields.memberRating",
        "OPTIN_TIME": "customFields.optinTime",
        "CONFIRM_TIME": "customFields.confirmTime",
        # Mailchimp estimates the time zone from the IP address, as its help page "About
        # Geolocation" explains, but it is the best guess of when to send. Drop it with
        # --map "TIMEZONE=".
        "TIMEZONE": "preferences.timezone",
        "LEID": "customFields.mailchimpLeid",
        "EUID": "customFields.mailchimpEuid",
        "NOTES": "customFields.notes",
        "TAGS": "metadata.tags",
        # IP addresses are personal data and nothing reads them yet. Opt-in and
        # confirmation times are kept. If a consent record needs the IP address, map
        # it with --map "OPTIN_IP=customFields.optinIp".
        "OPTIN_IP": "",
        "CONFIRM_IP": "",
        # Mailchimp estimates these from the IP address, so the contact did not give them.
        "LATITUDE": "",
        "LONGITUDE": "",
        "GMTOFF": "",
        "DSTOFF": "",
        "CC": "",
        "REGION": "",
        # The time the Mailchimp record last changed is not a contact engagement.
        "LAST_CHANGED": "",
    },
    "hubspot": {
        "Record ID": "customFields.hubspotRecordId",
        "First Name": "firstName",
        "Last Name": "lastName",
        "Email": "email",
        "Phone Number": "phone",
        "Company Name": "company",
        "Job Title": "title",
        "Lifecycle Stage": "customFields.lifecycleStage",
        "Create Date": "customFields.hubspotCreatedAt",
        "Marketing contact status": "customFields.marketingContactStatus",
        "Time Zone": "preferences.timezone",
    },
}

# Headers that every export of the format contains and other formats do not.
FORMAT_SIGNATURES: dict[str, frozenset[str]] = {
    "mailchimp": frozenset({"Email Address", "LEID", "EUID"}),
    "hubspot": frozenset({"Record ID", "Email"}),
}

# Slash dates are read month first, as in the HubSpot example export (7/2/2025 9:12 PM).
# NOTE: a day-first export converts wrongly when the day is 12 or less. Other days
# fail to convert and are kept as text with a problem.
DATETIME_FORMATS = (
    "%m/%d/%Y %I:%M %p",
    "%m/%d/%Y %I:%M:%S %p",
    "%m/%d/%Y %H:%M",
    "%m/%d/%Y %H:%M:%S",
)
DATE_FORMATS = ("%m/%d/%Y",)
INTEGER_TEXT = re.compile(r"[+-]?[0-9]+")
TRUE_WORDS = frozenset({"true", "yes", "y", "1"})
FALSE_WORDS = frozenset({"false", "no", "n", "0"})

COMMAND_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]+$")
COMMAND_ID_MAX_LENGTH = 128
ACTOR_ID_MAX_LENGTH = 128


class CsvImportError(ValueError):
    """Error raised when a CSV file cannot be read as a contact export."""


class CsvEncodingError(CsvImportError):
    """Error raised for a file that is not UTF-8, with the `offset` and `line` of the bad byte."""

    def __init__(self, path: Path, offset: int, line: int, byte: int) -> None:
        self.path = path
        self.offset = offset
        self.line = line
        super().__init__(
            f"{path} is not valid UTF-8: byte 0x{byte:02X} at offset {offset} (line {line}) "
            "cannot be decoded. Re-export the file as UTF-8, or convert it, for example "
            f"with: iconv -f WINDOWS-1252 -t UTF-8 '{path}' > converted.csv"
        )


class CsvHeaderError(CsvImportError):
    """Error raised when the header row is missing or has empty or duplicate column names."""


@dataclass(frozen=True)
class RowProblem:
    """Entry of the import report about one CSV row.

    `row` is the spreadsheet row number, `column` the header name (empty when the
    problem belongs to no column) and `value` the cell text as read.
    """

    row: int
    column: str
    value: str
    reason: str


@dataclass(frozen=True)
class CsvRow:
    """One data row of a CSV file.

    `number` is the row number a spreadsheet shows for it: the header is row 1, so
    the first data row is row 2. Blank rows and rows spanning several lines
    (a quoted cell with line breaks) count as one row each, as in a spreadsheet.
    `values` maps every header name to its cell, with "" for cells missing at the
    end of a short row. `problems` lists non-empty cells beyond the last column,
    which are not in `values`.
    """

    number: int
    values: dict[str, str]
    problems: tuple[RowProblem, ...] = ()


def read_header(path: Path) -> list[str]:
    """Return the column names of a CSV file, stripped of surrounding whitespace.

    Raises `CsvEncodingError` if the file is not UTF-8 and `CsvHeaderError` if the
    header is missing or has empty or duplicate names.
    """
    _check_utf8(path)
    _, headers = _read_header_row(path)
    return headers


def read_rows(path: Path) -> Iterator[CsvRow]:
    """Return an iterator over the data rows of a UTF-8 CSV file, with or without BOM.

    The whole file is checked before any row is returned, so `CsvEncodingError` and
    `CsvHeaderError` are raised by this call, never after some rows were read.
    Rows whose cells are all blank are skipped. Cells are returned as read, with
    their whitespace. A malformed row (such as a cell over the csv module's field
    size limit) raises `CsvImportError` when the iterator reaches it.
    """
    _check_utf8(path)
    header_number, headers = _read_header_row(path)
    return _iterate_rows(path, header_number, headers)


def detect_format(headers: list[str]) -> str | None:
    """Return the name of the preset in MAPPINGS whose export has these headers.

    Returns None when no preset or more than one matches.
    """
    present = {header.strip() for header in headers}
    matches = [name for name, signature in FORMAT_SIGNATURES.items() if signature <= present]
    if len(matches) != 1:
        return None
    return matches[0]


def ignored_columns(headers: list[str], mapping: dict[str, str]) -> list[str]:
    """Return the headers, in file order, that the mapping leaves out or maps to ""."""
    return [header for header in headers if not mapping.get(header)]


def missing_columns(headers: list[str], mapping: dict[str, str]) -> list[str]:
    """Return the columns named in `mapping` that the file does not have.

    Pass the --map overrides, not a preset: presets name every column an export can
    have, and a given file often has fewer.
    """
    present = set(headers)
    return [column for column in mapping if column not in present]


def parse_mapping_overrides(items: list[str]) -> dict[str, str]:
    """Parse --map options of the form ``COLUMN=FIELD`` into a column -> field mapping.

    FIELD is a contact field path such as ``title``, ``preferences.timezone`` or
    ``customFields.memberRating``. An empty FIELD (``"Lifecycle Stage="``) ignores the
    column. The text after the last "=" is the field, so a column name may contain "=".

    Raises ValueError, naming the item, when it has no "=", no column name, a column
    given twice, or an unknown field path.
    """
    overrides: dict[str, str] = {}
    for item in items:
        column, separator, target = item.rpartition("=")
        column = column.strip()
        target = target.strip()
        if not separator:
            raise ValueError(f'--map "{item}": expected COLUMN=FIELD, such as "Job Title=title".')
        if not column:
            raise ValueError(f'--map "{item}": the column name before "=" is empty.')
        if column in overrides:
            raise ValueError(f'--map "{item}": the column "{column}" is mapped more than once.')
        if target:
            _check_target(item, target)
        overrides[column] = target
    return overrides


def row_to_fields(row: CsvRow, mapping: dict[str, str]) -> tuple[dict[str, Any], list[RowProblem]]:
    """Build the contact fields (camelCase JSON, as in contact-fields.json) of one row.

    Empty cells are skipped and the others are trimmed. Tags are split on commas and
    de-duplicated, ignoring letter case and keeping the first spelling. Values of the
    custom fields in CUSTOM_FIELD_TYPES become integers or ISO 8601 date-times, and a
    value that cannot be converted is kept as text with a problem. E-mail, phone and
    time zone are passed on as written, because the worker validates them.

    The problems are the row's own (`row.problems`), failed conversions, columns
    that map to a field already filled by an earlier column, and a missing e-mail
    address. Only a missing e-mail address keeps the row from being sent.
    """
    fields: dict[str, Any] = {}
    problems = list(row.problems)
    filled_by: dict[str, str] = {}

    for column, cell in row.values.items():
        target = mapping.get(column)
        text = cell.strip()
        if not target or not text:
            continue

        if target == TAGS_TARGET:
            _add_tags(fields, _split_tags(text))
            continue

        if target in filled_by:
            reason = (
                f'The column "{filled_by[target]}" already filled {target}, '
                "so this value is not imported."
            )
            problems.append(RowProblem(row.number, column, cell, reason))
            continue

        value, problem = _convert(text, target)
        if problem:
            problems.append(RowProblem(row.number, column, cell, problem))
        _set_path(fields, target, value)
        filled_by[target] = column

    if "email" not in fields:
        problems.append(_missing_email_problem(row, mapping))
    return fields, problems


def build_list_command(create: dict[str, Any], list_id: str) -> dict[str, Any]:
    """Build the membership.add that puts the contact of a create command on a list.

    It follows the create on the contact's partition, so the contact exists by
    then unless its row was rejected. The worker keeps contacts that unsubscribed
    from the list off it, whatever the import requests.
    """
    return {
        **{key: copy.deepcopy(value) for key, value in create.items() if key != "payload"},
        "commandId": f"{create['commandId']}-list",
        "type": "membership.add",
        "payload": {
            "contactId": create["payload"]["contactId"],
            "listId": list_id,
            "source": "import",
        },
    }


def build_create_command(
    fields: dict[str, Any],
    *,
    tenant_id: str,
    row_number: int,
    import_id: str,
    source_name: str,
    issued_at: datetime | None = None,
) -> dict[str, Any]:
    """Build a contact.create command (schemas/contact.create.json) for one CSV row.

    The command id depends only on `import_id` and `row_number`. The worker applies a
    command id at most once, so a row sent again with the same import id is not
    applied twice. The contact id is derived from tenant and e-mail key, so every row
    with the same address updates one contact (``ifExists: merge``). When the address
    is invalid, the id is derived from the trimmed, case-folded text, and the worker
    reports the error. `issued_at` defaults to now.

    Raises ValueError when `fields` has no e-mail, `import_id` makes an invalid
    command id, or `source_name` is empty or longer than 128 characters.
    """
    raw_email = fields.get("email")
    if not isinstance(raw_email, str) or not raw_email.strip():
        raise ValueError(f"Row {row_number} has no e-mail address, so no contact can be created.")
    command_id = f"import-{import_id}-row-{row_number}"
    if len(command_id) > COMMAND_ID_MAX_LENGTH or not COMMAND_ID_PATTERN.fullmatch(import_id):
        raise ValueError(
            f"Invalid import id {import_id!r}: use letters, digits, '.', '_', ':' and '-', "
            f"so that command ids such as {command_id!r} stay within "
            f"{COMMAND_ID_MAX_LENGTH} characters."
        )
    if not source_name or len(source_name) > ACTOR_ID_MAX_LENGTH:
        raise ValueError(
            f"Invalid source name {source_name!r}: it must have 1 to "
            f"{ACTOR_ID_MAX_LENGTH} characters."
        )

    payload = {"contactId": _contact_id(tenant_id, raw_email), **copy.deepcopy(fields)}
    payload["ifExists"] = "merge"
    payload.setdefault("metadata", {})["source"] = "import"

    moment = (issued_at or datetime.now(UTC)).astimezone(UTC)
    return {
        "commandId": command_id,
        "type": "contact.create",
        "tenantId": tenant_id,
        "issuedAt": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "actor": {"type": "import", "id": source_name},
        "correlationId": import_id,
        "meta": {"row": row_number, "file": source_name},
        "payload": payload,
    }


def _check_utf8(path: Path) -> None:
    """Raise CsvEncodingError at the first byte of `path` that is not valid UTF-8."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    line = 1
    with path.open("rb") as file:
        while chunk := file.read(ENCODING_CHUNK_BYTES):
            # The decoder buffers a multi-byte character cut by the chunk boundary, and
            # the error position counts from the start of that buffer.
            pending = decoder.getstate()[0]
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as error:
                raise _encoding_error(
                    path, pending + chunk, error, offset - len(pending), line
                ) from error
            offset += len(chunk)
            line += chunk.count(b"\n")

        pending = decoder.getstate()[0]
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as error:
            raise _encoding_error(path, pending, error, offset - len(pending), line) from error


def _encoding_error(
    path: Path, data: bytes, error: UnicodeDecodeError, data_offset: int, data_line: int
) -> CsvEncodingError:
    # A buffered partial character contains no newline, so counting in `data` is exact.
    line = data_line + data[: error.start].count(b"\n")
    return CsvEncodingError(path, data_offset + error.start, line, data[error.start])


def _read_header_row(path: Path) -> tuple[int, list[str]]:
    """Return the spreadsheet row number and the validated names of the header row."""
    with path.open(encoding="utf-8-sig", newline="") as file:
        for number, record in enumerate(csv.reader(file), start=1):
            if _is_blank(record):
                continue
            return number, _validate_headers(path, record)
    raise CsvHeaderError(f"{path} is empty: expected a header row with the column names.")


def _validate_headers(path: Path, record: list[str]) -> list[str]:
    headers = [name.strip() for name in record]

    empty = [str(position) for position, name in enumerate(headers, start=1) if not name]
    if empty:
        raise CsvHeaderError(
            f"{path}: the header has no name for column {', '.join(empty)}. "
            "Give every column a name, or delete the empty columns."
        )

    duplicates = [name for name, count in Counter(headers).items() if count > 1]
    if duplicates:
        names = ", ".join(f'"{name}"' for name in duplicates)
        raise CsvHeaderError(
            f"{path}: the header names {names} more than once. Rename or delete the "
            "repeated columns, so that each value maps to one field."
        )
    return headers


def _iterate_rows(path: Path, header_number: int, headers: list[str]) -> Iterator[CsvRow]:
    with path.open(encoding="utf-8-sig", newline="") as file:
        reader = csv.reader(file)
        number = 0
        try:
            for number, record in enumerate(reader, start=1):
                if number <= header_number or _is_blank(record):
                    continue
                yield _to_row(number, headers, record)
        except csv.Error as error:
            raise CsvImportError(
                f"{path}: row {number + 1} (line {reader.line_num}) cannot be read: {error}."
            ) from error


def _to_row(number: int, headers: list[str], record: list[str]) -> CsvRow:
    values = dict.fromkeys(headers, "")
    values.update(zip(headers, record, strict=False))

    extra = record[len(headers) :]
    if not any(cell.strip() for cell in extra):
        return CsvRow(number, values)

    reason = (
        f"The row has {len(record)} cells but the header has {len(headers)} columns, "
        "so the cells after the last column are not imported."
    )
    problem = RowProblem(number, "", ",".join(extra), reason)
    return CsvRow(number, values, (problem,))


def _is_blank(record: list[str]) -> bool:
    return not any(cell.strip() for cell in record)


def _check_target(item: str, target: str) -> None:
    if target in STANDARD_TARGETS:
        return
    valid = (
        f"Valid fields: {', '.join(STANDARD_TARGETS)}, or customFields.NAME, where NAME "
        "starts with a letter or underscore and has up to 64 letters, digits and "
        'underscores. Leave the field empty ("COLUMN=") to ignore the column.'
    )
    if target.startswith(CUSTOM_FIELD_PREFIX):
        name = target.removeprefix(CUSTOM_FIELD_PREFIX)
        if CUSTOM_FIELD_NAME.fullmatch(name):
            return
        raise ValueError(f'--map "{item}": invalid custom field name "{name}". {valid}')

    suggestion = difflib.get_close_matches(target, STANDARD_TARGETS, n=1)
    hint = f' Did you mean "{suggestion[0]}"?' if suggestion else ""
    raise ValueError(f'--map "{item}": unknown field "{target}".{hint} {valid}')


def _convert(text: str, target: str) -> tuple[Any, str]:
    """Return the JSON value of a trimmed cell for `target`, and a problem or ""."""
    if target in LOWER_CASE_TARGETS:
        return text.lower(), ""
    if target in BOOLEAN_TARGETS:
        # An unknown word is sent as text, and the worker rejects it with a reason.
        return _parse_boolean(text), ""
    if target == DATETIME_TARGET:
        # NOTE: CRM exports rarely include a UTC offset, and a date-time without one
        # is sent without one, so the worker may reject it.
        converted = _parse_datetime(text)
        return (text if converted is None else converted), ""

    field_type = CUSTOM_FIELD_TYPES.get(target.removeprefix(CUSTOM_FIELD_PREFIX))
    if not target.startswith(CUSTOM_FIELD_PREFIX) or field_type is None:
        return text, ""
    if field_type == INTEGER:
        if INTEGER_TEXT.fullmatch(text):
            return int(text), ""
        return text, "The value is not a whole number, so it is imported as text."
    converted = _parse_datetime(text)
    if converted is None:
        return text, (
            "The value is not a date like 2025-06-27 06:36:00 or 7/2/2025 9:12 PM, "
            "so it is imported as text."
        )
    return converted, ""


def _parse_boolean(text: str) -> bool | str:
    word = text.lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    return text


def _parse_datetime(text: str) -> str | None:
    """Return the ISO 8601 form of a date or date-time, or None if no format matches.

    A UTC offset is kept when the text has one. Exports without one are converted
    without one, because the file does not say which time zone they are in.
    """
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).isoformat()
    except ValueError:
        pass
    for pattern in DATETIME_FORMATS:
        try:
            return datetime.strptime(text, pattern).isoformat()
        except ValueError:
            continue
    for pattern in DATE_FORMATS:
        try:
            return datetime.strptime(text, pattern).date().isoformat()
        except ValueError:
            continue
    return None


def _split_tags(text: str) -> list[str]:
    # Reading the cell as one CSV record also splits lists that quote each tag,
    # such as "VIP","Customer", and keeps commas inside quoted tag names.
    cells = next(csv.reader([text], skipinitialspace=True), [])
    return [cell.strip() for cell in cells if cell.strip()]


def _add_tags(fields: dict[str, Any], tags: list[str]) -> None:
    existing = fields.setdefault("metadata", {}).setdefault("tags", [])
    seen = {tag.casefold() for tag in existing}
    for tag in tags:
        if tag.casefold() in seen:
            continue
        seen.add(tag.casefold())
        existing.append(tag)


def _set_path(fields: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = fields
    for name in parents:
        node = node.setdefault(name, {})
    node[leaf] = value


def _missing_email_problem(row: CsvRow, mapping: dict[str, str]) -> RowProblem:
    columns = [column for column, target in mapping.items() if target == "email"]
    if not columns:
        reason = (
            'No column maps to "email", so no contact can be created. '
            'Map the e-mail column, for example with --map "E-mail=email".'
        )
        return RowProblem(row.number, "", "", reason)

    present = [column for column in columns if column in row.values]
    column = present[0] if present else columns[0]
    reason = "The row has no e-mail address, so no contact can be created from it."
    return RowProblem(row.number, column, row.values.get(column, ""), reason)


def _contact_id(tenant_id: str, raw_email: str) -> str:
    try:
        key = email_key(normalize_email(raw_email))
    except FieldError:
        # A stable id still lets the worker reject the row with the real error.
        key = f"invalid:{raw_email.strip().casefold()}"
    return derive_contact_id(tenant_id, key)
