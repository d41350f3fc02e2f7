"""A REST API that gives the http-poll source hostile answers, and the recipes of those answers.

The API answers each request with the next answer of its script, whatever the request asks
for: the source asks again after a refused page or a failed poll and follows the next links
it trusts, so its requests walk through the script in order. A second API stands for another
origin: next links and redirects point at it, and it must never be asked anything.

A case is one page (the input that ends published or refused) after a few failed answers
(statuses, redirects, Retry-After headers, answers that never end), each of which the source
must survive and ask again after.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from dataclasses import dataclass, field
from email.utils import format_datetime
from typing import Any

import orjson
from aiohttp import web
from hypothesis import strategies as st

from esb.limits import SHORT_STRING_BYTES
from esb.testing import free_port
from tests.support.hostile import Expect
from tests.support.hostile_cases import BodyRecipe, body_recipes, wide_chars

TOKEN = "hostile-s3cr3t"
EVENT_TYPE = "poll.hostile"
EMPTY_PAGE = b'{"data":[]}'
CHUNK = 65_536
#: Families of body recipes that are not an object holding the case: served as the whole page.
WHOLE_PAGE_BODIES = ("bytes", "empty", "scalar")


@dataclass(frozen=True)
class Answer:
    """One HTTP answer: sent whole, streamed in chunks ``chunk_pause`` s apart (no length),
    or ``stall``: its first bytes, then nothing until the client gives up."""

    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    chunk_pause: float | None = None
    stall: bool = False
    retry_after: str | None = None

    def describe(self) -> str:
        extra = " streamed" if self.chunk_pause is not None else " never ends" if self.stall else ""
        return f"{self.status}{extra} {dict(self.headers)!r} {self.body[:60]!r}"


@dataclass
class Request:
    """A request the API saw: when, what for, with which credentials, and the answer given
    (its place in the script; None past its end)."""

    at: float
    path: str
    authorization: str | None
    answer: int | None


@dataclass
class ScriptedApi:
    """An aiohttp server answering every GET on any path with the next scripted answer."""

    script: list[Answer] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    port: int = field(default_factory=free_port)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def served(self) -> int:
        return sum(1 for r in self.requests if r.answer is not None)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, handler_cancellation=True)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def close(self) -> None:
        await self.runner.cleanup()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        number = self.served()
        index = number if number < len(self.script) else None
        authorization = request.headers.get("Authorization")
        self.requests.append(Request(time.monotonic(), request.path_qs, authorization, index))
        if index is None:
            return web.Response(body=EMPTY_PAGE, content_type="application/json")
        answer = self.script[index]
        if answer.chunk_pause is None and not answer.stall:
            return web.Response(status=answer.status, headers=answer.headers, body=answer.body)
        response = web.StreamResponse(status=answer.status, headers=answer.headers)
        await response.prepare(request)
        try:
            if answer.stall:
                await response.write(answer.body[:10])
                await asyncio.sleep(60)  # cancelled when the client gives up
            for start in range(0, len(answer.body), CHUNK):
                await response.write(answer.body[start : start + CHUNK])
                await asyncio.sleep(answer.chunk_pause or 0)
            await response.write_eof()
        except ConnectionError:
            pass  # the source stopped reading: over max_page_bytes
        return response


# --- what one case serves ---------------------------------------------------------------------


@dataclass(frozen=True)
class Origins:
    """Where the case's links and redirects can point, and how the source pages."""

    api: str
    other: str
    link_header: bool
    max_page_bytes: int


@dataclass
class PollCase:
    """A case's answers (failures first, the page last), what the page must come to, and
    whether the source reads its next link (``walks``) and must refuse it (``link``)."""

    label: str
    expect: Expect
    answers: list[Answer]
    walks: Expect
    link: Expect
    link_text: str | None = None


@dataclass(frozen=True)
class Page:
    """A built page: what it is, what it must come to, whether the source reads its next link,
    and either its one item (the page is built around it) or the whole page as it is sent."""

    label: str
    expect: Expect
    walks: Expect
    item: bytes | None = None
    whole: bytes | None = None
    answer: Answer = Answer()


