"""E-mail out: customer notifications over SMTP, from templates."""

from adapters.email.sink import EmailSink
from esb import Adapter

ADAPTER = Adapter(
    name="email",
    description="Events as e-mails over SMTP (STARTTLS, TLS or a local relay) from sandboxed "
    "Jinja2 templates; 5xx answers parked, 4xx and outages retried.",
    sink=EmailSink,
)

__all__ = ["ADAPTER", "EmailSink"]
