"""Unit tests of contact field normalisation, with values from the HubSpot and Mailchimp exports."""

from __future__ import annotations

import pytest

from contact_pipeline.domain.errors import FieldError
from contact_pipeline.domain.normalize import (
    email_key,
    normalize_email,
    normalize_phone,
    normalize_timezone,
    normalize_url,
)

# E-mail addresses as they appear in examples/hubspot-contacts-export.csv and
# examples/mailchimp-audience-export.csv, with the expected normalised form.
EXPORTED_VALID_EMAILS = [
    ("bjorn+news50000@mail.example.com", "bjorn+news50000@mail.example.com"),
    ("wojcik5000350003@example.com", "wojcik5000350003@example.com"),
    ("muller5000250002@shop.test", "muller5000250002@shop.test"),
    ("kwame.esposito0@bücher.example", "kwame.esposito0@bücher.example"),
    ("thảo.garcia50018@mail.example.com", "thảo.garcia50018@mail.example.com"),
    ("jovanović5000950009@corp.example", "jovanović5000950009@corp.example"),
    ("MARYJANE.MULLER@SHOP.TEST", "MARYJANE.MULLER@shop.test"),
    ("RCERNY50069@EXÄMPLE.TEST", "RCERNY50069@exämple.test"),
    ("Emilie.Jovanović42@Example.Net", "Emilie.Jovanović42@example.net"),
    ("  xbianchi50037@corp.example ", "xbianchi50037@corp.example"),
]

EXPORTED_INVALID_EMAILS = [
    "lea.tanaka50006@@corp.example",
    "anna.ivanova1907@@bücher.example",
    "vaclav+news50035",
    "dyilmaz",
    "",
]

EXPORTED_VALID_PHONES = [
    ("+1 (415) 555-6331", "+14155556331"),
    ("+33 6 12 34 67 48", "+33612346748"),
    ("0049 30 0005855", "+49300005855"),
    ("+81-3-5555-2160", "+81355552160"),
    ("+44 20 7946 0191", "+442079460191"),
]

# National numbers are invalid here because these tests pass no default region.
EXPORTED_INVALID_PHONES = [
    "555-7498 ext. 12",
    "030/0002505",
    "(212) 555-2248",
    "not a phone",
    "",
]

EXPORTED_TIMEZONES = [
    ("Europe/Berlin", "Europe/Berlin"),
    ("Europe/Kyiv", "Europe/Kyiv"),
    ("Europe/Kiev", "Europe/Kyiv"),
    ("Asia/Kolkata", "Asia/Kolkata"),
    ("Asia/Tokyo", "Asia/Tokyo"),
    ("America/Sao_Paulo", "America/Sao_Paulo"),
    ("America/New_York", "America/New_York"),
    ("Australia/Sydney", "Australia/Sydney"),
    ("EST", "America/New_York"),
    ("UTC", "UTC"),
]

EXPORTED_INVALID_TIMEZONES = ["Mars/Olympus_Mons", ""]


# normalize_email


@pytest.mark.parametrize(("raw", "expected"), EXPORTED_VALID_EMAILS)
def test_email_exported_valid(raw: str, expected: str) -> None:
    assert normalize_email(raw) == expected


@pytest.mark.parametrize("raw", EXPORTED_INVALID_EMAILS)
def test_email_exported_invalid(raw: str) -> None:
    with pytest.raises(FieldError) as caught:
        normalize_email(raw)

    assert caught.value.code == "invalid_email"


def test_email_error_fields() -> None:
    with pytest.raises(FieldError) as caught:
        normalize_email("lea.tanaka50006@@corp.example")

    assert caught.value.field == "email"
    assert caught.value.value == "lea.tanaka50006@@corp.example"
    assert caught.value.code == "invalid_email"
    assert "not valid" in caught.value.reason
    assert "name@example.com" in caught.value.reason


def test_email_error_uses_given_field() -> None:
    with pytest.raises(FieldError) as caught:
        normalize_email("nobody", field="contacts.3.email")

    assert caught.value.field == "contacts.3.email"


def test_email_empty_is_required() -> None:
    with pytest.raises(FieldError) as caught:
        normalize_email("   ")

    assert caught.value.code == "invalid_email"
    assert "required" in caught.value.reason
    assert caught.value.value == "   "


def test_email_missing_at_sign() -> None:
    with pytest.raises(FieldError) as caught:
        normalize_email("vaclav+news50035")

    assert "@-sign" in caught.value.reason


def test_email_domain_without_dot() -> None:
    with pytest.raises(FieldError) as caught:
        normalize_email("anna@example")

    assert "period" in caught.value.reason


def test_email_bare_test_domain_rejected() -> None:
    with pytest.raises(FieldError) as caught:
        normalize_email("anna@test")

    assert "no dot" in caught.value.reason


def test_email_special_use_domain_rejected() -> None:
    with pytest.raises(FieldError) as caught:
        normalize_email("anna@host.invalid")

    assert caught.value.code == "invalid_email"


