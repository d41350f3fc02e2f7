"""Connection strings as esb may show them (sql adapter, idempotency store): never with a password.

A PostgreSQL DSN carries its password in any of three places: the URI's
``user:pass@``, a ``?password=`` query parameter, or a ``password=`` pair of
the key=value form (``sslpassword`` likewise). Messages name the server by
the few parameters that hold no secret, rebuilt from what libpq itself
parsed, and any text libpq returns is scrubbed of the secrets it parsed; a
DSN libpq cannot parse is never quoted at all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from esb.errors import ConfigError, TransientError

if TYPE_CHECKING:
    import psycopg

#: Parameters shown in messages; every other one (password, sslpassword, passfile, ...) is not.
SHOWN = ("host", "hostaddr", "port", "dbname", "user")
SECRETS = ("password", "sslpassword")
UNPARSABLE = "a dsn libpq cannot parse (not shown: it may hold a password)"


def dsn_backend(dsn: str, adapter: str) -> str:
    """``sqlite`` or ``postgresql`` for ``dsn`` (a URI, or libpq's key=value form)."""
    try:
        scheme = urlsplit(dsn).scheme
    except ValueError:  # a malformed URI (an unclosed [ in the host)
        scheme = dsn.split("://", 1)[0] if "://" in dsn else ""
    if scheme == "sqlite":
        return "sqlite"
    if scheme in ("postgresql", "postgres") or (not scheme and "=" in dsn):
        return "postgresql"
    raise ConfigError(
        f"{adapter}: dsn scheme {scheme!r} is not postgresql or sqlite "
        "(or a key=value PostgreSQL connection string)"
    )


def _parsed(dsn: str) -> dict[str, str] | None:
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        return {key: str(value) for key, value in conninfo_to_dict(dsn).items()}
    except ProgrammingError:
        return None


def describe_dsn(dsn: str) -> str:
    """The server ``dsn`` names, as key=value pairs without any secret."""
    from psycopg.conninfo import make_conninfo

    params = _parsed(dsn)
    if params is None:
        return UNPARSABLE
    return make_conninfo(**{key: params[key] for key in SHOWN if key in params}) or "(defaults)"


def scrub_dsn(text: str, dsn: str) -> str:
    """``text`` (an error libpq wrote about ``dsn``) with the DSN's secrets masked.

    When libpq cannot parse the DSN its secrets are unknown and its error may
    quote the DSN, so the whole text is withheld.
    """
    params = _parsed(dsn)
    if params is None:
        return UNPARSABLE
    for key in SECRETS:
        secret = params.get(key)
        if secret:
            for form in {secret, quote(secret, safe=""), quote(secret)}:
                text = text.replace(form, "***")
    return text


async def connect_postgres(dsn: str, what: str, **options: Any) -> psycopg.AsyncConnection[Any]:
    """A psycopg connection to ``dsn`` (``options`` as psycopg takes them), for ``what``.

    :class:`TransientError` when the server cannot take it now (down, starting up, a host
    name that does not resolve yet, a login it refuses): the runtime retries an ``open()``
    that raises it. :class:`ConfigError` for what no retry fixes: a DSN libpq refuses, the
    postgres extra missing. Messages name the server, never a secret.
    """
    try:
        import psycopg
    except ImportError:
        raise ConfigError(f"{what} on PostgreSQL needs: pip install 'esb[postgres]'") from None
    try:
        return await psycopg.AsyncConnection.connect(dsn, **options)
    except psycopg.OperationalError as exc:
        raise TransientError(
            f"{what}: cannot reach {describe_dsn(dsn)}: {scrub_dsn(str(exc), dsn)}"
        ) from None
    except psycopg.Error as exc:
        raise ConfigError(f"{what}: dsn {describe_dsn(dsn)}: {scrub_dsn(str(exc), dsn)}") from None
