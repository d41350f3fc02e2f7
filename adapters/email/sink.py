"""Send events as e-mails over SMTP (aiosmtplib), from sandboxed Jinja2 templates.

A template that names something the event lacks is a permanent error (the
message is parked with the name); the server's 5xx answers are permanent,
its 4xx answers and connection failures are retried. Each mail's Message-ID
comes from the event id, and the runtime's idempotency store keeps a
redelivered event from being mailed twice.
"""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import formatdate
from typing import ClassVar

from adapters.email.settings import EmailSinkSettings
from esb import AdapterSettings, CloudEvent, ConfigError, PermanentError, Sink, TransientError
from esb.routing.expressions import event_variables

try:
    import aiosmtplib
    from jinja2 import StrictUndefined, TemplateError
    from jinja2.sandbox import SandboxedEnvironment
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(f"the email adapter needs: pip install 'esb[email]' ({exc})") from None


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
        """The mail for ``event``; PermanentError when a template cannot be filled."""
        variables = event_variables(event)
        try:
            to, subject, body = (t.render(variables) for t in (self._to, self._subject, self._body))
        except TemplateError as exc:
            raise PermanentError(f"email sink: template: {exc}") from None
        if "@" not in to:
            raise PermanentError(f"email sink: {to!r} is not an e-mail address")
        mail = EmailMessage()
        mail["From"] = self.settings.sender
        mail["To"] = to.strip()
        mail["Subject"] = subject.strip()
        mail["Date"] = formatdate(localtime=False)
        mail["Message-ID"] = f"<{event.id}@esb>"
        mail.set_content(body, subtype="html" if self.settings.html else "plain")
        return mail

    async def write(self, event: CloudEvent) -> None:
        mail = self.message(event)
        s = self.settings
        try:
            await aiosmtplib.send(
                mail,
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
