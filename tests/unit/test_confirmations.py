"""Double opt-in mail decisions and message building, driven directly.

The last tests run the mailer's send path against in-memory documents and an
SMTP server on 127.0.0.1 (aiosmtpd), to check retries and give-ups without
Kafka or a document store.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtplib import (
    SMTPConnectError,
    SMTPNotSupported,
    SMTPRecipientRefused,
    SMTPRecipientsRefused,
    SMTPResponseException,
    SMTPServerDisconnected,
)

from contact_pipeline import metrics
from contact_pipeline.agents import mailer
from contact_pipeline.domain.commands import SourcePosition
from contact_pipeline.domain.tokens import read_confirmation_token
from contact_pipeline.handlers.confirmations import (
    SKIP_REASONS,
    InvalidPendingEvent,
    PendingConfirmation,
    build_confirmation_message,
    confirmation_link,
    pending_confirmation,
    skip_reason,
    smtp_failure_is_retriable,
)
from contact_pipeline.settings import Settings

SECRET = "unit-test-secret"
POSITION = SourcePosition("membership-events", 0, 7)


def json_bytes(value: Any) -> bytes:
    return json.dumps(value).encode()


def pending_event(**overrides: Any) -> dict[str, Any]:
    event = {
        "id": "ev-1",
        "type": "membership.pending",
        "tenantId": "acme",
        "contactId": "c-1",
        "listId": "news",
        "reason": "confirmation_required",
        "data": {"status": "pending", "confirmation": {"nonce": "cmd-1", "requestedAt": "x"}},
    }
    event.update(overrides)
    return event


PENDING = PendingConfirmation("ev-1", "acme", "c-1", "news", "cmd-1")


def contact(**overrides: Any) -> dict[str, Any]:
    doc = {
        "_id": "acme:c-1",
        "id": "c-1",
        "tenantId": "acme",
        "email": "anna@example.com",
        "firstName": "Anna",
        "status": "active",
        "lists": {"news": {"status": "pending", "confirmation": {"nonce": "cmd-1"}}},
    }
    doc.update(overrides)
    return doc


LIST = {"_id": "acme:news", "id": "news", "tenantId": "acme", "name": "Weekly News"}


# --- reading the event


def test_pending_event_read():
    assert pending_confirmation(pending_event()) == PENDING
    assert PENDING.contact_doc_id == "acme:c-1"
    assert PENDING.list_doc_id == "acme:news"


@pytest.mark.parametrize("event_type", ["membership.added", "membership.confirmed", None])
def test_other_event_types_ignored(event_type):
    assert pending_confirmation(pending_event(type=event_type)) is None


def test_non_object_event_ignored():
    assert pending_confirmation(["membership.pending"]) is None


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"data": {"status": "pending"}}, "data.confirmation.nonce"),
        ({"data": None}, "data.confirmation.nonce"),
        ({"data": {"confirmation": {"nonce": ""}}}, "data.confirmation.nonce"),
        ({"contactId": None}, "contactId"),
        ({"listId": 5}, "listId"),
        ({"id": ""}, "id"),
    ],
)
def test_pending_event_without_field_invalid(overrides, named):
    with pytest.raises(InvalidPendingEvent, match=named):
        pending_confirmation(pending_event(**overrides))


# --- deciding whether to send


def test_still_pending_membership_gets_mail():
    assert skip_reason(PENDING, contact(), LIST) is None


@pytest.mark.parametrize(
    ("contact_doc", "list_doc", "reason"),
    [
        (None, LIST, "contact_not_found"),
        (contact(deleted=True, status="deleted"), LIST, "contact_deleted"),
        (contact(status="unsubscribed"), LIST, "contact_unsubscribed"),
        (contact(email=None), LIST, "no_email"),
        (contact(email=""), LIST, "no_email"),
        (contact(), None, "list_not_found"),
        (contact(), {**LIST, "deleted": True}, "list_deleted"),
        (contact(lists={}), LIST, "membership_not_pending"),
        (contact(lists={"news": {"status": "active"}}), LIST, "membership_not_pending"),
        (contact(lists={"news": {"status": "unsubscribed"}}), LIST, "membership_not_pending"),
        (
            contact(lists={"news": {"status": "pending", "confirmation": {"nonce": "cmd-2"}}}),
            LIST,
            "nonce_replaced",
        ),
    ],
)
def test_mail_skipped_with_reason(contact_doc, list_doc, reason):
    assert skip_reason(PENDING, contact_doc, list_doc) == reason
    assert reason in SKIP_REASONS


# --- building the message


def message(**overrides: Any) -> EmailMessage:
    arguments: dict[str, Any] = {
        "sender": "Lists <lists@news.example>",
        "recipient": "anna@example.com",
        "list_name": "Weekly News",
        "link": "https://forms.example/confirm?token=abc.def",
        "valid_seconds": 7 * 86400,
        "first_name": "Anna",
    }
    arguments.update(overrides)
    return build_confirmation_message(**arguments)


def test_message_headers():
    built = message()

    assert built["From"] == "Lists <lists@news.example>"
    assert built["To"] == "anna@example.com"
    assert built["Subject"] == "Please confirm your subscription to Weekly News"
    assert built["Message-ID"].endswith("@news.example>")
    assert built["Date"]
    assert built["Auto-Submitted"] == "auto-generated"


def test_message_has_link_in_text_and_html():
    built = message()
    text = built.get_body(("plain",)).get_content()
    html = built.get_body(("html",)).get_content()

    assert "Hello Anna," in text
    assert "https://forms.example/confirm?token=abc.def" in text
    assert "7 days" in text
    assert 'href="https://forms.example/confirm?token=abc.def"' in html


def test_message_survives_mail_round_trip():
    parsed = message_from_bytes(message().as_bytes(), policy=policy.default)

    assert "token=abc.def" in parsed.get_body(("plain",)).get_content()


def test_message_escapes_html_and_folds_lines():
    built = message(list_name="Tips <b>&\nTricks", first_name="  ")
    html = built.get_body(("html",)).get_content()

    assert built["Subject"] == "Please confirm your subscription to Tips <b>& Tricks"
    assert "Tips &lt;b&gt;&amp; Tricks" in html
    assert "Hello," in built.get_body(("plain",)).get_content()


def test_message_states_short_validity():
    text = message(valid_seconds=3600).get_body(("plain",)).get_content()

    assert "for 1 hour." in text


def test_link_keeps_other_braces():
    assert confirmation_link("https://x.example/{lang}/c?t={token}", "t.k") == (
        "https://x.example/{lang}/c?t=t.k"
    )


# --- classifying SMTP failures


@pytest.mark.parametrize(
    ("error", "retriable"),
    [
        (SMTPConnectError("connection refused"), True),
        (SMTPServerDisconnected("gone"), True),
        (ConnectionRefusedError(), True),
        (SMTPResponseException(451, "try again later"), True),
        (SMTPResponseException(554, "rejected"), False),
        (SMTPRecipientsRefused([SMTPRecipientRefused(550, "no such user", "a@x.example")]), False),
        (SMTPRecipientsRefused([SMTPRecipientRefused(452, "mailbox full", "a@x.example")]), True),
        (SMTPNotSupported("SMTPUTF8 not supported"), False),
    ],
)
def test_smtp_failure_retriable(error, retriable):
    assert smtp_failure_is_retriable(error) is retriable


# --- the mailer's send path, with in-memory documents and a local SMTP server


class Collection:
    """The two calls the mailer makes on a collection, over a dict."""

    def __init__(self, *documents: dict[str, Any]) -> None:
        self.documents = {doc["_id"]: doc for doc in documents}

    async def find_one(self, query: dict[str, Any]) -> dict[str, Any] | None:
        return self.documents.get(query["_id"])

    async def insert_one(self, document: dict[str, Any]) -> None:
        self.documents[document["_id"]] = document


class MemoryStore:
    def __init__(self) -> None:
        self.contacts = Collection(contact())
        self.lists = Collection(LIST)
        self.db = {mailer.MAILS_COLLECTION: Collection()}


class Replies:
    """aiosmtpd handler that returns queued replies to DATA, then accepts every message."""

    def __init__(self, *replies: str) -> None:
        self.replies = list(replies)
        self.accepted: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.replies:
            return self.replies.pop(0)
        self.accepted.append(envelope.content)
        return "250 OK"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def smtp(request: pytest.FixtureRequest) -> Iterator[tuple[Replies, int]]:
    handler = Replies(*getattr(request, "param", ()))
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


def mailer_for(port: int) -> tuple[mailer.ConfirmationMailer, MemoryStore]:
    settings = Settings(
        smtp_host="127.0.0.1", smtp_port=port, confirmation_secret=SECRET, smtp_from="l@x.example"
    )
    sender = mailer.ConfirmationMailer(settings)
    store = MemoryStore()
    sender._store = store  # type: ignore[assignment]
    return sender, store


def counted(outcome: str) -> float:
    return metrics.CONFIRMATION_MAILS.labels(outcome=outcome)._value.get()


async def test_mail_sent_once_with_valid_token(smtp):
    handler, port = smtp
    sender, store = mailer_for(port)
    value = json_bytes(pending_event())

    assert await sender.handle(value, POSITION) == "sent"
    assert await sender.handle(value, POSITION) == "duplicate"

    assert len(handler.accepted) == 1
    text = message_from_bytes(handler.accepted[0], policy=policy.default)
    body = text.get_body(("plain",)).get_content()
    token = body.split("token=", 1)[1].split()[0]
    claim = read_confirmation_token(SECRET, token, 60)
    assert (claim.tenant_id, claim.contact_id, claim.list_id, claim.nonce) == (
        "acme",
        "c-1",
        "news",
        "cmd-1",
    )
    assert store.db[mailer.MAILS_COLLECTION].documents["ev-1"]["nonce"] == "cmd-1"


@pytest.mark.parametrize("smtp", [("451 4.3.0 try again later",)], indirect=True)
async def test_temporary_smtp_failure_retried(smtp):
    handler, port = smtp
    sender, _ = mailer_for(port)
    retries = metrics.SMTP_RETRIES._value.get()

    assert await sender.handle(json_bytes(pending_event()), POSITION) == "sent"

    assert len(handler.accepted) == 1
    assert metrics.SMTP_RETRIES._value.get() == retries + 1


@pytest.mark.parametrize("smtp", [("554 5.7.1 rejected",)], indirect=True)
async def test_permanent_smtp_failure_not_retried(smtp):
    handler, port = smtp
    sender, store = mailer_for(port)
    failed = counted("failed")

    assert await sender.handle(json_bytes(pending_event()), POSITION) == "failed"

    assert handler.accepted == []
    assert counted("failed") == failed + 1
    assert store.db[mailer.MAILS_COLLECTION].documents == {}


async def test_unreachable_smtp_server_gives_up(monkeypatch):
    monkeypatch.setattr(mailer, "SMTP_ATTEMPTS", 2)
    sender, store = mailer_for(free_port())
    retries = metrics.SMTP_RETRIES._value.get()

    assert await sender.handle(json_bytes(pending_event()), POSITION) == "failed"

    assert metrics.SMTP_RETRIES._value.get() == retries + 1
    assert store.db[mailer.MAILS_COLLECTION].documents == {}


async def test_skipped_and_invalid_events_send_nothing():
    sender, _ = mailer_for(free_port())
    replaced = contact(lists={"news": {"status": "pending", "confirmation": {"nonce": "cmd-2"}}})
    sender._store.contacts = Collection(replaced)  # type: ignore[union-attr]

    assert await sender.handle(json_bytes(pending_event()), POSITION) == "skipped"
    assert await sender.handle(b"{not json", POSITION) == "invalid"
    assert await sender.handle(None, POSITION) == "invalid"
    assert await sender.handle(json_bytes(pending_event(data={})), POSITION) == "invalid"
    assert await sender.handle(json_bytes({"type": "membership.added"}), POSITION) == "ignored"