@dataclass(frozen=True)
class PageRecipe:
    family: str
    body: BodyRecipe | None = None
    payload: Any = None
    size: int = 0
    variant: int = 0

    def build(self, tag: str, seq: int, at: Origins) -> Page:
        case = {"case": tag, "seq": seq}
        match self.family:
            case "body":
                assert self.body is not None
                built = self.body.build(tag)
                if self.body.family in WHOLE_PAGE_BODIES:
                    return Page(f"a page of {built.label}", "reject", "reject", whole=built.raw)
                if self.body.family == "valid":
                    item = orjson.dumps({**self.body.payload, "id": tag, **case})
                else:
                    item = b'{"id":' + orjson.dumps(tag) + b',"seq":%d,' % seq + built.raw[1:]
                alone = self.body.family == "huge" and self.body.variant < 2  # the item refused
                walks = "apply" if built.expect == "apply" or alone else built.expect
                return Page(f"an item of {built.label}", built.expect, walks, item)
            case "id":
                return self._id(case)
            case "fields":
                key, value = self.payload
                item = orjson.dumps({key: value, "id": tag, **case})
                return Page("an item with control and wide characters", "apply", "apply", item)
            case "not_list":
                whole = orjson.dumps({"data": self.payload, **case})
                return Page("items that are not a list", "reject", "reject", whole=whole)
            case "duplicate":
                whole = b'{"data":[' + orjson.dumps({"id": tag, **case}) + b'],"data":[]}'
                return Page("a page with a duplicate key", "reject", "reject", whole=whole)
            case "too_big":
                pad = b"x" * (at.max_page_bytes + self.size)
                item = orjson.dumps({"id": tag, **case}) + b',{"pad":"' + pad + b'"}'
                how, pause = [("with its length", None), ("chunked", 0.0), ("slowly", 0.003)][
                    self.variant % 3
                ]
                label = f"a page over max_page_bytes, sent {how}"
                return Page(label, "reject", "reject", item, answer=Answer(chunk_pause=pause))
            case "status":
                item = orjson.dumps({"id": tag, **case})
                if self.payload == 204:
                    return Page("a 204 (no body)", "reject", "reject", item, answer=Answer(204))
                label = f"a page answered {self.payload}"
                return Page(label, "apply", "apply", item, answer=Answer(self.payload))
        raise AssertionError(self.family)

    def _id(self, case: dict[str, Any]) -> Page:
        doc = dict(case) if self.payload is _ABSENT else {"id": self.payload, **case}
        item = orjson.dumps(doc)
        value = orjson.loads(item).get("id")
        key = None
        if isinstance(value, str) and value:
            key = value
        elif isinstance(value, int | float) and not isinstance(value, bool):
            key = str(value)
        kind = "absent" if self.payload is _ABSENT else type(value).__name__
        if key is None:
            return Page(f"an id that is {kind} or empty", "reject", "apply", item)
        over = len(f"{EVENT_TYPE}:{key}:{case['seq']}".encode()) > SHORT_STRING_BYTES
        label = f"an id of type {kind} making an event id {'over' if over else 'within'} 255 bytes"
        return Page(label, "reject" if over else "apply", "apply", item)


_ABSENT = object()
_TEXT = st.characters(codec="utf-8")
#: Text a header value can carry (aiohttp refuses to send control characters).
_HEADER_TEXT = st.characters(codec="utf-8", min_codepoint=0x20, exclude_characters="\x7f")


def page_recipes() -> st.SearchStrategy[PageRecipe]:
    ids = (
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**63 - 1)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(_TEXT, max_size=30)
        | st.tuples(wide_chars, st.integers(1, 300)).map(lambda t: t[0] * t[1])
        | st.just("")
        | st.just([1])
        | st.just({"id": 1})
        | st.just(_ABSENT)
    )
    return st.one_of(
        st.builds(PageRecipe, st.just("body"), body=body_recipes()),
        st.builds(PageRecipe, st.just("body"), body=body_recipes()),
        st.builds(PageRecipe, st.just("body"), body=body_recipes()),
        st.builds(PageRecipe, st.just("id"), payload=ids),
        st.builds(PageRecipe, st.just("id"), payload=ids),
        st.builds(
            PageRecipe,
            st.just("fields"),
            payload=st.tuples(st.text(_TEXT, max_size=10), st.text(_TEXT, max_size=200)),
        ),
        st.builds(
            PageRecipe, st.just("not_list"), payload=st.sampled_from([None, "x", 1, {"id": 1}, {}])
        ),
        st.builds(PageRecipe, st.just("duplicate")),
        st.integers(0, 49).flatmap(
            lambda n: (
                st.builds(
                    PageRecipe,
                    st.just("too_big"),
                    size=st.integers(1, 1_000_000),
                    variant=st.integers(0, 2),
                )
                if n == 0
                else st.builds(PageRecipe, st.just("body"), body=body_recipes())
            )
        ),
        st.builds(
            PageRecipe, st.just("status"), payload=st.sampled_from([201, 202, 203, 204, 206, 299])
        ),
    )


