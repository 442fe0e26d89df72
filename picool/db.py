"""Async SQLAlchemy: the engine, the declarative base and a session per request."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase

from picool.settings import Settings

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """The declarative base of every Picool table."""

    metadata = MetaData(naming_convention=NAMING)


def async_url(url: str) -> str:
    """Normalise a PostgreSQL URL to the asyncpg dialect."""
    if url.startswith("postgresql+asyncpg://"):
        return url
    for prefix in ("postgresql://", "postgres://", "postgresql+psycopg://", "postgresql+psycopg2://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    return url


def plain_url(url: str) -> str:
    """The same URL for plain asyncpg / libpq (no SQLAlchemy dialect suffix)."""
    for prefix in ("postgresql+asyncpg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url


def with_database(url: str, database: str) -> str:
    """The same server URL pointing at another database."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


def query_params(url: str) -> dict[str, str]:
    """The query parameters of a URL."""
    return dict(parse_qsl(urlsplit(url).query))


def replace_query(url: str, **params: str) -> str:
    """The URL with some query parameters set."""
    parts = urlsplit(url)
    q = dict(parse_qsl(parts.query))
    q.update(params)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(q), parts.fragment))


def create_engine(settings: Settings, **kw: Any) -> AsyncEngine:
    """The process's engine (pooled asyncpg connections)."""
    return create_async_engine(
        async_url(settings.database_url),
        pool_size=kw.pop("pool_size", settings.db_pool_size),
        max_overflow=kw.pop("max_overflow", settings.db_max_overflow),
        pool_pre_ping=True,
        pool_recycle=1800,
        **kw,
    )


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded objects usable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)


async def session_scope(maker: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session for one unit of work: committed when the caller finishes, rolled back on any error.

    Used as a litestar generator dependency, so the commit happens before the response is sent.
    """
    async with maker() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        else:
            await session.commit()
