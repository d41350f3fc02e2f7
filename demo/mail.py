"""The mail server the shop's notifications go through: an SMTP server that keeps them."""

from __future__ import annotations

import re
from email import message_from_bytes
from email.message import Message
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

ADDRESS = re.compile(r"^[^@\s]+@[^@\s]+$")


class Mailbox:
    """Accepts mail for well-formed addresses (550 otherwise) and keeps every message."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if not ADDRESS.match(address):
            return "550 5.1.3 bad recipient address syntax"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.messages.append(message_from_bytes(envelope.original_content or b""))
        return "250 Message accepted for delivery"


class MailServer:
    """An SMTP server on 127.0.0.1:``port``, in a thread of its own (aiosmtpd)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.mailbox = Mailbox()
        self._controller = Controller(self.mailbox, hostname="127.0.0.1", port=port)
        self._running = False

    def start(self) -> None:
        self._controller.start()
        self._running = True

    def stop(self) -> None:
        if self._running:
            self._controller.stop()
            self._running = False