def test_email_display_name_rejected() -> None:
    with pytest.raises(FieldError) as caught:
        normalize_email("Anna <anna@example.com>")

    assert caught.value.code == "invalid_email"


def test_email_punycode_domain_becomes_unicode() -> None:
    assert normalize_email("anna@XN--BCHER-KVA.example") == "anna@bücher.example"


def test_email_keeps_local_part_case() -> None:
    assert normalize_email("Anna@Example.COM") == "Anna@example.com"


def test_email_non_string_rejected() -> None:
    with pytest.raises(FieldError) as caught:
        normalize_email(None)  # type: ignore[arg-type]

    assert caught.value.code == "invalid_email"
    assert caught.value.value is None


# email_key


def test_email_key_folds_idn_domain() -> None:
    unicode_key = email_key("anna@bücher.example")
    punycode_key = email_key("anna@xn--bcher-kva.example")

    assert unicode_key == "anna@xn--bcher-kva.example"
    assert punycode_key == unicode_key


def test_email_key_folds_letter_case() -> None:
    assert email_key("Anna@Bücher.Example") == email_key("anna@bücher.example")


def test_email_key_folds_exported_duplicates() -> None:
    upper = email_key(normalize_email("Emilie.Jovanović42@Example.Net"))
    lower = email_key(normalize_email("emilie.jovanović42@example.net"))

    assert upper == lower
    assert upper == "emilie.jovanović42@example.net"


def test_email_key_casefolds_sharp_s() -> None:
    assert email_key("STRASSE@example.com") == email_key("straße@example.com")


def test_email_key_keeps_plus_tag() -> None:
    assert email_key("bjorn+news@example.com") != email_key("bjorn@example.com")


def test_email_key_rejects_invalid() -> None:
    with pytest.raises(FieldError) as caught:
        email_key("anna@@example.com")

    assert caught.value.field == "email"
    assert caught.value.code == "invalid_email"


# normalize_phone


@pytest.mark.parametrize(("raw", "expected"), EXPORTED_VALID_PHONES)
def test_phone_exported_valid(raw: str, expected: str) -> None:
    assert normalize_phone(raw) == expected


@pytest.mark.parametrize("raw", EXPORTED_INVALID_PHONES)
def test_phone_exported_invalid(raw: str) -> None:
    with pytest.raises(FieldError) as caught:
        normalize_phone(raw)

    assert caught.value.code == "invalid_phone"


def test_phone_error_fields() -> None:
    with pytest.raises(FieldError) as caught:
        normalize_phone("not a phone")

    assert caught.value.field == "phone"
    assert caught.value.value == "not a phone"
    assert caught.value.code == "invalid_phone"
    assert "not a phone number" in caught.value.reason


def test_phone_error_uses_given_field() -> None:
    with pytest.raises(FieldError) as caught:
        normalize_phone("not a phone", field="mobile")

    assert caught.value.field == "mobile"


def test_phone_extension_needs_country_code() -> None:
    with pytest.raises(FieldError) as caught:
        normalize_phone("555-7498 ext. 12")

    assert "country code" in caught.value.reason


def test_phone_extension_dropped() -> None:
    assert normalize_phone("+1 415 555 6331 ext. 12") == "+14155556331"


def test_phone_local_number_without_area_code() -> None:
    with pytest.raises(FieldError) as caught:
        normalize_phone("555-7498 ext. 12", default_region="US")

    assert "area code" in caught.value.reason


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("030/0002505", "DE", "+49300002505"),
        ("(212) 555-2248", "US", "+12125552248"),
        ("(212) 555-2248", "us", "+12125552248"),
    ],
)
def test_phone_national_with_region(raw: str, region: str, expected: str) -> None:
    assert normalize_phone(raw, default_region=region) == expected


def test_phone_double_zero_with_other_region() -> None:
    assert normalize_phone("0049 30 0005855", default_region="US") == "+49300005855"


def test_phone_region_international_prefix() -> None:
    assert normalize_phone("011 49 30 901820", default_region="US") == "+4930901820"


def test_phone_fictional_555_accepted() -> None:
    assert normalize_phone("+1 415 555 0100") == "+14155550100"


def test_phone_possible_but_unallocated_accepted() -> None:
    assert normalize_phone("+1 415 123 4567") == "+14151234567"


def test_phone_too_short_rejected() -> None:
    with pytest.raises(FieldError) as caught:
        normalize_phone("+1 415 555")

    assert "too short" in caught.value.reason


def test_phone_too_long_rejected() -> None:
    with pytest.raises(FieldError) as caught:
        normalize_phone("+1 415 555 6331 1111")

    assert "too long" in caught.value.reason


def test_phone_unknown_country_code() -> None:
    with pytest.raises(FieldError) as caught:
        normalize_phone("+999 1234567")

    assert "country code" in caught.value.reason


