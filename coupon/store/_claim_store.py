"""The claim store: pools, claims, the pending ledger and the deny list, one method per script or command."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from redis.asyncio import Redis

from coupon.store._keys import DENY_KEY, POOLS_KEY, SCRIPT_PACKAGE, PoolKeys
from coupon.store._records import ClaimOutcome, ClaimRecord, ClaimResult, PoolSpec, SessionSpec
from picool.redis import ScriptRegistry, direct


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


_Queued = tuple[ClaimRecord, str, "asyncio.Future[ClaimResult]"]  # a claim waiting for its batch's script call


def _result(record: ClaimRecord, outcome_raw: Any, first: Any, second: Any) -> ClaimResult:
    outcome = ClaimOutcome(_s(outcome_raw))
    if outcome is ClaimOutcome.OK:
        return ClaimResult(outcome, record, int(first))
    if outcome is ClaimOutcome.REPLAY:
        first_id = int(first)
        return ClaimResult(outcome, ClaimRecord.decode(first_id, second) if second else None)
    return ClaimResult(outcome)


class ClaimStore:
    """Pools, claims, the pending ledger and the deny list, on one Redis (or one Cluster)."""

    MAX_BATCH = 64  # claims in one script call (a batch of 64 runs in well under a millisecond in Redis)

    def __init__(self, redis: Redis, scripts: ScriptRegistry) -> None:
        self.redis = redis
        self.scripts = scripts
        self._queued: dict[tuple[int, int | None], list[_Queued]] = {}
        self._flush_scheduled = False
        self._deciding: set[asyncio.Task[None]] = set()  # strong references: the loop keeps only weak ones
        self.script_calls = 0  # claim script calls so far, and the claims they carried
        self.claims_sent = 0
        if f"{SCRIPT_PACKAGE}.claim" not in scripts:
            scripts.register_package(SCRIPT_PACKAGE)

    # -- claims -----------------------------------------------------------------------------------------
    async def claim(
        self, template_id: int, session_id: int | None, record: ClaimRecord, idempotency_key: str | None = None
    ) -> ClaimResult:
        """Run the claim script for ``record`` on the template's own pool or on a flash session.

        Claims that reach this in the same turn of the event loop for the same pool go to Redis together,
        as one script call (at most ``MAX_BATCH``), sent at the start of the next turn: a flash sale's
        claims then share one round trip instead of paying one each. The script decides them one after
        the other, in the order they came, exactly as separate calls would have. A claim whose caller is
        cancelled meanwhile is still decided with its batch (like a call already sent); an error reaches
        every claim of the batch.
        """
        future: asyncio.Future[ClaimResult] = asyncio.get_running_loop().create_future()
        idem = f"{record.user_id}:{idempotency_key}" if idempotency_key else ""
        key = (template_id, session_id)
        batch = self._queued.get(key)
        if batch is None:
            batch = self._queued[key] = []
        batch.append((record, idem, future))
        if len(batch) >= self.MAX_BATCH:
            del self._queued[key]
            self._send(template_id, session_id, batch)
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._flush_scheduled = False
        queued, self._queued = self._queued, {}
        for (template_id, session_id), batch in queued.items():
            self._send(template_id, session_id, batch)

    def _send(self, template_id: int, session_id: int | None, batch: list[_Queued]) -> None:
        task = asyncio.get_running_loop().create_task(self._decide(template_id, session_id, batch))
        self._deciding.add(task)
        task.add_done_callback(self._deciding.discard)

    async def _decide(self, template_id: int, session_id: int | None, batch: list[_Queued]) -> None:
        k = PoolKeys(template_id)
        pool = k.meta if session_id is None else k.session(session_id)
        args: list[Any] = []
        for record, idem, _future in batch:
            args += [record.claimed_ms, record.user_id, record.coupon_id, record.encode(), idem]
        self.script_calls += 1
        self.claims_sent += len(batch)
        try:
            reply = await self.scripts.run(
                f"{SCRIPT_PACKAGE}.claim", [pool, k.meta, k.users, k.claims, k.pending, k.idem], args
            )
        except BaseException as exc:
            error = exc if isinstance(exc, Exception) else RuntimeError("claim batch cancelled")
            for _record, _idem, future in batch:
                if not future.done():
                    future.set_exception(error)
            if not isinstance(exc, Exception):
                raise
            return
        for n, (record, _idem, future) in enumerate(batch):
            if not future.done():
                future.set_result(_result(record, reply[3 * n], reply[3 * n + 1], reply[3 * n + 2]))

    # -- pools ------------------------------------------------------------------------------------------
    async def init_pool(self, template_id: int, spec: PoolSpec, sessions: Sequence[SessionSpec] = ()) -> bool:
        """Create the pool unless it exists (then nothing changes); True when this call created it."""
        k = PoolKeys(template_id)
        # Registered before the pool exists, so the reconciler can never miss a pool with pending claims.
        await self.redis.sadd(POOLS_KEY, str(template_id))
        args: list[Any] = [spec.limit, spec.start_ms, spec.end_ms, spec.stock, spec.total]
        for s in sessions:
            args += [s.start_ms, s.end_ms, s.stock, s.initial]
        created = await self.scripts.run(
            f"{SCRIPT_PACKAGE}.pool_init", [k.meta, *(k.session(s.session_id) for s in sessions)], args
        )
        return bool(created)

    async def load_users(self, template_id: int, counts: Mapping[int, int], chunk: int = 5000) -> bool:
        """Write per-user counts into a pool being rebuilt; False once the pool exists (too late)."""
        k = PoolKeys(template_id)
        items = list(counts.items())
        for i in range(0, len(items), chunk):
            flat: list[Any] = []
            for user, n in items[i : i + chunk]:
                flat += [user, n]
            if not await self.scripts.run(f"{SCRIPT_PACKAGE}.pool_users", [k.meta, k.users], flat):
                return False
        return True

    async def pool_exists(self, template_id: int) -> bool:
        """Whether the template's pool is in Redis."""
        return bool(await self.redis.exists(PoolKeys(template_id).meta))

    async def lock_rebuild(self, template_id: int, ttl_ms: int = 30_000) -> bool:
        """Take the short lock that lets one process rebuild a lost pool."""
        return bool(await self.redis.set(PoolKeys(template_id).rebuild_lock, b"1", nx=True, px=ttl_ms))

    async def unlock_rebuild(self, template_id: int) -> None:
        """Release :meth:`lock_rebuild`."""
        await self.redis.delete(PoolKeys(template_id).rebuild_lock)

    async def pool_stock(self, template_id: int) -> int | None:
        """Stock left for the template's own claims (None without a pool)."""
        raw = await self.redis.hget(PoolKeys(template_id).meta, "stock")
        return None if raw is None else int(raw)

    async def user_count(self, template_id: int, user_id: int) -> int:
        """Coupons of the template ``user_id`` has taken, as Redis counts them."""
        raw = await self.redis.hget(PoolKeys(template_id).users, str(user_id))
        return 0 if raw is None else int(raw)

    # -- flash sessions ---------------------------------------------------------------------------------
    async def reserve_session(
        self, template_id: int, session_id: int, stock: int, start_ms: int, end_ms: int
    ) -> tuple[str, int | None]:
        """Move ``stock`` from the template's pool to a new session: ``("ok", left)``, ``("short", left)``,
        ``("no_pool", None)`` or ``("exists", None)``."""
        k = PoolKeys(template_id)
        reply = await self.scripts.run(
            f"{SCRIPT_PACKAGE}.flash_reserve", [k.meta, k.session(session_id)], [stock, start_ms, end_ms]
        )
        status = _s(reply[0])
        return status, (int(reply[1]) if len(reply) > 1 else None)

    async def release_session(self, template_id: int, session_id: int) -> bool:
        """Give an unclaimed session's stock back to its template (undoing a reservation)."""
        k = PoolKeys(template_id)
        return bool(await self.scripts.run(f"{SCRIPT_PACKAGE}.flash_release", [k.meta, k.session(session_id)], []))

    async def session_remaining(self, sessions: Sequence[tuple[int, int]]) -> list[int | None]:
        """The stock left of each ``(template_id, session_id)`` (None when Redis has no such session).

        One round trip; the keys sit in different slots, so this is a pipeline, not an MGET.
        """
        if not sessions:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for template_id, session_id in sessions:
            pipe.hget(PoolKeys(template_id).session(session_id), "stock")
        values = await pipe.execute()
        return [None if v is None else int(v) for v in values]

    # -- the pending ledger -----------------------------------------------------------------------------
    async def pools(self) -> list[int]:
        """Every template that has (or had) a pool."""
        return sorted(int(m) for m in await self.redis.smembers(POOLS_KEY))

    async def due(self, template_id: int, before_ms: int, limit: int = 500) -> list[int]:
        """Pending coupon ids of a pool accepted before ``before_ms``, oldest first."""
        raw = await self.redis.zrangebyscore(PoolKeys(template_id).pending, "-inf", before_ms, start=0, num=limit)
        return [int(_s(m)) for m in raw]

    async def pending_count(self, template_id: int) -> int:
        """How many of a pool's claims PostgreSQL does not have yet."""
        return int(await self.redis.zcard(PoolKeys(template_id).pending))

    async def records(self, template_id: int, coupon_ids: Sequence[int]) -> dict[int, ClaimRecord | None]:
        """The ledger entries of ``coupon_ids`` (None for an id without one)."""
        if not coupon_ids:
            return {}
        raw = await self.redis.hmget(PoolKeys(template_id).claims, [str(c) for c in coupon_ids])
        out: dict[int, ClaimRecord | None] = {}
        for cid, value in zip(coupon_ids, raw, strict=True):
            try:
                out[cid] = None if value is None else ClaimRecord.decode(cid, value)
            except ValueError:
                out[cid] = None
        return out

    async def claim_count(self, template_id: int) -> int:
        """How many claims the pool's ledger holds."""
        return int(await self.redis.hlen(PoolKeys(template_id).claims))

    async def all_records(self, template_id: int) -> dict[int, ClaimRecord]:
        """The whole ledger of a pool (tests and benchmarks)."""
        raw = await self.redis.hgetall(PoolKeys(template_id).claims)
        return {int(k): ClaimRecord.decode(int(k), v) for k, v in raw.items()}

    async def ack(self, persisted: Mapping[int, Iterable[int]]) -> None:
        """Drop persisted coupon ids (by template) from the pending sets, in one round trip (the claim
        consumer does this after every batch: the shared connection, not a pipeline object)."""
        commands = []
        for template_id, ids in persisted.items():
            members = [str(i) for i in ids]
            if members:
                commands.append(("ZREM", PoolKeys(template_id).pending, *members))
        if commands:
            await direct(self.redis).execute_many(commands)

    async def postpone(self, template_id: int, coupon_ids: Sequence[int], now_ms: int) -> None:
        """Give re-sent claims a fresh grace period (only those still pending: ``XX``)."""
        if coupon_ids:
            await self.redis.zadd(PoolKeys(template_id).pending, {str(c): now_ms for c in coupon_ids}, xx=True)

    # -- deny list ---------------------------------------------------------------------------------------
    async def deny(self, user_ids: Iterable[int]) -> None:
        """Add accounts to the shared copy of the deny list."""
        members = [str(u) for u in user_ids]
        if members:
            await self.redis.sadd(DENY_KEY, *members)

    async def allow(self, user_id: int) -> None:
        """Take an account off the shared copy."""
        await self.redis.srem(DENY_KEY, str(user_id))

    async def replace_denied(self, user_ids: Sequence[int]) -> None:
        """Make the shared copy exactly ``user_ids`` (atomically: nobody reads a half-written list)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(DENY_KEY)
        for i in range(0, len(user_ids), 1000):
            pipe.sadd(DENY_KEY, *[str(u) for u in user_ids[i : i + 1000]])
        await pipe.execute()

    async def denied_users(self) -> frozenset[int]:
        """The shared copy of the deny list."""
        return frozenset(int(_s(m)) for m in await self.redis.smembers(DENY_KEY))