@dataclass(frozen=True)
class LinkRecipe:
    """The page's next link: ``kind`` and what the source must do with it (``apply``: follow
    it or see none; ``reject``: refuse it; ``any``)."""

    kind: str
    payload: Any = None

    def build(self, seq: int, at: Origins) -> tuple[Expect, Any]:
        """(what the source must do, the next-page value: a URL or any JSON value)."""
        api_host = at.api.removeprefix("http://")
        other_host = at.other.removeprefix("http://")
        match self.kind:
            case "none":
                return "apply", None
            case "same":
                return "apply", f"{at.api}/contacts?after={seq}"
            case "relative":
                return "apply", [
                    f"/contacts?after={seq}",
                    f"?after={seq}",
                    "../../../contacts/../contacts",
                ][self.payload % 3]
            case "other_origin":
                return "reject", [
                    f"{at.other}/steal?after={seq}",
                    f"//{other_host}/steal",
                    f"http://localhost:{api_host.rpartition(':')[2]}/contacts",
                    f"https://{api_host}/contacts",
                    "file:///etc/passwd",
                    "javascript:alert(1)",
                ][self.payload % 6]
            case "credentials":
                return "reject", [
                    f"http://user:pw@{api_host}/contacts?after={seq}",
                    f"http://user@{api_host}/contacts",
                    f"http://:pw@{api_host}/contacts",
                    f"http://user:pw@{other_host}/steal",
                ][self.payload % 4]
            case "not_url":
                return "reject", ["http://[::1/contacts", f"http://{api_host}:99999/x"][
                    self.payload % 2
                ]
            case "text":
                return "any", self.payload
            case "not_text":
                return "apply", self.payload
        raise AssertionError(self.kind)


def link_recipes(link_header: bool) -> st.SearchStrategy[LinkRecipe]:
    text = st.text(_HEADER_TEXT if link_header else _TEXT, max_size=60)
    families = [
        st.builds(LinkRecipe, st.just("none")),
        st.builds(LinkRecipe, st.just("none")),
        st.builds(LinkRecipe, st.just("none")),
        st.builds(LinkRecipe, st.just("same")),
        st.builds(LinkRecipe, st.just("relative"), payload=st.integers(0, 2)),
        st.builds(LinkRecipe, st.just("other_origin"), payload=st.integers(0, 5)),
        st.builds(LinkRecipe, st.just("credentials"), payload=st.integers(0, 3)),
        st.builds(LinkRecipe, st.just("not_url"), payload=st.integers(0, 1)),
        st.builds(LinkRecipe, st.just("text"), payload=text),
    ]
    if not link_header:
        values = st.sampled_from([1, True, {}, [], "", {"href": "/x"}])
        families.append(st.builds(LinkRecipe, st.just("not_text"), payload=values))
    return st.one_of(families)


#: Link headers a careless or hostile API sends, and what the source must do with each.
MALFORMED_LINK_HEADERS: list[tuple[Expect, str]] = [
    ("apply", "<"),
    ("any", "<>"),
    ("apply", "garbage"),
    ("apply", '; rel="next"'),
    ("reject", '<http://[::1>; rel="next"'),
    ("reject", '<http://127.0.0.1:99999/>; rel="next"'),
    ("any", "<,>;rel=next,<a>;rel"),
    ("any", "<" + "a" * 5000 + '>; rel="next"'),
]


def link_answer(expect: Expect, value: Any, malformed: int | None) -> tuple[Expect, str | None]:
    """The ``Link`` header for a link (``malformed``: one of MALFORMED_LINK_HEADERS instead)."""
    if malformed is not None:
        return MALFORMED_LINK_HEADERS[malformed % len(MALFORMED_LINK_HEADERS)]
    if value is None:
        return expect, None
    return expect, f'<{value}>; rel="next"'


