"""Password hashing with argon2id, off the event loop.

Parameters are the OWASP minimum for argon2id (19 MiB, 2 iterations, 1 lane); raising them here makes
every account re-hash on its next successful login (:func:`verify`'s ``needs_rehash``).

Hashes run in a small pool of their own whose threads run at a lower CPU priority: argon2 releases the
GIL, so a burst of logins would otherwise take every core away from the event-loop thread and stall
every other request of the process (bench/auth_tokens.py measures ping latency during login load). The
pool's size bounds the memory too (19 MiB per hash in flight).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MEMORY_COST_KIB = 19 * 1024
TIME_COST = 2
PARALLELISM = 1

_hasher = PasswordHasher(time_cost=TIME_COST, memory_cost=MEMORY_COST_KIB, parallelism=PARALLELISM)
_dummy: dict[str, str] = {}  # one dummy hash per process, made once

HASH_THREADS = max(1, min(4, os.cpu_count() or 1))
HASH_NICE = 10  # CFS gives a nice-0 thread ~10x the CPU share of a nice-10 one when both want it
T = TypeVar("T")


def _lower_priority() -> None:
    with contextlib.suppress(AttributeError, OSError):  # Linux: a thread's id is a process id for setpriority
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASH_NICE)


_pool = ThreadPoolExecutor(max_workers=HASH_THREADS, thread_name_prefix="argon2", initializer=_lower_priority)


async def _in_pool(fn: Callable[..., T], *args: str) -> T:
    return await asyncio.get_running_loop().run_in_executor(_pool, fn, *args)


async def hash_password(password: str) -> str:
    """An argon2id hash of ``password`` (computed in a worker thread)."""
    return await _in_pool(_hasher.hash, password)


def _verify(stored: str, password: str) -> tuple[bool, bool]:
    try:
        _hasher.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False, False
    return True, _hasher.check_needs_rehash(stored)


async def verify_password(stored: str | None, password: str) -> tuple[bool, bool]:
    """``(ok, needs_rehash)`` for ``password`` against ``stored``.

    With ``stored`` None (no such account) it verifies against a dummy hash of the same parameters
    and answers ``(False, False)``, so unknown accounts cost as much time as wrong passwords.
    """
    if stored is None:
        await _in_pool(_verify, await _dummy_hash(), password)
        return False, False
    return await _in_pool(_verify, stored, password)


async def _dummy_hash() -> str:
    if "hash" not in _dummy:
        _dummy["hash"] = await hash_password("picool-dummy-password-for-timing")
    return _dummy["hash"]


async def warm_up() -> None:
    """Compute the dummy hash now (at startup) so the first unknown-email login is not faster or slower."""
    await _dummy_hash()
