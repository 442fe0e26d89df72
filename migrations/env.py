"""Alembic environment: runs migrations on the async engine given by picool.migrate (or the env)."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from picool.db import async_url
from picool.settings import Settings

config = context.config


def _url() -> str:
    url = config.attributes.get("database_url")
    if not url:
        url = Settings.from_env().database_url
    if not url:
        raise RuntimeError("No database URL: set PICOOL_DATABASE_URL or run through `picool migrate`")
    return async_url(str(url))


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=None, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()


async def _main() -> None:
    engine = create_async_engine(_url(), poolclass=pool.NullPool)
    async with engine.connect() as conn:
        # one migrator at a time, even when several processes start together
        await conn.exec_driver_sql("SELECT pg_advisory_lock(74201)")
        await conn.commit()
        await conn.run_sync(_run)
        await conn.exec_driver_sql("SELECT pg_advisory_unlock(74201)")
        await conn.commit()
    await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `picool migrate`")
asyncio.run(_main())
