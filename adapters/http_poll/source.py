"""Poll a REST endpoint for new or changed items: a cursor kept between runs, page by page.

One poll reads one page. A *walk* is the pages of one query: it starts at
``url`` with the cursor in the query (``since_param`` = the last item's
``cursor_field``, or ``token_param`` = the token the last answer gave) and
follows ``next_field``, the ``Link`` header or page numbers until the last
page. The position (the cursor, and within a walk the next page) is kept in
``cursor_file`` only after the page's events are confirmed, so a restart
resumes at the page it stopped on: nothing skipped, and a page in flight at a
crash is read again under the same event ids, which sinks de-duplicate.

An updated-since API usually answers ``>=``: the items at the cursor's value
come back. Their ids are kept with the cursor and skipped, so they are not
published again.

Answers are hostile input. 429, 408 and 5xx, timeouts and refused
connections are retried with backoff (a ``Retry-After`` honoured); another
4xx (a revoked token), a redirect or a 1xx as the final answer is logged as
a one-line error and retried the same way. An answer over
``max_page_bytes``, not JSON (or beyond the envelope's limits) or without a
list of items where one should be is refused (logged, counted in
``esb_source_refused_total``) and asked for again at the next poll; an item
without an id, or one that cannot be an event, is refused alone and the walk
moves past it. A next-page link to another origin, one carrying a user or
password, or one that is not a URL (a malformed ``Link`` header) is never
followed: credentials only go where ``url`` says. The link is refused
(``invalid_link``), the page's items are published and the walk ends there;
an updated-since cursor resumes after them at the next walk. So does a link
back to the same page, and any walk of ``max_walk_pages`` pages
(``walk_too_long``): an API going round in a circle is not asked for ever.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass, field, replace
from typing import Any, ClassVar

import aiohttp
import orjson
from yarl import URL

from adapters.edge import bus_max_body_bytes, check_publishable
from adapters.http.auth import Credentials, retry_after_seconds
from adapters.http_poll.settings import HttpPollSettings
from esb import (
    AdapterSettings,
    Batch,
    CloudEvent,
    CursorFile,
    DataPath,
    Emitter,
    EnvelopeError,
    PermanentError,
    PollingSource,
    TransientError,
    http_error,
    loads_json,
    redact_url,
)

log = logging.getLogger(__name__)

#: Ids kept of the items at the cursor's value (an API answering ``>=`` sends them again).
MAX_SEEN = 1000
_MAX_ERROR_TEXT = 200


@dataclass(frozen=True)
class Position:
    """Where the source is: the cursor, and within a walk the next page and the highest
    cursor seen so far (which becomes the cursor when the walk ends)."""

    since: Any = None
    seen: list[str] = field(default_factory=list)
    token: str | None = None
    next: str | None = None
    page: int | None = None
    high: Any = None
    high_ids: list[str] = field(default_factory=list)
    walked: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: Any) -> Position:
        if not isinstance(doc, dict):
            return cls()
        known = {key: value for key, value in doc.items() if key in cls.__dataclass_fields__}
        return cls(**known)


def _path(text: str | None) -> DataPath | None:
    return DataPath.parse(text) if text is not None else None


def walk(doc: Any, path: DataPath | None) -> Any:
    """The value at ``path`` in ``doc`` (the whole document for None); None when missing."""
    return doc if path is None else path.value_in(doc)


def _key(value: Any) -> str | None:
    """An id or cursor value as text: a non-empty string or a number; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        return value or None
    if isinstance(value, int | float):
        return str(value)
    return None


