"""Flash sessions (the daily flash sale): creation by operators, the day listing, cached reads.

A session's stock is moved out of its template's Redis pool when it is created
(``coupon/lua/flash_reserve.lua``), so template claims and every session of a template together never
hand out more than ``total_count``. Redis is written first and PostgreSQL second: a process that dies
in between leaves stock reserved for a session nobody can see (an undersell), never a session without
stock behind it (an oversell). Unsold stock of a session that has ended stays with it.

Reads: the sessions of a UTC day come from a two-level cache invalidated when a session is created;
``remaining`` is read from Redis and kept per process for at most :data:`REMAINING_TTL_S`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import msgspec
from cachetools import TTLCache
from sqlalchemy import select

from coupon import domain as coupon_domain
from coupon import models
from coupon.service import _pools
from coupon.service._records import Actor
from coupon.service._templates import get_template
from picool.cache import TwoLevelCache
from picool.errors import Forbidden, InvalidRequest, NotFound, ServiceUnavailable
from picool.kernel import Kernel

SESSION_CACHE = "coupon.flash_session"
DAY_CACHE = "coupon.flash_day"
REMAINING_SERVICE = "coupon.flash_remaining"
REMAINING_TTL_S = 1.0
MAX_WINDOW = timedelta(days=31)
MAX_STOCK = 10_000_000


class FlashSessionRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A flash session as stored (sessions never change once created)."""

    id: int
    template_id: int
    starts_at: datetime
    ends_at: datetime
    stock: int
    created_at: datetime


class FlashDay(msgspec.Struct, frozen=True, kw_only=True):
    """The sessions overlapping one UTC day, by start time."""

    items: list[FlashSessionRecord]


@dataclass(frozen=True, slots=True)
class NewFlashSession:
    """What an operator asks for (times aware)."""

    template_id: int
    starts_at: datetime
    ends_at: datetime
    stock: int


def session_cache(kernel: Kernel) -> TwoLevelCache[FlashSessionRecord]:
    """Sessions by id (an unknown id is cached as missing for a few seconds)."""
    cache: TwoLevelCache[FlashSessionRecord] = kernel.cache(
        SESSION_CACHE, FlashSessionRecord, local_ttl_s=60.0, redis_ttl_s=3600.0, negative_ttl_s=5.0
    )
    return cache


def day_cache(kernel: Kernel) -> TwoLevelCache[FlashDay]:
    """Session lists by UTC day, invalidated in every process when a session of that day is created."""
    cache: TwoLevelCache[FlashDay] = kernel.cache(
        DAY_CACHE, FlashDay, local_ttl_s=30.0, redis_ttl_s=600.0, negative_ttl_s=5.0
    )
    return cache


def _remaining_cache(kernel: Kernel) -> TTLCache[int, int]:
    cache = kernel.services.get(REMAINING_SERVICE)
    if not isinstance(cache, TTLCache):
        cache = TTLCache(maxsize=10_000, ttl=REMAINING_TTL_S)
        kernel.services[REMAINING_SERVICE] = cache
    return cache


def _record(row: models.FlashSession) -> FlashSessionRecord:
    return FlashSessionRecord(
        id=row.id,
        template_id=row.template_id,
        starts_at=row.starts_at,
        ends_at=row.ends_at,
        stock=row.stock,
        created_at=row.created_at,
    )


def days_of(starts_at: datetime, ends_at: datetime) -> list[date]:
    """The UTC days a window ``[starts_at, ends_at)`` overlaps."""
    first = starts_at.astimezone(UTC).date()
    last = (ends_at.astimezone(UTC) - timedelta(microseconds=1)).date()
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def _bad(key: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"{key}: {message}", errors=[{"key": key, "message": message, "source": "body"}])


async def create_session(kernel: Kernel, actor: Actor, new: NewFlashSession, now: datetime) -> FlashSessionRecord:
    """Create a flash session of a platform ``claim`` template and move its stock into it (operators only).

    ``InvalidRequest`` names the failing field: an unknown or unsuitable template, a window that is
    empty, over, longer than 31 days or outliving a fixed validity, a stock above what the template has
    left.
    """
    if actor.role != "operator":
        raise Forbidden("Only operators create flash sessions.")
    if new.starts_at.tzinfo is None or new.ends_at.tzinfo is None:
        raise _bad("starts_at", "must carry a time zone")
    if new.ends_at <= new.starts_at:
        raise _bad("ends_at", "must be after starts_at")
    if new.ends_at <= now:
        raise _bad("ends_at", "must be in the future")
    if new.ends_at - new.starts_at > MAX_WINDOW:
        raise _bad("ends_at", "a session lasts at most 31 days")
    if not 1 <= new.stock <= MAX_STOCK:
        raise _bad("stock", f"must be between 1 and {MAX_STOCK}")
    template = await get_template(kernel, new.template_id)
    if template is None:
        raise _bad("template_id", "there is no coupon template with this id")
    if template.merchant_id is not None:
        raise _bad("template_id", "must be a platform template (one without a merchant)")
    if not _pools.is_claimable(template):
        raise _bad("template_id", "must be an active template with distribution claim")
    validity = template.parsed_validity()
    if isinstance(validity, coupon_domain.FixedValidity) and new.ends_at > validity.ends_at:
        raise _bad("ends_at", "must not be after the template's validity ends (coupons would be born expired)")

    await _pools.ensure_pool(kernel, template)
    store = _pools.claim_store(kernel)
    session_id = kernel.ids.next_id(0)
    status, left = await store.reserve_session(
        template.id, session_id, new.stock, _pools.ms(new.starts_at), _pools.ms(new.ends_at)
    )
    if status == "short":
        raise _bad("stock", f"the template has {left} coupons left to give")
    if status != "ok":
        raise ServiceUnavailable("The template's coupon pool is not available; try again in a moment.")
    row = models.FlashSession(
        id=session_id,
        template_id=template.id,
        starts_at=new.starts_at.astimezone(UTC),
        ends_at=new.ends_at.astimezone(UTC),
        stock=new.stock,
        created_by=actor.user_id,
    )
    try:
        async with kernel.sessionmaker() as session, session.begin():
            session.add(row)
            await session.flush()
            await session.refresh(row, ["created_at"])
    except BaseException:
        await store.release_session(template.id, session_id)
        raise
    record = _record(row)
    await session_cache(kernel).invalidate(str(record.id))
    await day_cache(kernel).invalidate_many([d.isoformat() for d in days_of(record.starts_at, record.ends_at)])
    return record