@dataclass(frozen=True)
class FailureRecipe:
    """An answer that is no page: a status, a redirect, an interim status or no end."""

    kind: str
    status: int = 503
    payload: Any = None

    def build(self, at: Origins) -> tuple[str, Answer]:
        match self.kind:
            case "status":
                headers = () if self.payload is None else (("Retry-After", self.payload),)
                label = f"{self.status}" + (
                    f" Retry-After {self.payload!r}" if self.payload is not None else ""
                )
                return label, Answer(self.status, headers, b"{}", retry_after=self.payload)
            case "redirect":
                where = at.other if self.payload else at.api
                headers = (("Location", f"{where}/moved"),)
                return f"{self.status} to {'another origin' if self.payload else 'itself'}", Answer(
                    self.status, headers
                )
            case "interim":
                return f"{self.status} as the answer", Answer(self.status)
            case "stall":
                return "an answer that never ends", Answer(body=b'{"data":[', stall=True)
        raise AssertionError(self.kind)


retry_after_values = (
    st.integers(-(10**6), 10**12).map(str)
    | st.floats(allow_nan=True, allow_infinity=True).map(str)
    | st.datetimes().map(lambda d: format_datetime(d.replace(tzinfo=dt.UTC)))
    | st.text(_HEADER_TEXT, max_size=30)
    | st.sampled_from(["1e999", "-1", "0", "  5  ", "1_000", "Fri, 31 Dec 9999 23:59:59 GMT"])
)


def failure_recipes() -> st.SearchStrategy[FailureRecipe]:
    statuses = st.sampled_from(
        [400, 401, 403, 404, 408, 410, 418, 429, 451, 499, 500, 502, 503, 504, 599]
    )
    return st.one_of(
        st.builds(FailureRecipe, st.just("status"), statuses),
        st.builds(FailureRecipe, st.just("status"), statuses, retry_after_values),
        st.builds(
            FailureRecipe, st.just("status"), st.sampled_from([429, 503]), retry_after_values
        ),
        st.builds(
            FailureRecipe,
            st.just("redirect"),
            st.sampled_from([300, 301, 302, 303, 304, 307, 308]),
            st.booleans(),
        ),
        # An answer that never ends, or a 100 or 103 (the client waits for a final answer), each
        # costs the source its whole timeout: under one failure in ten.
        st.sampled_from(
            [FailureRecipe("stall"), FailureRecipe("interim", 100), FailureRecipe("interim", 103)]
            + [FailureRecipe("interim", 101)] * 5
        ),
    )


@dataclass(frozen=True)
class PollRecipe:
    page: PageRecipe
    link: LinkRecipe
    failures: list[FailureRecipe]
    malformed_link: int | None

    def build(self, tag: str, seq: int, at: Origins) -> PollCase:
        page = self.page.build(tag, seq, at)
        link, value = self.link.build(seq, at)
        label, headers, body = page.label, page.answer.headers, page.whole
        if at.link_header:
            link, value = link_answer(link, value, self.malformed_link)
            if value is not None:
                headers = (*headers, ("Link", value))
        if body is None:
            assert page.item is not None
            body = b'{"data":[' + page.item + b"]"
            if not at.link_header and value is not None:
                body += b',"links":{"next":' + orjson.dumps(value) + b"}"
            body += b"}"
        if value is not None:
            label += (
                f", next link: {self.link.kind if self.malformed_link is None else 'malformed'}"
            )
        failures = [failure.build(at) for failure in self.failures]
        answer = Answer(page.answer.status, headers, body, page.answer.chunk_pause)
        return PollCase(
            " then ".join([*(f for f, _ in failures), label]),
            page.expect,
            [*(a for _, a in failures), answer],
            page.walks,
            link if value is not None else "apply",
            value if isinstance(value, str) else None,
        )


def poll_recipes(link_header: bool) -> st.SearchStrategy[PollRecipe]:
    failures = st.integers(0, 19).flatmap(
        lambda n: st.lists(failure_recipes(), min_size=1, max_size=2) if n == 0 else st.just([])
    )
    count = len(MALFORMED_LINK_HEADERS)
    malformed = (
        st.integers(0, 5 * count - 1).map(lambda n: n if n < count else None)
        if link_header
        else st.just(None)
    )
    return st.builds(PollRecipe, page_recipes(), link_recipes(link_header), failures, malformed)


def link_refusals(cases: list[PollCase]) -> tuple[int, int]:
    """How many next links the source must refuse, and may: only a page it reads has one."""
    must = sum(1 for c in cases if c.walks == "apply" and c.link == "reject")
    may = sum(1 for c in cases if c.walks != "reject" and c.link != "apply")
    return must, may
