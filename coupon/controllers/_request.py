"""What the handlers read off a request: ids in paths and bodies, page cursors, the ``Idempotency-Key``
header, the caller's address and the moment of the request."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from litestar.params import HeaderParameter

from picool.errors import InvalidRequest, NotFound
from picool.ids import parse_id_str


def path_id(text: str, what: str) -> int:
    """A path id as an int; 404 (nothing can have this id) otherwise."""
    value = parse_id_str(text)
    if value is None:
        raise NotFound(f"There is no {what} with this id.")
    return value


def field_id(text: str, problem: str) -> int:
    """An id given in a body or query field as an int; 400 ``invalid_request`` saying ``problem`` otherwise."""
    value = parse_id_str(text)
    if value is None:
        raise InvalidRequest(problem)
    return value


def page_cursor(cursor: str | None) -> int | None:
    """The id a ``?cursor=`` names (None for the first page); 400 when it is not a ``next_cursor``."""
    if cursor is None:
        return None
    return field_id(cursor, "cursor: must be a next_cursor from a previous page")


IDEMPOTENCY_KEY_MAX = 128
IDEMPOTENCY_KEY_CHARS = r"\x21-\x7e"  # printable ASCII, no space
IdempotencyKey = Annotated[
    str | None,
    HeaderParameter(
        name="Idempotency-Key",
        min_length=1,
        max_length=IDEMPOTENCY_KEY_MAX,
        pattern=f"^[{IDEMPOTENCY_KEY_CHARS}]+$",
        required=False,
    ),
]


def utcnow() -> datetime:
    """The moment of the request, an aware UTC datetime."""
    return datetime.now(UTC)
