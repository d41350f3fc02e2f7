"""The e-mail sink against a real SMTP server (aiosmtpd) started by the test."""

from __future__ import annotations

from collections.abc import Iterator
from email import message_from_bytes
from email.header import decode_header, make_header
from email.message import Message
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from adapters.email import EmailSink
from adapters.email.settings import EmailSinkSettings
from esb import CloudEvent, PermanentError, TransientError
from esb.testing import MemoryBus, free_port


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
    assert (
        str(mail.get_payload()).replace("\r\n", "\n") == "Hello Ada,\n\n- BOOK-1 x2\n- PEN-9 x1\n"
    )


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


def shipped_to(to: str, **data: Any) -> CloudEvent:
    return SHIPPED.model_copy(update={"data": {**SHIPPED.data, "to": to, **data}})


async def test_a_value_cannot_add_recipients_or_headers_each_is_parked_unsent(
    mailbox: tuple[Mailbox, int],
) -> None:
    """data.to "a@x, attacker@evil" once mailed both; CR/LF in a header value was retried
    (a ValueError) instead of parked. Only the good event reaches the SMTP server."""
    box, port = mailbox
    bus = MemoryBus()
    bus.bind("mails")
    hostile = [
        shipped_to("ada@example.com, attacker@evil.example"),
        shipped_to("ada@example.com;attacker@evil.example"),
        shipped_to("team: ada@example.com, attacker@evil.example;"),
        shipped_to("ada@example.com\r\nBcc: attacker@evil.example"),
        shipped_to("ada@example.com <attacker@evil.example>"),
        shipped_to("attacker"),
        shipped_to("ada@example.com", vars={"name": "Ada", "order": "1\r\nBcc: a@evil.example"}),
        SHIPPED.model_copy(update={"id": "evt-8\r\nBcc: attacker@evil.example"}),
    ]
    for event in [*hostile, shipped_to("Ada Lovelace <ada@example.com>")]:
        await bus.emit(event)
    assert await bus.drain("mails", EmailSink(settings(port))) == 1
    [(recipients, mail)] = box.received
    assert recipients == ["ada@example.com"]
    assert mail["To"] == "Ada Lovelace <ada@example.com>"
    parked = bus.queues["mails"].parked
    assert [(p.reason, p.attempts) for p in parked] == [("permanent", 1)] * len(hostile)
    reasons = [str(p.error) for p in parked]
    assert reasons[0] == (
        "email sink: 'ada@example.com, attacker@evil.example' holds 2 addresses; "
        "the recipient must be one address (max_recipients)"
    )
    assert reasons[3].startswith("email sink: to holds a control character (CR, LF, NUL, ...)")
    assert reasons[6].startswith("email sink: subject holds a control character")
    assert reasons[7].startswith("email sink: id holds a control character")


async def test_a_list_of_recipients_needs_max_recipients(mailbox: tuple[Mailbox, int]) -> None:
    box, port = mailbox
    sink = EmailSink(settings(port, max_recipients=2))
    await sink.write(shipped_to("ada@example.com, Bob <bob@example.com>"))
    with pytest.raises(PermanentError, match="holds 3 addresses; the recipient must be at most 2"):
        await sink.write(shipped_to("a@example.com, b@example.com, c@example.com"))
    [(recipients, _)] = box.received
    assert recipients == ["ada@example.com", "bob@example.com"]


@pytest.mark.parametrize("boundary", ["\x85", "\u2028", "\u2029", "\x0b", "\x1c"])
async def test_a_unicode_line_boundary_in_a_header_value_is_parked_unsent(
    mailbox: tuple[Mailbox, int], boundary: str
) -> None:
    """data.order "1\\u2028Bcc: ..." made the email library raise a plain ValueError, retried five
    times and counted toward opening the circuit; now it is parked on the first attempt."""
    box, port = mailbox
    bus = MemoryBus()
    bus.bind("mails")
    hostile = [
        shipped_to("ada@example.com", vars={"name": "Ada", "order": f"1{boundary}Bcc: e@x.com"}),
        shipped_to(f"ada@example.com{boundary}Bcc: attacker@evil.example"),
        SHIPPED.model_copy(update={"id": f"evt-8{boundary}Bcc: attacker@evil.example"}),
    ]
    for event in hostile:
        await bus.emit(event)
    assert await bus.drain("mails", EmailSink(settings(port))) == 0
    assert box.received == []
    parked = bus.queues["mails"].parked
    assert [(p.reason, p.attempts) for p in parked] == [("permanent", 1)] * len(hostile)
    assert [str(p.error).split(" holds")[0] for p in parked] == [
        "email sink: subject",
        "email sink: to",
        "email sink: id",
    ]


async def test_a_value_the_email_library_refuses_is_parked_not_retried(
    mailbox: tuple[Mailbox, int],
) -> None:
    """Any ValueError from building the mail is permanent: a lone surrogate (in an event built
    in process; the bus refuses to carry one) made a UnicodeEncodeError in the SMTP client,
    retried as an unknown failure."""
    box, port = mailbox
    event = shipped_to("ada@example.com", vars={"name": "Ada", "order": "1\ud800"})
    with pytest.raises(PermanentError, match=r"^email sink: cannot build the mail: 'utf-8' codec"):
        await EmailSink(settings(port)).write(event)
    assert box.received == []


@pytest.mark.parametrize(
    ("to", "address", "header"),
    [
        ("Dr. Hans Müller <h@example.de>", "h@example.de", "Dr. Hans Müller <h@example.de>"),
        ("J. R. Smith <j@example.com>", "j@example.com", '"J. R. Smith" <j@example.com>'),
    ],
)
async def test_a_display_name_with_a_period_is_delivered(
    mailbox: tuple[Mailbox, int], to: str, address: str, header: str
) -> None:
    """The header parser flags a period in a display name as obsolete syntax; that was refused
    as "not an e-mail address"."""
    box, port = mailbox
    await EmailSink(settings(port)).write(shipped_to(to))
    [(recipients, mail)] = box.received
    assert recipients == [address]
    assert str(make_header(decode_header(mail["To"]))) == header


async def test_a_display_name_with_a_period_still_counts_every_address(
    mailbox: tuple[Mailbox, int],
) -> None:
    box, port = mailbox
    with pytest.raises(PermanentError, match="holds 2 addresses"):
        await EmailSink(settings(port)).write(
            shipped_to("Dr. Ada <ada@example.com>, attacker@evil.example")
        )
    assert box.received == []
