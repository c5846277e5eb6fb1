"""Normalisation of contact field values: e-mail, phone, time zone and profile URLs.

Each function returns the stored form of one value or raises `FieldError` with a
machine-readable code and a reason that states what is wrong and what to send instead.
The `field` argument is the JSON path reported in that error, so callers can pass
nested paths such as ``preferences.timezone``.
"""

from __future__ import annotations

import functools
from importlib.resources import files
from typing import Any
from urllib.parse import urlsplit

import phonenumbers
from email_validator import EmailNotValidError, ValidatedEmail, validate_email
from phonenumbers import NumberParseException, PhoneNumberFormat, ValidationResult

from contact_pipeline.domain.errors import FieldError

EMAIL_EXAMPLE = "Send an address like name@example.com."
PHONE_EXAMPLE = "Send the number with its country code, like +1 415 555 6331 or +49 30 901820."
TIMEZONE_EXAMPLE = "Send an IANA time zone name like Europe/Berlin or America/New_York."
URL_EXAMPLE = "Send a full web address like https://www.linkedin.com/in/name."

# Abbreviations that a CRM user types for North American civil time. In tzdata
# 2026f, EST and MST are links to America/Panama and America/Phoenix, which keep
# standard time all year, and PST or CDT are not IANA names at all. A contact with
# "EST" lives on US Eastern time and observes daylight saving time. The POSIX-style
# names such as EST5EDT follow the current US rules, like the city zones they map to.
NORTH_AMERICAN_ABBREVIATIONS = {
    "EST": "America/New_York",
    "EDT": "America/New_York",
    "EST5EDT": "America/New_York",
    "CST": "America/Chicago",
    "CDT": "America/Chicago",
    "CST6CDT": "America/Chicago",
    "MST": "America/Denver",
    "MDT": "America/Denver",
    "MST7MDT": "America/Denver",
    "PST": "America/Los_Angeles",
    "PDT": "America/Los_Angeles",
    "PST8PDT": "America/Los_Angeles",
    "AKST": "America/Anchorage",
    "AKDT": "America/Anchorage",
    "HST": "Pacific/Honolulu",
}

WEB_SCHEMES = frozenset({"http", "https"})


def normalize_email(value: str, *, field: str = "email") -> str:
    """Validate an e-mail address and return its normalised form.

    Surrounding whitespace is stripped. The local part keeps its letter case, and
    the domain becomes lower-case Unicode (``Anna@XN--BCHER-KVA.example`` becomes
    ``Anna@bücher.example``). Internationalised addresses are accepted, and so are
    the reserved test domains (``.example``, ``.test``, ``example.com``). The
    domain must contain a dot. Deliverability is not checked, so no DNS request
    is sent.

    Raises `FieldError` with code ``invalid_email``.
    """
    return _validate_email(value, field).normalized


def email_key(normalized_email: str) -> str:
    """Return the uniqueness key of an e-mail address within a tenant.

    The key is the case-folded local part, an ``@`` and the ASCII (IDNA) form of
    the domain, so ``Anna@Bücher.Example``, ``anna@bücher.example`` and
    ``anna@xn--bcher-kva.example`` share one key. The local part is case-folded
    even though RFC 5321 lets a mail server treat it as case-sensitive, because
    people type their address in varying case and expect one contact.

    Raises `FieldError` with code ``invalid_email`` and field ``email`` when the
    address is not valid.
    """
    validated = _validate_email(normalized_email, "email")
    return f"{validated.local_part.casefold()}@{validated.ascii_domain.lower()}"


