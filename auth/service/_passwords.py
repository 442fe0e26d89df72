"""Password hashing with argon2id, off the event loop.

Parameters are the OWASP minimum for argon2id (19 MiB, 2 iterations, 1 lane); raising them here makes
every account re-hash on its next successful login (:func:`verify`'s ``needs_rehash``).
"""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MEMORY_COST_KIB = 19 * 1024
TIME_COST = 2
PARALLELISM = 1

_hasher = PasswordHasher(time_cost=TIME_COST, memory_cost=MEMORY_COST_KIB, parallelism=PARALLELISM)
_dummy: dict[str, str] = {}  # one dummy hash per process, made once


async def hash_password(password: str) -> str:
    """An argon2id hash of ``password`` (computed in a worker thread)."""
    return await asyncio.to_thread(_hasher.hash, password)


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
        await asyncio.to_thread(_verify, await _dummy_hash(), password)
        return False, False
    return await asyncio.to_thread(_verify, stored, password)


async def _dummy_hash() -> str:
    if "hash" not in _dummy:
        _dummy["hash"] = await hash_password("picool-dummy-password-for-timing")
    return _dummy["hash"]


async def warm_up() -> None:
    """Compute the dummy hash now (at startup) so the first unknown-email login is not faster or slower."""
    await _dummy_hash()
