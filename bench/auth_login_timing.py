"""Timing of failed logins: unknown email vs wrong password (no account enumeration by timing).

Runs the same password check the login uses (argon2id at today's parameters, in a worker thread) and
prints the ratio of median times. A ratio near 1.0 is the goal; the test suite never asserts timing.

    uv run python bench/auth_login_timing.py [rounds]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time

from auth.service import _passwords


async def main(rounds: int) -> None:
    stored = await _passwords.hash_password("the real password")
    await _passwords.warm_up()
    unknown: list[float] = []
    wrong: list[float] = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        await _passwords.verify_password(None, "a guessed password")
        t1 = time.perf_counter()
        await _passwords.verify_password(stored, "a guessed password")
        t2 = time.perf_counter()
        unknown.append(t1 - t0)
        wrong.append(t2 - t1)
    mu, mw = statistics.median(unknown), statistics.median(wrong)
    print(f"rounds={rounds} unknown-email median={mu * 1000:.1f} ms wrong-password median={mw * 1000:.1f} ms")
    print(f"ratio unknown/wrong = {mu / mw:.3f}")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 30))
