"""Double opt-in mail decisions: pure functions over an event and the stored documents.

The mailer agent reads a ``membership.pending`` event, loads the contact and
the list, and calls :func:`skip_reason` to decide whether the confirmation
e-mail should still go out. Events can arrive late or twice, so the decision rests on the
stored membership: only a membership that is still pending with the event's
nonce gets a mail, because any other token would be rejected as used.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

from aiosmtplib import SMTPRecipientsRefused, SMTPResponseException

from contact_pipeline.domain.tokens import describe_duration

PENDING_EVENT = "membership.pending"

SKIP_REASONS = (
    "contact_not_found",
    "contact_deleted",
    "contact_unsubscribed",
    "no_email",
    "list_not_found",
    "list_deleted",
    "membership_not_pending",
    "nonce_replaced",
)
"""Every value :func:`skip_reason` returns, each usable as a log field."""

_WHITESPACE = re.compile(r"\s+")


class InvalidPendingEvent(ValueError):
    """A membership.pending event lacks a field the mail needs, so retrying cannot help."""

    retriable = False


@dataclass(frozen=True)
class PendingConfirmation:
    """One pending membership waiting for its contact's confirmation, from one event."""

    event_id: str
    tenant_id: str
    contact_id: str
    list_id: str
    nonce: str

    @property
    def contact_doc_id(self) -> str:
        """The contact's ``_id`` in the ``contacts`` collection."""
        return f"{self.tenant_id}:{self.contact_id}"

    @property
    def list_doc_id(self) -> str:
        """The list's ``_id`` in the ``lists`` collection."""
        return f"{self.tenant_id}:{self.list_id}"


def pending_confirmation(event: Any) -> PendingConfirmation | None:
    """Read the pending confirmation of a membership event, or None for other event types.

    Raises :class:`InvalidPendingEvent` when a ``membership.pending`` event lacks
    its id, tenant, contact, list or nonce.
    """
    if not isinstance(event, dict) or event.get("type") != PENDING_EVENT:
        return None

    data = event.get("data")
    confirmation = data.get("confirmation") if isinstance(data, dict) else None
    nonce = confirmation.get("nonce") if isinstance(confirmation, dict) else None
    fields = {
        "id": event.get("id"),
        "tenantId": event.get("tenantId"),
        "contactId": event.get("contactId"),
        "listId": event.get("listId"),
        "data.confirmation.nonce": nonce,
    }
    missing = sorted(
        name for name, value in fields.items() if not isinstance(value, str) or not value
    )
    if missing:
        raise InvalidPendingEvent(
            f"membership.pending event has no valid {', '.join(missing)}; no mail can be sent"
        )

    return PendingConfirmation(
        event_id=event["id"],
        tenant_id=event["tenantId"],
        contact_id=event["contactId"],
        list_id=event["listId"],
        nonce=nonce,  # type: ignore[arg-type]
    )


def skip_reason(
    pending: PendingConfirmation,
    contact: dict[str, Any] | None,
    list_doc: dict[str, Any] | None,
) -> str | None:
    """Return why the confirmation mail must not go out (one of SKIP_REASONS), or None to send.

    A globally unsubscribed contact gets no mail either, because an opt-out
    stops every message, this one included.
    """
    if contact is None:
        return "contact_not_found"
    if contact.get("deleted"):
        return "contact_deleted"
    if contact.get("status") == "unsubscribed":
        return "contact_unsubscribed"
    if not isinstance(contact.get("email"), str) or not contact["email"]:
        return "no_email"
    if list_doc is None:
        return "list_not_found"
    if list_doc.get("deleted"):
        return "list_deleted"

    entry = (contact.get("lists") or {}).get(pending.list_id)
    if not isinstance(entry, dict) or entry.get("status") != "pending":
        return "membership_not_pending"
    if (entry.get("confirmation") or {}).get("nonce") != pending.nonce:
        # The contact joined again: the newer event carries the nonce that still works.
        return "nonce_replaced"
    return None


def confirmation_link(url_template: str, token: str) -> str:
    """Put the token into the link template at ``{token}``.

    ``str.replace`` rather than ``str.format``, so other braces in the URL stay
    as they are. The token is URL-safe base64 and needs no quoting.
    """
    return url_template.replace("{token}", token)


def build_confirmation_message(
    *,
    sender: str,
    recipient: str,
    list_name: str,
    link: str,
    valid_seconds: int,
    first_name: str | None = None,
) -> EmailMessage:
    """Build the confirmation e-mail: a plain-text body with an HTML alternative."""
    name = _one_line(list_name) or "our list"
    greeting = (
        f"Hello {_one_line(first_name)}," if first_name and _one_line(first_name) else "Hello,"
    )
    validity = describe_duration(valid_seconds)

    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = f"Please confirm your subscription to {name}"
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = make_msgid(domain=_domain(sender))
    # Marks the mail as sent by a program, so auto-responders do not reply to it.
    message["Auto-Submitted"] = "auto-generated"

    message.set_content(
        f"{greeting}\n\n"
        f"please confirm that you want to receive {name}:\n\n"
        f"{link}\n\n"
        f"The link works once and for {validity}. If you did not ask to join, "
        "ignore this e-mail and you will not be added.\n"
    )
    message.add_alternative(
        "<!DOCTYPE html>\n<html><body>\n"
        f"<p>{html.escape(greeting)}</p>\n"
        f"<p>please confirm that you want to receive {html.escape(name)}:</p>\n"
        f'<p><a href="{html.escape(link, quote=True)}">Confirm my subscription</a></p>\n'
        f"<p>The link works once and for {validity}. If you did not ask to join, "
        "ignore this e-mail and you will not be added.</p>\n"
        "</body></html>\n",
        subtype="html",
    )
    return message


def smtp_failure_is_retriable(exc: BaseException) -> bool:
    """Tell whether a failed SMTP send may pass when tried again.

    Connection failures, timeouts and 4xx replies are temporary. 5xx replies,
    such as a refused recipient or a failed login, and unsupported features are not.
    """
    if isinstance(exc, SMTPRecipientsRefused):
        return any(400 <= refusal.code < 500 for refusal in exc.recipients)
    # Checked before OSError because a refused connection reply is both.
    if isinstance(exc, SMTPResponseException):
        return 400 <= exc.code < 500
    return isinstance(exc, OSError)


def _one_line(text: str | None) -> str:
    """Collapse whitespace, because a line break in a header value is rejected by ``email``."""
    return _WHITESPACE.sub(" ", text or "").strip()


def _domain(address: str) -> str | None:
    _, at, domain = address.rpartition("@")
    if not at:
        return None
    return domain.strip("> ") or None
