"""Unit tests of the CSV importer, with the Mailchimp and HubSpot exports in examples/."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from contact_pipeline.handlers.contacts import derive_contact_id
from contact_pipeline.importer import csv_import
from contact_pipeline.importer.csv_import import (
    MAPPINGS,
    CsvEncodingError,
    CsvHeaderError,
    CsvRow,
    RowProblem,
    build_create_command,
    detect_format,
    ignored_columns,
    missing_columns,
    parse_mapping_overrides,
    read_header,
    read_rows,
    row_to_fields,
)
from contact_pipeline.schemas import load_schemas

PROJECT = Path(__file__).parents[2]
MAILCHIMP_EXPORT = PROJECT / "examples" / "mailchimp-audience-export.csv"
HUBSPOT_EXPORT = PROJECT / "examples" / "hubspot-contacts-export.csv"
SCHEMAS_DIR = PROJECT / "schemas"

MISSING_EMAIL_REASON = "The row has no e-mail address, so no contact can be created from it."
TENANT = "acme"
IMPORT_ID = "2026-01-15.1"


def write_csv(folder: Path, text: str, *, encoding: str = "utf-8", name: str = "in.csv") -> Path:
    path = folder / name
    path.write_bytes(text.encode(encoding))
    return path


def rows_by_number(path: Path) -> dict[int, CsvRow]:
    return {row.number: row for row in read_rows(path)}


def fields_of(path: Path, number: int) -> dict[str, Any]:
    mapping = MAPPINGS[detect_format(read_header(path))]
    fields, _ = row_to_fields(rows_by_number(path)[number], mapping)
    return fields


def import_file(path: Path) -> tuple[list[dict[str, Any]], list[RowProblem]]:
    """Return the commands and problems of every row, as the import command builds them."""
    mapping = MAPPINGS[detect_format(read_header(path))]
    commands: list[dict[str, Any]] = []
    problems: list[RowProblem] = []
    for row in read_rows(path):
        fields, row_problems = row_to_fields(row, mapping)
        problems.extend(row_problems)
        if "email" not in fields:
            continue
        command = build_create_command(
            fields,
            tenant_id=TENANT,
            row_number=row.number,
            import_id=IMPORT_ID,
            source_name=path.name,
        )
        commands.append(command)
    return commands, problems


@pytest.fixture(scope="module")
def mailchimp_import() -> tuple[list[dict[str, Any]], list[RowProblem]]:
    return import_file(MAILCHIMP_EXPORT)


@pytest.fixture(scope="module")
def hubspot_import() -> tuple[list[dict[str, Any]], list[RowProblem]]:
    return import_file(HUBSPOT_EXPORT)


# Example files


def test_mailchimp_example_row_count() -> None:
    assert len(list(read_rows(MAILCHIMP_EXPORT))) == 3086


def test_hubspot_example_row_count() -> None:
    assert len(list(read_rows(HUBSPOT_EXPORT))) == 1500


def test_detect_format_mailchimp() -> None:
    assert detect_format(read_header(MAILCHIMP_EXPORT)) == "mailchimp"


def test_detect_format_hubspot() -> None:
    assert detect_format(read_header(HUBSPOT_EXPORT)) == "hubspot"


def test_detect_format_unknown_headers() -> None:
    assert detect_format(["Name", "E-mail", "Phone"]) is None


def test_mailchimp_header_strips_bom() -> None:
    assert read_header(MAILCHIMP_EXPORT)[0] == "Email Address"


def test_first_data_row_is_row_two() -> None:
    first = next(iter(read_rows(HUBSPOT_EXPORT)))
    assert first.number == 2
    assert first.values["Record ID"] == "900000"


def test_blank_row_keeps_spreadsheet_numbering() -> None:
    rows = rows_by_number(MAILCHIMP_EXPORT)
    # Row 85 of the export is blank, as a spreadsheet shows it.
    assert 85 not in rows
    assert rows[84].values["Email Address"] == "bjorn.garcia80@mail.example.com"
    assert rows[86].values["Email Address"] == "lea.kowalski81@example.net"


def test_mailchimp_row_maps_to_fields() -> None:
    assert fields_of(MAILCHIMP_EXPORT, 2) == {
        "email": "kwame.esposito0@bücher.example",
        "firstName": "Kwame",
        "lastName": "Esposito",
        "phone": "+33 6 12 34 46 74",
        "preferences": {"timezone": "Europe/Kyiv"},
        "customFields": {
            "memberRating": 2,
            "optinTime": "2025-06-27T06:36:00",
            "mailchimpLeid": "100000",
            "mailchimpEuid": "e00000000",
        },
    }


def test_mailchimp_tags_split_into_list() -> None:
    fields = fields_of(MAILCHIMP_EXPORT, 7)
    assert fields["metadata"]["tags"] == ["trial", "vip"]


def test_mailchimp_tags_trimmed_and_deduplicated() -> None:
    # The cell is "Newsletter ,newsletter,trial".
    fields = fields_of(MAILCHIMP_EXPORT, 13)
    assert fields["metadata"]["tags"] == ["Newsletter", "trial"]


def test_mailchimp_single_tag_is_list() -> None:
    fields = fields_of(MAILCHIMP_EXPORT, 6)
    assert fields["metadata"]["tags"] == ["newsletter"]


def test_mailchimp_row_without_tags_has_no_metadata() -> None:
    assert "metadata" not in fields_of(MAILCHIMP_EXPORT, 2)


def test_mailchimp_member_rating_is_integer() -> None:
    rating = fields_of(MAILCHIMP_EXPORT, 3)["customFields"]["memberRating"]
    assert rating == 4
    assert isinstance(rating, int)


def test_mailchimp_optin_time_converted_to_iso() -> None:
    fields = fields_of(MAILCHIMP_EXPORT, 3)
    assert fields["customFields"]["optinTime"] == "2025-05-21T12:25:00"


def test_mailchimp_email_is_trimmed() -> None:
    # The cell is "  emilie.andersson47@exämple.test ".
    assert fields_of(MAILCHIMP_EXPORT, 50)["email"] == "emilie.andersson47@exämple.test"


def test_mailchimp_timezone_passed_unvalidated() -> None:
    assert fields_of(MAILCHIMP_EXPORT, 22)["preferences"]["timezone"] == "Mars/Olympus_Mons"


def test_mailchimp_ignored_columns() -> None:
    headers = read_header(MAILCHIMP_EXPORT)
    assert ignored_columns(headers, MAPPINGS["mailchimp"]) == [
        "OPTIN_IP",
        "CONFIRM_IP",
        "LATITUDE",
        "LONGITUDE",
        "GMTOFF",
        "DSTOFF",
        "CC",
        "REGION",
        "LAST_CHANGED",
    ]


def test_hubspot_row_maps_to_fields() -> None:
    assert fields_of(HUBSPOT_EXPORT, 2) == {
        "email": "bjorn+news50000@mail.example.com",
        "firstName": "Björn",
        "lastName": "Dubois",
        "phone": "555-7498 ext. 12",
        "title": "CEO",
        "preferences": {"timezone": "Asia/Kolkata"},
        "customFields": {
            "hubspotRecordId": "900000",
            "lifecycleStage": "Opportunity",
            "hubspotCreatedAt": "2025-07-02T21:12:00",
            "marketingContactStatus": "Non-marketing contact",
        },
    }


def test_hubspot_create_date_converted_to_iso() -> None:
    # The cell is "12/11/2025 2:10 PM".
    fields = fields_of(HUBSPOT_EXPORT, 3)
    assert fields["customFields"]["hubspotCreatedAt"] == "2025-12-11T14:10:00"


def test_hubspot_quoted_company_keeps_comma() -> None:
    companies = {row.values["Company Name"] for row in read_rows(HUBSPOT_EXPORT)}
    assert "Globex, Inc." in companies


def test_hubspot_ignored_columns_empty() -> None:
    assert ignored_columns(read_header(HUBSPOT_EXPORT), MAPPINGS["hubspot"]) == []


def test_mailchimp_rows_without_email_reported(mailchimp_import) -> None:
    _, problems = mailchimp_import
    missing = [problem for problem in problems if problem.reason == MISSING_EMAIL_REASON]
    assert len(missing) == 30
    assert {problem.column for problem in missing} == {"Email Address"}


def test_hubspot_rows_without_email_reported(hubspot_import) -> None:
    _, problems = hubspot_import
    missing = [problem for problem in problems if problem.reason == MISSING_EMAIL_REASON]
    assert len(missing) == 18
    assert {problem.column for problem in missing} == {"Email"}


def test_example_files_have_no_other_problems(mailchimp_import, hubspot_import) -> None:
    problems = mailchimp_import[1] + hubspot_import[1]
    assert [problem for problem in problems if problem.reason != MISSING_EMAIL_REASON] == []


def test_mailchimp_command_per_row_with_email(mailchimp_import) -> None:
    commands, _ = mailchimp_import
    assert len(commands) == 3086 - 30


def test_hubspot_command_per_row_with_email(hubspot_import) -> None:
    commands, _ = hubspot_import
    assert len(commands) == 1500 - 18


@pytest.mark.parametrize("fixture", ["mailchimp_import", "hubspot_import"])
def test_example_commands_match_schema(fixture: str, request: pytest.FixtureRequest) -> None:
    commands, _ = request.getfixturevalue(fixture)
    schemas = load_schemas(SCHEMAS_DIR)
    invalid = {
        command["commandId"]: problems
        for command in commands
        if (problems := schemas.validate(command))
    }
    assert invalid == {}


def test_same_address_in_other_case_shares_contact_id(mailchimp_import) -> None:
    commands, _ = mailchimp_import
    by_row = {command["meta"]["row"]: command for command in commands}
    # Rows 44 and 45 contain emilie.jovanović42@example.net and Emilie.Jovanović42@Example.Net.
    assert by_row[44]["payload"]["contactId"] == by_row[45]["payload"]["contactId"]
    assert by_row[44]["commandId"] != by_row[45]["commandId"]


# Encoding and CSV structure


def test_bom_and_no_bom_read_same_rows(tmp_path: Path) -> None:
    text = "Email,First Name\r\nanna@example.com,Anna\r\n"
    with_bom = write_csv(tmp_path, text, encoding="utf-8-sig", name="bom.csv")
    without_bom = write_csv(tmp_path, text, name="plain.csv")
    assert with_bom.read_bytes().startswith(b"\xef\xbb\xbf")
    assert read_header(with_bom) == ["Email", "First Name"]
    assert list(read_rows(with_bom)) == list(read_rows(without_bom))


def test_cp1252_file_raises_encoding_error(tmp_path: Path) -> None:
    text = "Email,First Name\nanna@example.com,Anna\nchloe@example.com,Chloé\n"
    path = write_csv(tmp_path, text, encoding="cp1252")
    with pytest.raises(CsvEncodingError) as caught:
        read_rows(path)
    assert caught.value.line == 3
    assert caught.value.offset == len(
        b"Email,First Name\nanna@example.com,Anna\nchloe@example.com,Chlo"
    )
    assert "line 3" in str(caught.value)
    assert "0xE9" in str(caught.value)
    assert str(path) in str(caught.value)
    assert "iconv -f WINDOWS-1252 -t UTF-8" in str(caught.value)


def test_encoding_error_raised_by_read_header(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "Email,Name\nanna@example.com,Zoë\n", encoding="cp1252")
    with pytest.raises(CsvEncodingError):
        read_header(path)


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 5, 7, 64])
def test_encoding_error_position_across_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk_bytes: int
) -> None:
    # Valid two-byte characters cut by chunk boundaries must not shift the position.
    valid = "Email,Name\nzoe@example.com,Zoë Ünal\n".encode()
    path = tmp_path / "in.csv"
    path.write_bytes(valid + b"x@example.com,Ren\xe9\n")
    monkeypatch.setattr(csv_import, "ENCODING_CHUNK_BYTES", chunk_bytes)
    with pytest.raises(CsvEncodingError) as caught:
        read_rows(path)
    assert caught.value.offset == len(valid) + len(b"x@example.com,Ren")
    assert caught.value.line == 3


def test_truncated_character_at_end_raises(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes("Email\nzoë@example.com\n".encode() + b"\xc3")
    with pytest.raises(CsvEncodingError) as caught:
        read_rows(path)
    assert caught.value.offset == path.stat().st_size - 1
    assert caught.value.line == 3


def test_quoted_comma_stays_in_cell(tmp_path: Path) -> None:
    path = write_csv(tmp_path, 'Email,Company\nanna@example.com,"Globex, Inc."\n')
    [row] = read_rows(path)
    assert row.values["Company"] == "Globex, Inc."


def test_quoted_newline_cell_counts_as_one_row(tmp_path: Path) -> None:
    text = (
        "Email,NOTES\r\n"
        'anna@example.com,"Met at the fair.\r\nCall back in May."\r\n'
        "ben@example.com,\r\n"
    )
    rows = list(read_rows(write_csv(tmp_path, text)))
    assert rows[0].values["NOTES"] == "Met at the fair.\r\nCall back in May."
    assert rows[1].number == 3


def test_extra_cells_kept_out_and_reported(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "Email,Name\nanna@example.com,Anna,oops,more\n")
    [row] = read_rows(path)
    assert row.values == {"Email": "anna@example.com", "Name": "Anna"}
    assert len(row.problems) == 1
    assert row.problems[0].row == 2
    assert row.problems[0].value == "oops,more"
    assert "4 cells" in row.problems[0].reason


def test_extra_cell_problem_returned_by_row_to_fields(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "Email,Name\nanna@example.com,Anna,oops\n")
    [row] = read_rows(path)
    _, problems = row_to_fields(row, {"Email": "email", "Name": "firstName"})
    assert problems == list(row.problems)


def test_empty_extra_cells_not_reported(tmp_path: Path) -> None:
    [row] = read_rows(write_csv(tmp_path, "Email,Name\nanna@example.com,Anna,,\n"))
    assert row.problems == ()


def test_short_row_fills_missing_cells(tmp_path: Path) -> None:
    [row] = read_rows(write_csv(tmp_path, "Email,Name,Phone\nanna@example.com\n"))
    assert row.values == {"Email": "anna@example.com", "Name": "", "Phone": ""}


def test_blank_rows_skipped(tmp_path: Path) -> None:
    text = "Email,Name\n\n,\n  , \nanna@example.com,Anna\n"
    rows = list(read_rows(write_csv(tmp_path, text)))
    assert [row.number for row in rows] == [5]


def test_header_names_are_stripped(tmp_path: Path) -> None:
    path = write_csv(tmp_path, " Email , Name\nanna@example.com,Anna\n")
    assert read_header(path) == ["Email", "Name"]


def test_duplicate_headers_raise(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "Email,Name,Email\nanna@example.com,Anna,b@example.com\n")
    with pytest.raises(CsvHeaderError, match='"Email" more than once'):
        read_rows(path)


def test_duplicate_after_trimming_raises(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "Email,Email \na@example.com,b@example.com\n")
    with pytest.raises(CsvHeaderError):
        read_header(path)


def test_empty_header_name_raises(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "Email,,Name\nanna@example.com,x,Anna\n")
    with pytest.raises(CsvHeaderError, match="no name for column 2"):
        read_rows(path)


def test_empty_file_raises(tmp_path: Path) -> None:
    with pytest.raises(CsvHeaderError, match="is empty"):
        read_rows(write_csv(tmp_path, "\n\n"))


# Mapping overrides


def test_override_parses_column_and_field() -> None:
    assert parse_mapping_overrides(["Job Title=title"]) == {"Job Title": "title"}


def test_override_empty_field_ignores_column() -> None:
    assert parse_mapping_overrides(["Lifecycle Stage="]) == {"Lifecycle Stage": ""}


def test_override_custom_field() -> None:
    overrides = parse_mapping_overrides([" OPTIN_IP = customFields.optinIp "])
    assert overrides == {"OPTIN_IP": "customFields.optinIp"}


def test_override_unknown_field_raises() -> None:
    with pytest.raises(ValueError) as caught:
        parse_mapping_overrides(["Job Title=jobTitle"])
    assert '--map "Job Title=jobTitle"' in str(caught.value)
    assert "preferences.timezone" in str(caught.value)
    assert 'Did you mean "title"?' in str(caught.value)


def test_override_bad_custom_field_name_raises() -> None:
    with pytest.raises(ValueError) as caught:
        parse_mapping_overrides(["Score=customFields.lead.score"])
    assert '--map "Score=customFields.lead.score"' in str(caught.value)
    assert 'invalid custom field name "lead.score"' in str(caught.value)


def test_override_metadata_source_raises() -> None:
    with pytest.raises(ValueError, match="unknown field"):
        parse_mapping_overrides(["Origin=metadata.source"])


def test_override_without_equals_raises() -> None:
    with pytest.raises(ValueError, match="expected COLUMN=FIELD"):
        parse_mapping_overrides(["Job Title"])


def test_override_repeated_column_raises() -> None:
    with pytest.raises(ValueError, match="more than once"):
        parse_mapping_overrides(["Job Title=title", "Job Title=company"])


def test_overrides_applied_to_hubspot_row() -> None:
    overrides = parse_mapping_overrides(
        ["Lifecycle Stage=", "Job Title=customFields.jobTitle", "Company Name="]
    )
    mapping = {**MAPPINGS["hubspot"], **overrides}
    # Record 901401 has "Globex, Inc.", Procurement and Lead in these columns.
    [row] = [row for row in read_rows(HUBSPOT_EXPORT) if row.values["Record ID"] == "901401"]
    fields, _ = row_to_fields(row, mapping)
    assert "lifecycleStage" not in fields["customFields"]
    assert fields["customFields"]["jobTitle"] == "Procurement"
    assert "title" not in fields
    assert "company" not in fields


def test_ignored_columns_include_overridden() -> None:
    mapping = {**MAPPINGS["hubspot"], **parse_mapping_overrides(["Lifecycle Stage="])}
    assert ignored_columns(read_header(HUBSPOT_EXPORT), mapping) == ["Lifecycle Stage"]


def test_missing_columns_lists_unknown_override() -> None:
    overrides = parse_mapping_overrides(["Job Titel=title", "Job Title=title"])
    assert missing_columns(read_header(HUBSPOT_EXPORT), overrides) == ["Job Titel"]


# Row conversion


def make_row(values: dict[str, str], number: int = 2) -> CsvRow:
    return CsvRow(number=number, values=values)


def test_unconvertible_rating_kept_as_text() -> None:
    row = make_row({"Email Address": "a@example.com", "MEMBER_RATING": "five"})
    fields, problems = row_to_fields(row, MAPPINGS["mailchimp"])
    assert fields["customFields"]["memberRating"] == "five"
    assert problems == [
        RowProblem(
            2,
            "MEMBER_RATING",
            "five",
            "The value is not a whole number, so it is imported as text.",
        )
    ]


def test_unconvertible_date_kept_as_text() -> None:
    row = make_row({"Email": "a@example.com", "Create Date": "31/12/2025 9:00"})
    fields, problems = row_to_fields(row, MAPPINGS["hubspot"])
    assert fields["customFields"]["hubspotCreatedAt"] == "31/12/2025 9:00"
    assert len(problems) == 1
    assert problems[0].column == "Create Date"
    assert "imported as text" in problems[0].reason


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("2025-06-27 06:36:00", "2025-06-27T06:36:00"),
        ("2025-06-27T06:36:00Z", "2025-06-27T06:36:00+00:00"),
        ("2025-06-27", "2025-06-27"),
        ("7/2/2025 9:12 PM", "2025-07-02T21:12:00"),
        ("7/2/2025 12:05 AM", "2025-07-02T00:05:00"),
        ("07/02/2025 21:12", "2025-07-02T21:12:00"),
        ("7/2/2025", "2025-07-02"),
    ],
)
def test_custom_date_formats_converted(cell: str, expected: str) -> None:
    row = make_row({"Email": "a@example.com", "Create Date": cell})
    fields, problems = row_to_fields(row, MAPPINGS["hubspot"])
    assert fields["customFields"]["hubspotCreatedAt"] == expected
    assert problems == []


def test_untyped_custom_field_stays_text() -> None:
    row = make_row({"Email": "a@example.com", "Record ID": "900000"})
    fields, _ = row_to_fields(row, MAPPINGS["hubspot"])
    assert fields["customFields"]["hubspotRecordId"] == "900000"


def test_whitespace_only_cell_skipped() -> None:
    row = make_row({"Email": "a@example.com", "Job Title": "   "})
    fields, _ = row_to_fields(row, MAPPINGS["hubspot"])
    assert "title" not in fields


def test_quoted_tag_names_split() -> None:
    row = make_row({"Email": "a@example.com", "Tags": '"VIP", "Customer, EU",vip'})
    fields, _ = row_to_fields(row, {"Email": "email", "Tags": "metadata.tags"})
    assert fields["metadata"]["tags"] == ["VIP", "Customer, EU"]


def test_two_tag_columns_merged() -> None:
    row = make_row({"Email": "a@example.com", "Tags": "vip,trial", "Segments": "Trial,partner"})
    mapping = {"Email": "email", "Tags": "metadata.tags", "Segments": "metadata.tags"}
    fields, _ = row_to_fields(row, mapping)
    assert fields["metadata"]["tags"] == ["vip", "trial", "partner"]


def test_two_columns_same_field_keeps_first() -> None:
    row = make_row({"Email": "a@example.com", "Work Email": "b@example.com"})
    fields, problems = row_to_fields(row, {"Email": "email", "Work Email": "email"})
    assert fields["email"] == "a@example.com"
    assert len(problems) == 1
    assert problems[0].column == "Work Email"
    assert problems[0].value == "b@example.com"


def test_status_and_frequency_lower_cased() -> None:
    row = make_row({"Email": "a@example.com", "Status": "Active", "Frequency": "Weekly"})
    mapping = {"Email": "email", "Status": "status", "Frequency": "preferences.frequency"}
    fields, _ = row_to_fields(row, mapping)
    assert fields["status"] == "active"
    assert fields["preferences"]["frequency"] == "weekly"


def test_channel_booleans_parsed() -> None:
    row = make_row({"Email": "a@example.com", "SMS": "Yes", "Mail": "false", "Social": "maybe"})
    mapping = {
        "Email": "email",
        "SMS": "preferences.communicationChannels.sms",
        "Mail": "preferences.communicationChannels.email",
        "Social": "preferences.communicationChannels.social",
    }
    fields, problems = row_to_fields(row, mapping)
    channels = fields["preferences"]["communicationChannels"]
    assert channels["sms"] is True
    assert channels["email"] is False
    # The worker rejects the unknown word with its reason, so it is sent unchanged.
    assert channels["social"] == "maybe"
    assert problems == []


def test_missing_email_reported_with_column() -> None:
    row = make_row({"Email": "", "First Name": "Anna"}, number=7)
    fields, problems = row_to_fields(row, MAPPINGS["hubspot"])
    assert "email" not in fields
    assert problems == [RowProblem(7, "Email", "", MISSING_EMAIL_REASON)]


def test_missing_email_mapping_reported() -> None:
    row = make_row({"Name": "Anna"})
    _, problems = row_to_fields(row, {"Name": "firstName"})
    assert len(problems) == 1
    assert problems[0].column == ""
    assert 'No column maps to "email"' in problems[0].reason


# Commands


def build(fields: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    arguments = {
        "tenant_id": TENANT,
        "row_number": 12,
        "import_id": IMPORT_ID,
        "source_name": "contacts.csv",
        **overrides,
    }
    return build_create_command(fields, **arguments)


def test_command_envelope_fields() -> None:
    command = build({"email": "anna@example.com"})
    assert command["commandId"] == "import-2026-01-15.1-row-12"
    assert command["type"] == "contact.create"
    assert command["tenantId"] == TENANT
    assert command["actor"] == {"type": "import", "id": "contacts.csv"}
    assert command["correlationId"] == IMPORT_ID
    assert command["meta"] == {"row": 12, "file": "contacts.csv"}


def test_command_payload_fields() -> None:
    fields = {"email": "anna@example.com", "metadata": {"tags": ["vip"]}}
    payload = build(fields)["payload"]
    assert payload["contactId"] == derive_contact_id(TENANT, "anna@example.com")
    assert payload["ifExists"] == "merge"
    assert payload["metadata"] == {"tags": ["vip"], "source": "import"}
    assert payload["email"] == "anna@example.com"


def test_command_leaves_fields_unchanged() -> None:
    fields = {"email": "anna@example.com", "metadata": {"tags": ["vip"]}}
    build(fields)
    assert fields == {"email": "anna@example.com", "metadata": {"tags": ["vip"]}}


def test_command_id_same_when_resent() -> None:
    first = build({"email": "anna@example.com"})
    second = build({"email": "anna@example.com"})
    assert first["commandId"] == second["commandId"]


def test_issued_at_is_utc() -> None:
    moment = datetime(2026, 1, 15, 9, 30, 5, 123000, tzinfo=UTC)
    command = build({"email": "anna@example.com"}, issued_at=moment)
    assert command["issuedAt"] == "2026-01-15T09:30:05.123Z"


def test_contact_id_uses_email_key() -> None:
    upper = build({"email": "  Anna@Bücher.Example "})["payload"]["contactId"]
    lower = build({"email": "anna@xn--bcher-kva.example"})["payload"]["contactId"]
    assert upper == lower


def test_invalid_email_gets_stable_contact_id() -> None:
    command = build({"email": " SDelacruz24@@bücher.example "})
    expected = derive_contact_id(TENANT, "invalid:sdelacruz24@@bücher.example")
    assert command["payload"]["contactId"] == expected
    assert load_schemas(SCHEMAS_DIR).validate(command) == []


def test_command_without_email_raises() -> None:
    with pytest.raises(ValueError, match="Row 12 has no e-mail address"):
        build({"firstName": "Anna"})


def test_invalid_import_id_raises() -> None:
    with pytest.raises(ValueError, match="Invalid import id"):
        build({"email": "anna@example.com"}, import_id="my import")


def test_empty_source_name_raises() -> None:
    with pytest.raises(ValueError, match="Invalid source name"):
        build({"email": "anna@example.com"}, source_name="")
