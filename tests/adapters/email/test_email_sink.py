"""The e-mail sink against a real SMTP server (aiosmtpd) started by the test."""

from __future__ import annotations

from collections.abc import Iterator
from email import message_from_bytes
from email.message import Message
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from adapters.email import EmailSink
from adapters.email.settings import EmailSinkSettings
from esb import CloudEvent, PermanentError, TransientError
from esb.testing import free_port


class Mailbox:
    """Keeps what it receives; refuses recipients at refused.example."""

    def __init__(self) -> None:
        self.received: list[tuple[list[str], Message]] = []

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if address.endswith("@refused.example"):
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        self.received.append((list(envelope.rcpt_tos), message_from_bytes(content)))
        return "250 Message accepted"


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield box, port
    controller.stop()


BODY = (
    "Hello {{ data.vars.name }},\n\n"
    "{% for l in data.lines %}- {{ l.sku }} x{{ l.qty }}\n{% endfor %}"
)


def settings(port: int, **extra: Any) -> EmailSinkSettings:
    return EmailSinkSettings.model_validate(
        {
            "host": "127.0.0.1",
            "port": port,
            "security": "none",
            "sender": "orders@shop.example",
            "to": "{{ data.to }}",
            "subject": "Your order {{ data.vars.order }} has shipped",
            "body": BODY,
            **extra,
        }
    )


SHIPPED = CloudEvent.new(
    "shop.order.shipped",
    "urn:shop",
    {
        "to": "ada@example.com",
        "vars": {"name": "Ada", "order": "SO-1"},
        "lines": [{"sku": "BOOK-1", "qty": 2}, {"sku": "PEN-9", "qty": 1}],
    },
    id="evt-7",
)


async def test_a_templated_mail_is_delivered(mailbox: tuple[Mailbox, int]) -> None:
    box, port = mailbox
    await EmailSink(settings(port)).write(SHIPPED)
    [(recipients, mail)] = box.received
    assert recipients == ["ada@example.com"]
    assert mail["Subject"] == "Your order SO-1 has shipped"
    assert mail["Message-ID"] == "<evt-7@esb>"
    assert mail.get_payload().replace("\r\n", "\n") == "Hello Ada,\n\n- BOOK-1 x2\n- PEN-9 x1\n"


async def test_a_missing_template_value_is_permanent(mailbox: tuple[Mailbox, int]) -> None:
    _, port = mailbox
    event = CloudEvent.new("shop.order.shipped", "urn:shop", {"to": "a@example.com"})
    with pytest.raises(PermanentError, match="template: 'dict object' has no attribute 'vars'"):
        await EmailSink(settings(port)).write(event)


async def test_a_refused_recipient_is_permanent_and_a_dead_server_transient(
    mailbox: tuple[Mailbox, int],
) -> None:
    _, port = mailbox
    refused = SHIPPED.model_copy(update={"data": {**SHIPPED.data, "to": "x@refused.example"}})
    with pytest.raises(PermanentError, match="recipient refused"):
        await EmailSink(settings(port)).write(refused)
    with pytest.raises(TransientError, match=r"127\.0\.0\.1"):
        await EmailSink(settings(free_port(), timeout=2)).write(SHIPPED)
