"""Signed, expiring confirmation tokens of double opt-in.

A token names the tenant, contact, list and the nonce of one pending
membership, signed with the worker's secret (itsdangerous, HMAC-SHA1 over a
timestamped payload). The signature and age are checked when the token comes
back; single use is the membership's job: confirming clears its nonce.
"""

from __future__ import annotations

from dataclasses import dataclass

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from contact_pipeline.domain.errors import FieldError

SALT = "contact-pipeline.membership-confirmation"


@dataclass(frozen=True)
class ConfirmationClaim:
    """The membership that a valid token confirms."""

    tenant_id: str
    contact_id: str
    list_id: str
    nonce: str


def make_confirmation_token(
    secret: str,
    tenant_id: str,
    contact_id: str,
    list_id: str,
    nonce: str,
    *,
    issued_at: float | None = None,
) -> str:
    """Sign a token for one pending membership; ``issued_at`` (epoch seconds) is for tests."""
    serializer = _serializer(secret, issued_at)
    token = serializer.dumps({"t": tenant_id, "c": contact_id, "l": list_id, "n": nonce})
    return str(token)


def read_confirmation_token(
    secret: str, token: str, max_age_seconds: int, field: str = "payload.token"
) -> ConfirmationClaim:
    """Check signature and age; raise FieldError with code invalid_token or token_expired."""
    try:
        claims = _serializer(secret).loads(token, max_age=max_age_seconds)
    except SignatureExpired as exc:
        raise FieldError(
            field,
            _shorten(token),
            f"the confirmation link expired {describe_duration(max_age_seconds)} after it "
            "was sent; join the list again to get a new one",
            code="token_expired",
        ) from exc
    except BadSignature as exc:
        raise FieldError(
            field,
            _shorten(token),
            "the confirmation token is not one this service signed, or it was altered; "
            "use the link from the confirmation e-mail as it is",
            code="invalid_token",
        ) from exc
    if not isinstance(claims, dict) or not all(isinstance(claims.get(k), str) for k in "tcln"):
        raise FieldError(
            field, _shorten(token), "the confirmation token is malformed", code="invalid_token"
        )
    return ConfirmationClaim(claims["t"], claims["c"], claims["l"], claims["n"])


def _serializer(secret: str, issued_at: float | None = None) -> URLSafeTimedSerializer:
    serializer = URLSafeTimedSerializer(secret, salt=SALT)
    if issued_at is not None:
        fixed = int(issued_at)

        class _FixedClockSigner(serializer.signer):  # type: ignore[name-defined,misc]
            def get_timestamp(self) -> int:
                return fixed

        serializer.signer = _FixedClockSigner
    return serializer


def describe_duration(seconds: int) -> str:
    """Return a duration in the largest whole unit, such as "7 days" or "90 seconds"."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}" + ("s" if count != 1 else "")
    return f"{seconds} second" + ("s" if seconds != 1 else "")


def _shorten(token: str) -> str:
    return token if len(token) <= 24 else f"{token[:20]}..."


__all__ = [
    "ConfirmationClaim",
    "make_confirmation_token",
    "read_confirmation_token",
]