def test_phone_empty_is_required() -> None:
    with pytest.raises(FieldError) as caught:
        normalize_phone("")

    assert "required" in caught.value.reason


# normalize_timezone


@pytest.mark.parametrize(("raw", "expected"), EXPORTED_TIMEZONES)
def test_timezone_exported_valid(raw: str, expected: str) -> None:
    assert normalize_timezone(raw) == expected


@pytest.mark.parametrize("raw", EXPORTED_INVALID_TIMEZONES)
def test_timezone_exported_invalid(raw: str) -> None:
    with pytest.raises(FieldError) as caught:
        normalize_timezone(raw)

    assert caught.value.code == "invalid_timezone"


def test_timezone_error_fields() -> None:
    with pytest.raises(FieldError) as caught:
        normalize_timezone("Mars/Olympus")

    assert caught.value.field == "preferences.timezone"
    assert caught.value.value == "Mars/Olympus"
    assert caught.value.code == "invalid_timezone"
    assert "Europe/Berlin" in caught.value.reason


def test_timezone_error_uses_given_field() -> None:
    with pytest.raises(FieldError) as caught:
        normalize_timezone("Mars/Olympus", field="timezone")

    assert caught.value.field == "timezone"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Europe/Kiev", "Europe/Kyiv"),
        ("US/Eastern", "America/New_York"),
        ("Asia/Calcutta", "Asia/Kolkata"),
        ("Asia/Saigon", "Asia/Ho_Chi_Minh"),
        ("America/Buenos_Aires", "America/Argentina/Buenos_Aires"),
        ("GB", "Europe/London"),
        ("CET", "Europe/Brussels"),
    ],
)
def test_timezone_link_becomes_target(raw: str, expected: str) -> None:
    assert normalize_timezone(raw) == expected


@pytest.mark.parametrize("name", ["Europe/Amsterdam", "Asia/Kuwait"])
def test_timezone_country_link_kept(name: str) -> None:
    assert normalize_timezone(name) == name


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("EST", "America/New_York"),
        ("edt", "America/New_York"),
        ("EST5EDT", "America/New_York"),
        ("CST", "America/Chicago"),
        ("MST", "America/Denver"),
        ("PST", "America/Los_Angeles"),
        ("PDT", "America/Los_Angeles"),
        ("AKST", "America/Anchorage"),
        ("HST", "Pacific/Honolulu"),
    ],
)
def test_timezone_abbreviation_means_civil_time(raw: str, expected: str) -> None:
    assert normalize_timezone(raw) == expected


def test_timezone_ambiguous_abbreviation_rejected() -> None:
    with pytest.raises(FieldError) as caught:
        normalize_timezone("IST")

    assert caught.value.code == "invalid_timezone"


@pytest.mark.parametrize("name", ["UTC", "Etc/UTC", "utc", "Zulu", "Universal", "UCT"])
def test_timezone_utc_aliases(name: str) -> None:
    assert normalize_timezone(name) == "UTC"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("europe/berlin", "Europe/Berlin"),
        ("AMERICA/NEW_YORK", "America/New_York"),
        ("europe/kiev", "Europe/Kyiv"),
        ("  Asia/Tokyo ", "Asia/Tokyo"),
    ],
)
def test_timezone_ignores_case(raw: str, expected: str) -> None:
    assert normalize_timezone(raw) == expected


def test_timezone_factory_rejected() -> None:
    with pytest.raises(FieldError) as caught:
        normalize_timezone("Factory")

    assert caught.value.code == "invalid_timezone"


def test_timezone_empty_is_required() -> None:
    with pytest.raises(FieldError) as caught:
        normalize_timezone(" ")

    assert "required" in caught.value.reason


# normalize_url


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("https://www.linkedin.com/in/anna-muller", "https://www.linkedin.com/in/anna-muller"),
        ("  https://github.com/anna ", "https://github.com/anna"),
        ("http://example.com", "http://example.com"),
        ("HTTPS://GitHub.com/anna", "HTTPS://GitHub.com/anna"),
    ],
)
def test_url_valid(raw: str, expected: str) -> None:
    assert normalize_url(raw, field="socialProfiles.linkedin") == expected


@pytest.mark.parametrize(
    ("raw", "reason_part"),
    [
        ("www.linkedin.com/in/anna", "http:// or https://"),
        ("ftp://example.com/anna", "http:// or https://"),
        ("mailto:anna@example.com", "http:// or https://"),
        ("https://", "no host name"),
        ("https:///anna", "no host name"),
        ("https://github.com/anna muller", "whitespace"),
        ("http://[::1", "not valid"),
        ("", "required"),
    ],
)
def test_url_invalid(raw: str, reason_part: str) -> None:
    with pytest.raises(FieldError) as caught:
        normalize_url(raw, field="socialProfiles.github")

    assert caught.value.field == "socialProfiles.github"
    assert caught.value.value == raw
    assert caught.value.code == "invalid_url"
    assert reason_part in caught.value.reason
