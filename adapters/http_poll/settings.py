"""Settings of the http-poll source."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from adapters.http.settings import Auth
from esb import DEFAULT_MAX_BODY_BYTES, FieldPath, PollingSettings, StorePath


class HttpPollSettings(PollingSettings):
    """Poll a REST endpoint for new or changed items, page by page, from a kept cursor."""

    url: str = Field(
        description="The endpoint to GET (http or https); credentials are only ever sent to "
        "its origin.",
        examples=["https://crm.example.com/api/contacts"],
    )
    params: dict[str, str] = Field(
        default_factory=dict,
        description="Fixed query parameters sent with the first page of each walk.",
        examples=[{"limit": "100", "order": "updated_at"}],
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Extra request headers.",
        examples=[{"Accept": "application/json"}],
    )
    auth: Auth | None = Field(
        default=None,
        description="bearer, basic, api_key or oauth2, as in the http sink.",
        examples=[{"kind": "bearer", "token": "s3cr3t"}],
    )
    items_field: FieldPath | None = Field(
        default=None,
        description="Dotted path to the list of items in the answer; none: the answer is the list.",
        examples=["data.contacts"],
    )
    id_field: FieldPath = Field(
        default="id",
        description="Dotted path to an item's unique id (text or an integer).",
        examples=["contact.id"],
    )
    since_param: str | None = Field(
        default=None,
        description="Updated-since mode: the query parameter that carries the cursor.",
        examples=["updated_since"],
    )
    cursor_field: FieldPath | None = Field(
        default=None,
        description="Dotted path to an item's change time or version; in updated-since mode "
        "the last item's value is the next cursor (items must come in its order). It also "
        "enters the event id, so a changed item is a new event.",
        examples=["updated_at"],
    )
    initial_since: str | None = Field(
        default=None,
        description="The cursor of the very first poll (updated-since mode); none: the "
        "parameter is left out and the API starts where it starts.",
        examples=["2026-01-01T00:00:00Z"],
    )
    token_param: str | None = Field(
        default=None,
        description="Cursor-token mode: the query parameter that carries the token.",
        examples=["cursor"],
    )
    token_field: FieldPath | None = Field(
        default=None,
        description="Cursor-token mode: dotted path to the next token in the answer.",
        examples=["meta.next_cursor"],
    )
    next_field: FieldPath | None = Field(
        default=None,
        description="Pagination: dotted path to the next page's URL in the answer (absolute or "
        "relative; null or absent on the last page).",
        examples=["links.next"],
    )
    link_header: bool = Field(
        default=False,
        description='Pagination: follow the Link header\'s rel="next" URL.',
        examples=[True],
    )
    page_param: str | None = Field(
        default=None,
        description="Pagination: the query parameter of page numbers; a page without items "
        "ends the walk.",
        examples=["page"],
    )
    first_page: int = Field(default=1, ge=0, description="The first page's number.", examples=[0])
    event_type: str = Field(description="Type of the events.", examples=["crm.contact.changed"])
    event_source: str = Field(
        default="urn:esb:http-poll",
        description="Source attribute.",
        examples=["urn:crm:contacts"],
    )
    cursor_file: StorePath | None = Field(
        default=None,
        description="Where the cursor is kept between runs; default <event_type>.cursor.json "
        "in service.data_dir.",
        examples=["/var/lib/esb/contacts.cursor.json"],
    )
    timeout: float = Field(
        default=30.0, gt=0, description="Seconds for one whole request.", examples=[10.0]
    )
    max_page_bytes: int = Field(
        default=4 * DEFAULT_MAX_BODY_BYTES,
        ge=1,
        description="Largest answer read; a larger one is refused (counted, logged) and the "
        "page asked for again at the next poll.",
        examples=[1_048_576],
    )
    max_walk_pages: int = Field(
        default=1000,
        ge=1,
        description="Most pages asked for at once, one after another (a walk of next links or "
        "page numbers, or cursor tokens that keep changing); then the walk ends (refused as "
        "walk_too_long) and the next poll starts again from the cursor: an API whose links "
        "go round in a circle, or that ignores the page number, is not asked for ever.",
        examples=[100],
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _one_cursor_and_one_pagination(self) -> HttpPollSettings:
        since = self.since_param is not None
        token = self.token_param is not None or self.token_field is not None
        if since == token:
            raise ValueError(
                "choose one cursor: since_param with cursor_field (updated-since), or "
                "token_param with token_field (a cursor token)"
            )
        if since and self.cursor_field is None:
            raise ValueError("since_param needs cursor_field (the item field the cursor is)")
        if token and (self.token_param is None or self.token_field is None):
            raise ValueError("a cursor token needs both token_param and token_field")
        styles = [self.next_field is not None, self.link_header, self.page_param is not None]
        if sum(styles) > 1:
            raise ValueError("choose at most one pagination: next_field, link_header or page_param")
        return self

    @model_validator(mode="after")
    def _cursor_file_by_event_type(self) -> HttpPollSettings:
        """Set here, not in the source, so the process settings place it in the data dir."""
        if self.cursor_file is None:
            self.cursor_file = Path(f"{self.event_type}.cursor.json")
        return self