def normalize_phone(value: str, *, field: str = "phone", default_region: str | None = None) -> str:
    """Parse a phone number and return it in E.164 form, such as ``+14155556331``.

    A number without a country code is parsed only when `default_region` (an ISO
    3166 code such as ``US``) is given. A leading international prefix is read as
    the default region dials it (``011`` in the US, ``0011`` in Australia) and,
    when that reading fails, a leading ``00`` is read as ``+``, the prefix most of
    the world dials. An extension such as ``ext. 12`` is accepted but dropped,
    because E.164 has no place for it.

    The number must be possible for its country: the right length, with an area
    code (``phonenumbers.is_possible_number_with_reason`` returns ``IS_POSSIBLE``).
    It need not be valid (``phonenumbers.is_valid_number``), so +1 415 123 4567
    passes although no US exchange starts with 1. Validity follows the allocated
    ranges in the library's metadata, which change between releases, and made-up
    numbers are common in imported test data. The fictional US range
    555-0100 to 555-0199 passes both checks (phonenumbers 9.0).

    NOTE: a national number read with the wrong default region can pass as
    possible, so ``030/0002505`` with region ``US`` becomes ``+10300002505``.

    Raises `FieldError` with code ``invalid_phone``.
    """
    text = _require_text(
        value, field, "invalid_phone", f"A phone number is required. {PHONE_EXAMPLE}"
    )
    region = default_region.upper() if default_region else None

    readings = [text]
    if text.startswith("00"):
        readings.append("+" + text[2:])

    # The last reading's reason is reported, because a leading 00 that the
    # region's own prefix cannot explain almost always means +.
    reason = ""
    for reading in readings:
        number, reason = _parse_possible_phone(reading, region)
        if number is not None:
            return phonenumbers.format_number(number, PhoneNumberFormat.E164)
    raise FieldError(field, value, reason, "invalid_phone")


def normalize_timezone(value: str, *, field: str = "preferences.timezone") -> str:
    """Return the canonical IANA name of a time zone, ignoring letter case.

    The name is matched case-insensitively against the IANA database that the
    `tzdata` package ships (``europe/berlin`` becomes ``Europe/Berlin``). Rules,
    applied in this order:

    - North American abbreviations mean the region's civil time with daylight
      saving time: ``EST`` and ``EDT`` become ``America/New_York``, and likewise
      CST, MST, PST, AKST, HST and their daylight forms.
    - The UTC aliases (``Etc/UTC``, ``UCT``, ``Universal``, ``Zulu``) become ``UTC``.
    - A name listed in ``zone.tab`` stays as it is, even where IANA has made it a
      link (``Europe/Amsterdam``), because it is the name of that country's zone.
    - Any other link becomes its target: ``Europe/Kiev`` becomes ``Europe/Kyiv``,
      ``US/Eastern`` becomes ``America/New_York``, ``Asia/Calcutta`` becomes
      ``Asia/Kolkata``, and ``CET`` becomes ``Europe/Brussels``.
    - Other abbreviations, such as ``IST`` (India, Ireland or Israel), are
      rejected because they name no IANA zone.

    Raises `FieldError` with code ``invalid_timezone``.
    """
    text = _require_text(
        value, field, "invalid_timezone", f"A time zone is required. {TIMEZONE_EXAMPLE}"
    )

    abbreviation = NORTH_AMERICAN_ABBREVIATIONS.get(text.upper())
    if abbreviation is not None:
        return abbreviation

    canonical = _canonical_timezones().get(text.lower())
    if canonical is None:
        reason = f"{text!r} is not a known time zone. {TIMEZONE_EXAMPLE}"
        raise FieldError(field, value, reason, "invalid_timezone")
    return canonical


def normalize_url(value: str, *, field: str) -> str:
    """Validate a social profile URL and return it with surrounding whitespace stripped.

    The URL must use the http or https scheme, name a host, and contain no whitespace.

    Raises `FieldError` with code ``invalid_url``.
    """
    text = _require_text(value, field, "invalid_url", f"A URL is required. {URL_EXAMPLE}")
    if any(character.isspace() for character in text):
        raise FieldError(field, value, f"The URL contains whitespace. {URL_EXAMPLE}", "invalid_url")

    try:
        parts = urlsplit(text)
    except ValueError as error:
        reason = f"The URL is not valid: {error}. {URL_EXAMPLE}"
        raise FieldError(field, value, reason, "invalid_url") from error

    if parts.scheme.lower() not in WEB_SCHEMES:
        reason = f"The URL must start with http:// or https://. {URL_EXAMPLE}"
        raise FieldError(field, value, reason, "invalid_url")
    if not parts.hostname:
        raise FieldError(field, value, f"The URL has no host name. {URL_EXAMPLE}", "invalid_url")
    return text


def _require_text(value: Any, field: str, code: str, missing_reason: str) -> str:
    """Return `value` stripped, or raise when it is not a string or is blank."""
    if not isinstance(value, str):
        reason = f"The value must be a JSON string, not {type(value).__name__}."
        raise FieldError(field, value, reason, code)
    text = value.strip()
    if not text:
        raise FieldError(field, value, missing_reason, code)
    return text


