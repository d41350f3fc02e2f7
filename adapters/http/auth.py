"""Request credentials from the ``auth`` settings of the http adapters (bearer, basic, API key,
OAuth2 client credentials with its token cached until shortly before it expires).

Used by the http sink and the http-poll source, so both read the same settings the same way.
"""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime

import aiohttp

from adapters.http.settings import (
    ApiKeyAuth,
    Auth,
    BasicAuth,
    BearerAuth,
    OAuth2ClientCredentials,
)
from esb import TransientError, http_error, redact_url


def retry_after_seconds(value: str | None) -> float | None:
    """An HTTP ``Retry-After`` in seconds: a number of seconds or an HTTP date; None if neither."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class Credentials:
    """The headers that authenticate a request, per the ``auth`` setting."""

    def __init__(self, auth: Auth | None) -> None:
        self.auth = auth
        self._token: tuple[str, float] | None = None

    @property
    def refreshable(self) -> bool:
        """Whether a 401 is worth one retry with a fresh token (OAuth2)."""
        return isinstance(self.auth, OAuth2ClientCredentials)

    async def headers(self, session: aiohttp.ClientSession, *, refresh: bool) -> dict[str, str]:
        auth = self.auth
        if auth is None:
            return {}
        if isinstance(auth, BearerAuth):
            return {"Authorization": f"Bearer {auth.token.get_secret_value()}"}
        if isinstance(auth, BasicAuth):
            basic = aiohttp.encode_basic_auth(auth.username, auth.password.get_secret_value())
            return {"Authorization": basic}
        if isinstance(auth, ApiKeyAuth):
            return {auth.header: auth.key.get_secret_value()}
        return {"Authorization": f"Bearer {await self._oauth2_token(session, auth, refresh)}"}

    async def _oauth2_token(
        self, session: aiohttp.ClientSession, auth: OAuth2ClientCredentials, refresh: bool
    ) -> str:
        if self._token is not None and not refresh and time.monotonic() < self._token[1]:
            return self._token[0]
        form = {"grant_type": "client_credentials"}
        if auth.scope:
            form["scope"] = auth.scope
        credentials = aiohttp.encode_basic_auth(
            auth.client_id, auth.client_secret.get_secret_value()
        )
        where = f"token endpoint {redact_url(auth.token_url)}"
        try:
            async with session.post(
                auth.token_url,
                data=form,
                headers={"Authorization": credentials},
                allow_redirects=False,
            ) as response:
                if response.status >= 300:
                    raise http_error(
                        response.status,
                        where,
                        retry_after_seconds(response.headers.get("Retry-After")),
                    )
                doc = await response.json()
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise TransientError(f"{where}: {exc}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("access_token"), str):
            raise TransientError(f"{where}: the answer holds no access_token")
        lifetime = doc.get("expires_in", 300)
        lifetime = float(lifetime) if isinstance(lifetime, int | float) else 300.0
        self._token = (doc["access_token"], time.monotonic() + max(lifetime - 30, 1))
        return self._token[0]