async def load_session(kernel: Kernel, session_id: int) -> FlashSessionRecord | None:
    """A session straight from PostgreSQL."""
    async with kernel.sessionmaker() as session:
        row = await session.get(models.FlashSession, session_id)
        return None if row is None else _record(row)


async def require_session(kernel: Kernel, session_id: int) -> FlashSessionRecord:
    """A session through the cache, or ``NotFound``."""

    async def loader() -> FlashSessionRecord | None:
        return await load_session(kernel, session_id)

    record = await session_cache(kernel).get(str(session_id), loader)
    if record is None:
        raise NotFound("There is no flash session with this id.")
    return record


def parse_day(text: str | None, now: datetime) -> date:
    """``YYYY-MM-DD`` as a date (today in UTC when absent); ``InvalidRequest`` otherwise."""
    if text is None:
        return now.astimezone(UTC).date()
    if len(text) != 10 or text[4] != "-" or text[7] != "-" or not text.replace("-", "").isdigit():
        raise InvalidRequest("date: must be YYYY-MM-DD", errors=[{"key": "date", "message": "must be YYYY-MM-DD"}])
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise InvalidRequest("date: not a calendar date", errors=[{"key": "date", "message": "not a date"}]) from None
    if not 1970 <= day.year <= 9998:  # (the day's end must still be a datetime)
        raise InvalidRequest("date: must be between 1970 and 9998", errors=[{"key": "date", "message": "out of range"}])
    return day


async def _load_day(kernel: Kernel, day: date) -> FlashDay:
    start = datetime.combine(day, time(0), tzinfo=UTC)
    end = start + timedelta(days=1)
    async with kernel.sessionmaker() as session:
        rows = (
            await session.execute(
                select(models.FlashSession)
                .where(models.FlashSession.starts_at < end, models.FlashSession.ends_at > start)
                .order_by(models.FlashSession.starts_at, models.FlashSession.id)
            )
        ).scalars()
        return FlashDay(items=[_record(r) for r in rows])


async def remaining(kernel: Kernel, sessions: list[FlashSessionRecord]) -> dict[int, int]:
    """Stock left per session, at most :data:`REMAINING_TTL_S` old (one Redis round trip for the misses).

    A session whose pool Redis lost is rebuilt (see ``_pools.ensure_pool``) before it is read again.
    """
    cache = _remaining_cache(kernel)
    out: dict[int, int] = {}
    missing: list[FlashSessionRecord] = []
    for s in sessions:
        value = cache.get(s.id)
        if value is None:
            missing.append(s)
        else:
            out[s.id] = value
    if not missing:
        return out
    store = _pools.claim_store(kernel)
    values = await store.session_remaining([(s.template_id, s.id) for s in missing])
    lost = [s for s, v in zip(missing, values, strict=True) if v is None]
    if lost:
        for template_id in {s.template_id for s in lost}:
            template = await get_template(kernel, template_id)
            if template is not None:
                await _pools.ensure_pool(kernel, template)
        again = await store.session_remaining([(s.template_id, s.id) for s in lost])
        fixed = dict(zip([s.id for s in lost], again, strict=True))
        values = [fixed.get(s.id) if v is None else v for s, v in zip(missing, values, strict=True)]
    for s, v in zip(missing, values, strict=True):
        left = 0 if v is None else v
        cache[s.id] = left
        out[s.id] = left
    return out


async def sessions_of_day(kernel: Kernel, day: date) -> list[tuple[FlashSessionRecord, int]]:
    """The sessions overlapping a UTC day (including those not open yet), each with its stock left."""

    async def loader() -> FlashDay:
        return await _load_day(kernel, day)

    page = await day_cache(kernel).get(day.isoformat(), loader)
    items = page.items if page is not None else []
    left = await remaining(kernel, items)
    return [(s, left.get(s.id, 0)) for s in items]
