"""Send events as e-mails over SMTP (aiosmtplib), from sandboxed Jinja2 templates.

A template that names something the event lacks is a permanent error (the
message is parked with the name); the server's 5xx answers are permanent,
its 4xx answers and connection failures are retried. Each mail's Message-ID
comes from the event id, and the runtime's idempotency store keeps a
redelivered event from being mailed twice.

Template values come from events, so what they make is checked before any
mail leaves: the recipient template must give exactly one address (up to
``max_recipients`` when set higher), parsed by the standard library's RFC 5322
header parser, and is the only envelope recipient; a control character (CR,
LF, NUL, ...) or any other line boundary (U+0085, U+2028, U+2029, ...) in a
recipient, the subject or the Message-ID is refused, as is anything else the
email library cannot build a message from. All are permanent errors: the
event is parked with the reason, never retried.
"""

from __future__ import annotations

import re
from email import errors
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import default as default_policy
from email.utils import formatdate
from typing import ClassVar

from adapters.email.settings import EmailSinkSettings
from esb import (
    AdapterSettings,
    CloudEvent,
    ConfigError,
    PermanentError,
    Sink,
    TransientError,
    event_variables,
)

try:
    import aiosmtplib
    from jinja2 import StrictUndefined, TemplateError
    from jinja2.sandbox import SandboxedEnvironment
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(f"the email adapter needs: pip install 'esb[email]' ({exc})") from None

#: C0 controls but tab, DEL and C1 controls: in a header they end it (CR, LF) or corrupt it.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
#: The one defect a sound address may carry: a period in a display name ("Dr. Hans Müller").
_PERIOD_IN_PHRASE = "period in 'phrase'"


def header_text(name: str, value: str) -> str:
    """``value`` if it can be a header's text; PermanentError for a control character or a
    line boundary (``str.splitlines`` knows U+2028 and others the email library refuses)."""
    if _CONTROL.search(value) or len(value.splitlines()) > 1:
        raise PermanentError(
            f"email sink: {name} holds a control character (CR, LF, NUL, ...): {value[:80]!r}"
        )
    return value


def recipients(text: str, most: int) -> tuple[Address, ...]:
    """The addresses ``text`` lists, at most ``most``; PermanentError for anything else.

    The standard library's RFC 5322 parser reads the list; any defect it
    finds (junk between addresses, a missing domain, a non-ASCII local part)
    refuses it, so a value cannot slip a second address past the count. The
    exception is a period in a display name ("J. R. Smith <j@x.com>"), common
    and harmless, which the parser flags as obsolete syntax.
    """
    text = header_text("to", text.strip())
    try:
        header = default_policy.header_factory("To", text)
    except (ValueError, IndexError, errors.HeaderParseError):
        raise PermanentError(f"email sink: {text[:200]!r} is not an e-mail address") from None
    addresses = tuple(header.addresses)
    defects = [d for d in header.defects if not _is_period_in_phrase(d)]
    if defects or not addresses:
        raise PermanentError(f"email sink: {text[:200]!r} is not an e-mail address")
    for address in addresses:
        if not address.username or not address.domain:
            raise PermanentError(
                f"email sink: {address.addr_spec[:200]!r} is not an e-mail address"
            )
    if len(addresses) > most:
        raise PermanentError(
            f"email sink: {text[:200]!r} holds {len(addresses)} addresses; the recipient must "
            f"be {'one address' if most == 1 else f'at most {most}'} (max_recipients)"
        )
    return addresses


def _is_period_in_phrase(defect: errors.MessageDefect) -> bool:
    return type(defect) is errors.ObsoleteHeaderDefect and str(defect) == _PERIOD_IN_PHRASE


class EmailSink(Sink[EmailSinkSettings]):
    """Customer notifications and the like."""

    settings_model: ClassVar[type[AdapterSettings]] = EmailSinkSettings

    def __init__(self, settings: EmailSinkSettings) -> None:
        super().__init__(settings)
        env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=settings.html)
        try:
            self._to = env.from_string(settings.to)
            self._subject = env.from_string(settings.subject)
            self._body = env.from_string(settings.body)
        except TemplateError as exc:
            raise ConfigError(f"email sink: template: {exc}") from None

    def message(self, event: CloudEvent) -> EmailMessage:
        """The mail for ``event``; PermanentError when a template cannot be filled or what it
        gives cannot be a mail (the email library's ValueError would be retried otherwise)."""
        variables = event_variables(event)
        try:
            to, subject, body = (t.render(variables) for t in (self._to, self._subject, self._body))
        except TemplateError as exc:
            raise PermanentError(f"email sink: template: {exc}") from None
        mail = EmailMessage()
        try:
            mail["From"] = self.settings.sender
            mail["To"] = recipients(to, self.settings.max_recipients)
            mail["Subject"] = header_text("subject", subject.strip())
            mail["Date"] = formatdate(localtime=False)
            mail["Message-ID"] = f"<{header_text('id', event.id)}@esb>"
            mail.set_content(body, subtype="html" if self.settings.html else "plain")
            mail.as_bytes()  # what cannot be encoded (a lone surrogate) fails here, not in send
        except ValueError as exc:
            raise PermanentError(f"email sink: cannot build the mail: {exc}") from None
        return mail

    async def write(self, event: CloudEvent) -> None:
        mail = self.message(event)
        s = self.settings
        to = [address.addr_spec for address in mail["To"].addresses]
        try:
            await aiosmtplib.send(
                mail,
                recipients=to,  # exactly the checked addresses, never other headers
                hostname=s.host,
                port=s.port,
                username=s.username,
                password=s.password.get_secret_value() if s.password else None,
                start_tls=s.security == "starttls",
                use_tls=s.security == "tls",
                timeout=s.timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            raise PermanentError(f"email sink: recipient refused: {exc}") from None
        except aiosmtplib.SMTPResponseException as exc:
            error = PermanentError if exc.code >= 500 else TransientError
            raise error(f"email sink: SMTP {exc.code}: {exc.message}") from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise TransientError(f"email sink: {s.host}:{s.port}: {exc}") from None