def _refused_key(item: Any) -> str:
    """What a refused item is remembered by among the items at the cursor: a digest of its
    content (it may have no id), so an API answering ``>=`` does not have it refused again."""
    digest = hashlib.sha256(orjson.dumps(item, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return f"~{digest[:24]}"


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = URL(url)
    return parts.scheme, parts.host, parts.port


class Paths:
    """The settings' dotted paths, parsed once (the settings checked them)."""

    def __init__(self, settings: HttpPollSettings) -> None:
        self.items = _path(settings.items_field)
        self.next = _path(settings.next_field)
        self.token = _path(settings.token_field)
        self.id = DataPath.parse(settings.id_field)
        self.cursor = _path(settings.cursor_field)


@dataclass
class Link:
    """The next-page link an answer gave: its text, or why it is not one (a malformed header)."""

    url: str | None = None
    malformed: str | None = None


@dataclass
class Page:
    """What one answer said."""

    items: list[Any]
    next: Link
    token: str | None


class HttpPollSource(PollingSource[HttpPollSettings, Position]):
    """A REST collection as a stream of events."""

    settings_model: ClassVar[type[AdapterSettings]] = HttpPollSettings

    def __init__(self, settings: HttpPollSettings, emitter: Emitter) -> None:
        cursor = None
        if settings.cursor_file is not None:  # always: the settings default it
            cursor = CursorFile(settings.cursor_file, Position.to_json, Position.from_json)
        super().__init__(settings, emitter, cursor)
        self.max_body_bytes = bus_max_body_bytes(emitter)
        self.credentials = Credentials(settings.auth)
        self.paths = Paths(settings)
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.settings.timeout)
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    # -- one request ------------------------------------------------------------------------

    def request_url(self, at: Position) -> URL:
        """The URL of the page ``at`` points to: the next link of a walk, or a fresh query."""
        s = self.settings
        if at.next is not None:
            return URL(at.next, encoded=True)
        query = dict(s.params)
        since = at.since if at.since is not None else s.initial_since
        if s.since_param is not None and since is not None:
            query[s.since_param] = str(since)
        if s.token_param is not None and at.token is not None:
            query[s.token_param] = at.token
        if s.page_param is not None:
            query[s.page_param] = str(at.page if at.page is not None else s.first_page)
        return URL(s.url).update_query(query)

    def _where(self, url: URL) -> str:
        return f"http-poll: GET {redact_url(str(url.with_query(None)))}"

    async def get(self, url: URL, *, refresh: bool = False) -> tuple[bytes, Link] | None:
        """The body of a 2xx answer and its next-page link; None when the answer was refused
        (too large). Raises TransientError or PermanentError for the others."""
        if self._session is None:
            raise RuntimeError("HttpPollSource.open() has not been called")
        where = self._where(url)
        headers = {**self.settings.headers}
        headers.update(await self.credentials.headers(self._session, refresh=refresh))
        try:
            async with self._session.get(url, headers=headers, allow_redirects=False) as answer:
                self.count("response", f"{min(max(answer.status // 100, 1), 5)}xx")
                if answer.status == 401 and self.credentials.refreshable and not refresh:
                    return await self.get(url, refresh=True)
                if answer.status < 200:
                    raise TransientError(
                        f"HTTP {answer.status}: {where}: an interim status as the answer",
                        status=answer.status,
                    )
                if 300 <= answer.status < 400:
                    raise PermanentError(
                        f"HTTP {answer.status}: {where}: redirect not followed (credentials "
                        "go only where url says): set url to the new location",
                        status=answer.status,
                    )
                if answer.status >= 400:
                    text = await answer.content.read(_MAX_ERROR_TEXT)
                    detail = " ".join(text.decode("utf-8", "replace").split())
                    retry_after = retry_after_seconds(answer.headers.get("Retry-After"))
                    raise http_error(answer.status, f"{where}: {detail!r}", retry_after)
                body = await self._read(answer, where)
                if body is None:
                    return None
                return body, self._link_header(answer)
        except TimeoutError:
            self.count("response", "timeout")
            raise TransientError(f"{where}: no answer within {self.settings.timeout} s") from None
        except aiohttp.ClientError as exc:
            self.count("response", "error")
            raise TransientError(f"{where}: {exc}") from None

    def _link_header(self, answer: aiohttp.ClientResponse) -> Link:
        """The ``Link`` header's rel="next" URL (with ``link_header``)."""
        if not self.settings.link_header:
            return Link()
        try:
            found = answer.links.get("next")
        except ValueError as exc:  # aiohttp builds each URL: an invalid one raises
            return Link(malformed=f"the Link header holds no valid URL ({exc})")
        return Link(str(found["url"]) if found is not None else None)

    async def _read(self, answer: aiohttp.ClientResponse, where: str) -> bytes | None:
        limit = self.settings.max_page_bytes
        if answer.content_length is not None and answer.content_length > limit:
            self.refuse_input("too_large", f"{where}: {answer.content_length} bytes > {limit}")
            return None
        body = bytearray()
        async for chunk in answer.content.iter_chunked(65_536):
            body += chunk
            if len(body) > limit:
                self.refuse_input("too_large", f"{where}: over {limit} bytes")
                return None
        return bytes(body)

    # -- one page ---------------------------------------------------------------------------

    def parse(self, body: bytes, link: Link, url: URL) -> Page | None:
        """The items, next link and token of an answer; None (refused) when it has no items."""
        s = self.settings
        where = self._where(url)
        try:
            doc = loads_json(body, "page")
        except EnvelopeError as exc:
            self.refuse_input(exc.code, f"{where}: {exc}")
            return None
        items = walk(doc, self.paths.items)
        if not isinstance(items, list):
            shape = "missing" if items is None else type(items).__name__
            self.refuse_input(
                "invalid_page", f"{where}: {s.items_field or 'the answer'} is not a list ({shape})"
            )
            return None
        if s.next_field is not None:
            found = walk(doc, self.paths.next)
            link = Link(found if isinstance(found, str) and found else None)
        token = _key(walk(doc, self.paths.token)) if s.token_field is not None else None
        return Page(items, link, token)

    def follow(self, link: Link, url: URL) -> str | None:
        """``link`` resolved against the page it came from; None at the end of the walk, and
        when the link is refused (not a URL, credentials in it, another origin)."""
        if link.url is None and link.malformed is None:
            return None
        problem = link.malformed
        if link.url is not None:
            try:
                target = url.join(URL(link.url))
            except ValueError:
                problem = f"is not a URL: {link.url[:_MAX_ERROR_TEXT]!r}"
            else:
                shown = redact_url(str(target.with_query(None)))[:_MAX_ERROR_TEXT]
                if target.user is not None or target.password is not None:
                    problem = f"carries a user or password ({shown})"
                elif _origin(str(target)) != _origin(self.settings.url):
                    problem = f"is at another origin ({shown})"
                elif target == url:
                    problem = f"points back to the page it is on ({shown})"
                else:
                    return str(target)
        self.refuse_input(
            "invalid_link",
            f"{self._where(url)}: the next-page link {problem}: not followed (credentials go "
            "only where url says); the walk ends at this page",
        )
        return None

    def _cursor_of(self, item: Any) -> Any:
        """The item's cursor value, or None when it has none usable."""
        value = walk(item, self.paths.cursor)
        return value if self.paths.cursor is not None and _key(value) is not None else None

    def to_event(self, item: Any) -> tuple[CloudEvent, str, Any]:
        """The item's event, its id and cursor value; EnvelopeError when it cannot be one."""
        s = self.settings
        if not isinstance(item, dict):
            raise EnvelopeError("item", f"is not an object ({type(item).__name__})", "invalid_item")
        item_id = _key(self.paths.id.value_in(item))
        if item_id is None:
            raise EnvelopeError(s.id_field, "is absent or not text or a number", "invalid_item")
        event_id = f"{s.event_type}:{item_id}"
        cursor: Any = None
        if s.cursor_field is not None:
            cursor = walk(item, self.paths.cursor)
            if _key(cursor) is None:
                raise EnvelopeError(
                    s.cursor_field, "is absent or not text or a number", "invalid_item"
                )
            event_id += f":{cursor}"
        event = CloudEvent.new(s.event_type, s.event_source, item, id=event_id, subject=item_id)
        check_publishable(event, self.max_body_bytes)
        return event, item_id, cursor

    async def fetch(self, cursor: Position | None) -> Batch[Position]:
        at = cursor or Position()
        url = self.request_url(at)
        got = await self.get(url)
        page = self.parse(*got, url) if got is not None else None
        if page is None:
            self.count("poll", "refused")
            return Batch([])
        self.count("poll", "items" if page.items else "empty")
        self.count("item", "read", len(page.items))
        events, high, high_ids = [], at.high, list(at.high_ids)
        since_mode = self.settings.since_param is not None
        for number, item in enumerate(page.items):
            event: CloudEvent | None = None
            try:
                event, key, value = self.to_event(item)
            except EnvelopeError as exc:
                key, value = _refused_key(item), self._cursor_of(item)
                if not (since_mode and value == at.since and key in at.seen):
                    self.refuse_input(exc.code, f"{self._where(url)}: item {number}: {exc}")
                if value is None:
                    continue  # no place in the cursor's order: refused again if it comes back
            if since_mode:
                if value == at.since and key in at.seen:
                    continue  # read before: the API answers >= the cursor
                if value == high:
                    high_ids = [*high_ids, key][-MAX_SEEN:]
                else:
                    high, high_ids = value, [key]
            if event is not None:
                events.append(event)
        after, more = self._after(at, page, url, high, high_ids)
        # Ask again at once only when the cursor moved: items of one cursor value beyond
        # MAX_SEEN come back every poll (as duplicates, which sinks skip), never in a loop;
        # and never after a walk of max_walk_pages (cut short, or as long as allowed).
        moved = since_mode and bool(events) and after.since != at.since
        more = more or (moved and at.walked + 1 < self.settings.max_walk_pages)
        return Batch(events, after, more=more, read=len(page.items))

    def _after(
        self, at: Position, page: Page, url: URL, high: Any, high_ids: list[str]
    ) -> tuple[Position, bool]:
        """The position after ``page`` (the walk's next page, or the end of the walk), and
        whether the API has more now."""
        s = self.settings
        link = self.follow(page.next, url)
        walked = at.walked + 1
        cut = walked >= s.max_walk_pages
        going_on = link is not None or (s.page_param is not None and bool(page.items))
        if going_on and not cut:
            number = at.page if at.page is not None else s.first_page
            page_after = number + 1 if link is None else at.page
            return replace(
                at, next=link, page=page_after, high=high, high_ids=high_ids, walked=walked
            ), True
        since, seen = at.since, at.seen
        if high is not None:
            if high == at.since and len(seen) + len(high_ids) > MAX_SEEN:
                log.warning(
                    "http-poll: over %d items share the cursor value %r; the oldest of them "
                    "will be sent again each poll (sinks skip them as duplicates)",
                    MAX_SEEN,
                    high,
                )
            seen = [*seen, *high_ids][-MAX_SEEN:] if high == at.since else high_ids
            since = high
        token = page.token or at.token
        more = s.token_param is not None and token != at.token and bool(page.items)
        if cut and (going_on or more):
            self._walk_too_long(url, walked)
            more = False
        return Position(since=since, seen=seen, token=token, walked=walked if more else 0), more

    def _walk_too_long(self, url: URL, walked: int) -> None:
        self.refuse_input(
            "walk_too_long",
            f"{self._where(url)}: {walked} pages asked for one after another "
            f"(max_walk_pages): the walk ends at this page, the next poll starts from the cursor",
        )