def _validate_email(value: str, field: str) -> ValidatedEmail:
    text = _require_text(
        value, field, "invalid_email", f"An e-mail address is required. {EMAIL_EXAMPLE}"
    )
    try:
        # test_environment=True is the email_validator 2.x switch that admits the
        # special-use domain "test" and its subdomains. The example domains pass
        # without it. With check_deliverability=False no DNS request is sent.
        validated = validate_email(text, check_deliverability=False, test_environment=True)
    except EmailNotValidError as error:
        reason = f"The e-mail address is not valid. {error} {EMAIL_EXAMPLE}"
        raise FieldError(field, value, reason, "invalid_email") from error

    # test_environment=True also admits the bare domain "test", which no one can
    # mail outside a lab.
    if "." not in validated.ascii_domain:
        reason = f"The e-mail address is not valid because its domain has no dot. {EMAIL_EXAMPLE}"
        raise FieldError(field, value, reason, "invalid_email")
    return validated


def _parse_possible_phone(
    text: str, region: str | None
) -> tuple[phonenumbers.PhoneNumber | None, str]:
    """Return the parsed number and an empty reason, or None and why it is not possible."""
    try:
        number = phonenumbers.parse(text, region)
    except NumberParseException as error:
        return None, _phone_parse_reason(error, text)

    possibility = phonenumbers.is_possible_number_with_reason(number)
    if possibility != ValidationResult.IS_POSSIBLE:
        return None, _phone_length_reason(possibility)
    return number, ""


def _phone_parse_reason(error: NumberParseException, text: str) -> str:
    if error.error_type == NumberParseException.NOT_A_NUMBER:
        return f"The value is not a phone number. {PHONE_EXAMPLE}"
    if error.error_type == NumberParseException.INVALID_COUNTRY_CODE:
        if text.startswith("+"):
            return f"The country code after the + is not known. {PHONE_EXAMPLE}"
        return f"The phone number has no country code. {PHONE_EXAMPLE}"
    if error.error_type == NumberParseException.TOO_LONG:
        return f"The phone number is too long. {PHONE_EXAMPLE}"
    return f"The phone number is too short. {PHONE_EXAMPLE}"


def _phone_length_reason(possibility: int) -> str:
    if possibility == ValidationResult.IS_POSSIBLE_LOCAL_ONLY:
        return f"The phone number has no area code. {PHONE_EXAMPLE}"
    if possibility == ValidationResult.INVALID_COUNTRY_CODE:
        return f"The country code is not known. {PHONE_EXAMPLE}"
    if possibility == ValidationResult.TOO_SHORT:
        return f"The phone number is too short for its country. {PHONE_EXAMPLE}"
    if possibility == ValidationResult.TOO_LONG:
        return f"The phone number is too long for its country. {PHONE_EXAMPLE}"
    return f"The phone number has the wrong number of digits for its country. {PHONE_EXAMPLE}"


@functools.cache
def _canonical_timezones() -> dict[str, str]:
    """Map each lower-cased IANA zone and link name to the name that is stored.

    The zones and links come from ``tzdata.zi`` and the per-country names from
    ``zone.tab``, both shipped by the `tzdata` package, so every machine uses the
    same database whatever the operating system has installed.
    """
    database = files("tzdata").joinpath("zoneinfo")
    zones: set[str] = set()
    links: dict[str, str] = {}
    for line in database.joinpath("tzdata.zi").read_text(encoding="utf-8").splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "Z":
            zones.add(words[1])
        elif len(words) >= 3 and words[0] == "L":
            links[words[2]] = words[1]

    country_zones = {
        line.split("\t")[2]
        for line in database.joinpath("zone.tab").read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    }

    # "Factory" is a placeholder zone for unconfigured systems, never a real place.
    zones.discard("Factory")

    canonical: dict[str, str] = {}
    for name in zones | country_zones:
        canonical[name.lower()] = name
    for link, target in links.items():
        if link not in country_zones:
            canonical[link.lower()] = target

    # "UTC" is the name that people and other systems recognise. IANA keeps it
    # as a link to Etc/UTC, so it is valid everywhere that Etc/UTC is.
    return {name: "UTC" if target == "Etc/UTC" else target for name, target in canonical.items()}
