"""Double opt-in from join through the confirmation e-mail to an active membership.

The worker runs as a subprocess and mails through the test session's own SMTP
server (aiosmtpd on 127.0.0.1), so every token here is read out of a real
e-mail, except the expired one, which is signed with the worker's secret.
"""

from __future__ import annotations

import re
import time
from email.message import EmailMessage
from typing import Any

import pytest

from contact_pipeline.domain.tokens import make_confirmation_token
from contact_pipeline.settings import Settings
from tests.factories import command, create, new_id
from tests.integration.test_lists import (
    applied,
    contact_doc,
    counted,
    members,
    membership,
    membership_events,
    new_list,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

TOKEN_IN_LINK = re.compile(r"[?&]token=([A-Za-z0-9_.\-]+)")


def worker_setting(pipeline: Any, name: str) -> Any:
    """Return a setting of the worker subprocess: from its env, else the default."""
    value = pipeline.env.get(f"CONTACT_PIPELINE_{name.upper()}")
    if value is not None:
        return value
    default = Settings.model_fields[name].default
    return default.get_secret_value() if hasattr(default, "get_secret_value") else default


def token_from(message: EmailMessage) -> str:
    """Take the token out of the confirmation link in the plain-text body."""
    body = message.get_body(("plain",))
    assert body is not None, "the confirmation e-mail has no text/plain part"
    found = TOKEN_IN_LINK.search(body.get_content())
    assert found is not None, f"no confirmation link in:\n{body.get_content()}"
    return found.group(1)


async def join(pipeline: Any, tenant: str, contact_id: str, list_id: str) -> dict[str, Any]:
    """Send membership.add as the contact and check that it waits for confirmation."""
    result = (await applied(pipeline, membership(tenant, "add", contact_id, list_id, "contact")))[0]
    assert result["code"] == "pending", result
    return result


async def confirm(
    pipeline: Any, tenant: str, contact_id: str, list_id: str, token: str
) -> dict[str, Any]:
    message = membership(tenant, "confirm", contact_id, list_id, "contact", token=token)
    return await pipeline.send_one(message)


def assert_token_rejected(result: dict[str, Any], code: str) -> None:
    assert result["outcome"] == "rejected", result
    assert result["code"] == code, result
    error = result["errors"][0]
    assert error["field"] == "payload.token"
    assert error["value"]
    assert error["reason"]


async def new_contact(pipeline: Any, tenant: str, first_name: str = "Anna") -> tuple[str, str]:
    contact_id = new_id()
    address = f"{contact_id}@example.com"
    await applied(
        pipeline,
        command("contact.create", create(contact_id, address, firstName=first_name), tenant=tenant),
    )
    return contact_id, address


async def opt_in_list(pipeline: Any, tenant: str, list_id: str = "news") -> str:
    await applied(pipeline, new_list(tenant, list_id, name="Weekly News", requireConfirmation=True))
    return list_id


async def test_double_opt_in_join_mail_confirm(pipeline, tenant, smtp_server):
    list_id = await opt_in_list(pipeline, tenant)
    contact_id, address = await new_contact(pipeline, tenant)

    await join(pipeline, tenant, contact_id, list_id)
    entry = (await contact_doc(pipeline, tenant, contact_id))["lists"][list_id]
    assert entry["status"] == "pending"
    assert await members(pipeline, tenant, list_id) == set()
    assert await counted(pipeline, tenant, list_id) == 0

    [mail] = await smtp_server.wait_for(address)
    assert mail["From"] == worker_setting(pipeline, "smtp_from")
    assert "Weekly News" in mail["Subject"]
    assert "Anna" in mail.get_body(("plain",)).get_content()
    html = mail.get_body(("html",))
    assert html is not None
    token = token_from(mail)
    assert token in html.get_content()

    confirmed = await confirm(pipeline, tenant, contact_id, list_id, token)
    assert confirmed["outcome"] == "applied", confirmed
    assert confirmed["code"] == "confirmed"
    entry = (await contact_doc(pipeline, tenant, contact_id))["lists"][list_id]
    assert entry["status"] == "active"
    assert "confirmation" not in entry
    assert await members(pipeline, tenant, list_id) == {contact_id}
    assert await counted(pipeline, tenant, list_id) == 1

    assert_token_rejected(await confirm(pipeline, tenant, contact_id, list_id, token), "token_used")
    assert await counted(pipeline, tenant, list_id) == 1
    events = await membership_events(pipeline, tenant, contact_id)
    assert [e["type"] for e in events] == ["membership.pending", "membership.confirmed"]
    sent = await pipeline.db.confirmation_mails.find_one({"_id": events[0]["id"]})
    assert sent is not None
    assert sent["contactId"] == contact_id


async def test_token_of_other_contact_rejected(pipeline, tenant, smtp_server):
    list_id = await opt_in_list(pipeline, tenant)
    anna, anna_address = await new_contact(pipeline, tenant)
    ben, _ = await new_contact(pipeline, tenant, "Ben")
    await join(pipeline, tenant, anna, list_id)
    await join(pipeline, tenant, ben, list_id)
    [mail] = await smtp_server.wait_for(anna_address)

    result = await confirm(pipeline, tenant, ben, list_id, token_from(mail))

    assert_token_rejected(result, "invalid_token")
    entry = (await contact_doc(pipeline, tenant, ben))["lists"][list_id]
    assert entry["status"] == "pending"


async def test_altered_token_rejected(pipeline, tenant, smtp_server):
    list_id = await opt_in_list(pipeline, tenant)
    contact_id, address = await new_contact(pipeline, tenant)
    await join(pipeline, tenant, contact_id, list_id)
    token = token_from((await smtp_server.wait_for(address))[0])
    altered = token[:-1] + ("A" if token[-1] != "A" else "B")

    result = await confirm(pipeline, tenant, contact_id, list_id, altered)

    assert_token_rejected(result, "invalid_token")
    confirmed = await confirm(pipeline, tenant, contact_id, list_id, token)
    assert confirmed["code"] == "confirmed", confirmed


async def test_expired_token_rejected(pipeline, tenant, smtp_server):
    list_id = await opt_in_list(pipeline, tenant)
    contact_id, address = await new_contact(pipeline, tenant)
    await join(pipeline, tenant, contact_id, list_id)
    await smtp_server.wait_for(address)
    nonce = (await contact_doc(pipeline, tenant, contact_id))["lists"][list_id]["confirmation"][
        "nonce"
    ]
    max_age = int(worker_setting(pipeline, "confirmation_max_age_seconds"))
    expired = make_confirmation_token(
        worker_setting(pipeline, "confirmation_secret"),
        tenant,
        contact_id,
        list_id,
        nonce,
        issued_at=time.time() - max_age - 3600,
    )

    result = await confirm(pipeline, tenant, contact_id, list_id, expired)

    assert_token_rejected(result, "token_expired")
    entry = (await contact_doc(pipeline, tenant, contact_id))["lists"][list_id]
    assert entry["status"] == "pending"


async def test_join_again_sends_new_link(pipeline, tenant, smtp_server):
    list_id = await opt_in_list(pipeline, tenant)
    contact_id, address = await new_contact(pipeline, tenant)
    first_join = membership(tenant, "add", contact_id, list_id, "contact")
    await applied(pipeline, first_join)
    first_token = token_from((await smtp_server.wait_for(address))[0])

    # The same command again republishes the same event id: the mailer must not
    # mail twice. The join after it is on the same partition, so its mail
    # arriving means the repeat was handled before.
    repeat = await pipeline.send_again(first_join)
    assert repeat["code"] == "pending", repeat
    await join(pipeline, tenant, contact_id, list_id)
    mails = await smtp_server.wait_for(address, count=2)
    assert len(mails) == 2
    second_token = token_from(mails[1])
    assert second_token != first_token

    assert_token_rejected(
        await confirm(pipeline, tenant, contact_id, list_id, first_token), "token_used"
    )
    confirmed = await confirm(pipeline, tenant, contact_id, list_id, second_token)
    assert confirmed["code"] == "confirmed", confirmed
    assert await counted(pipeline, tenant, list_id) == 1
    assert len(smtp_server.to(address)) == 2
