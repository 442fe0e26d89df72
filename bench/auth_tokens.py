"""Auth: what every API call pays (access-token verification), token refresh, and login.

- in-process, in a tight loop on uvloop: ``kernel.verifier.verify`` for a token seen before (what every
  request of a client pays) and from scratch (a token's first request: header, ES256 signature, claims,
  the denylist's local copy), and the parts alone: pyjwt's ES256 decode, the raw P-256 signature check,
  the denylist's fallback MGET. Target: verify <= 0.2 ms;
- over HTTP: ``GET /api/v1/ping`` with a bearer token vs without (the edge verifies every token once);
- ``POST /oauth2/token`` refresh, one rotating chain per connection (each answer's refresh token is the
  next request's); the chains must all still be alive at the end (no false reuse detection);
- ``POST /api/v1/auth/login`` (argon2id, meant to be slow) and a concurrent ping stream with and without
  login load: argon2 runs in a thread, the event loop must stay responsive.

    uv run python bench/auth_tokens.py            # ~1.5 min
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from typing import Any
from urllib.parse import urlencode

from harness import accounts, load
from harness.results import Results, http_row, seconds
from harness.runs import PING, all_ok, ceiling, measure
from harness.servers import App, Sampler, Servers, embedded_servers, install_signal_handlers

VERIFY = "verify: a token seen before (product path)"
VERIFY_COLD = "verify: first sight (ES256 + claims + the local denylist copy)"


def _per_op(samples: list[float]) -> dict[str, float]:
    samples = sorted(samples)
    n = len(samples)
    return {
        "per_op_us": round(statistics.fmean(samples) * 1e6, 2),
        "p50_ms": round(samples[n // 2] * 1000, 4),
        "p99_ms": round(samples[min(n - 1, int(n * 0.99))] * 1000, 4),
        "ops": n,
    }


async def _inproc(servers: Servers, token: str, budget_s: float, max_ops: int) -> dict[str, dict[str, float]]:
    """Tight loops in this process, each bounded by ``budget_s`` and ``max_ops``."""
    import jwt
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    from auth.service._keys import KeyRing
    from picool.kernel import Kernel
    from picool.tokens import ALGORITHMS, ALL_AUDIENCES, Denylist, TokenVerifier

    settings = servers.settings()
    kernel = Kernel(settings)
    keys = KeyRing(kernel.sessionmaker, settings.secret_key)
    kernel.jwks_provider = keys.jwks_now
    verifier = kernel.verifier
    # Every check done from scratch (no remembered tokens), with the process's started denylist (its local
    # copy of the live denials): what a token's first request pays. The denylist's fallback when its
    # subscription is down (an MGET) is timed on its own below.
    cold = TokenVerifier(settings.token_issuer, ALL_AUDIENCES, keys.jwks_now, kernel.denylist, verified_max=0)
    fallback = Denylist(kernel.redis)  # never started: asks Redis every time
    out: dict[str, dict[str, float]] = {}
    try:
        await kernel.denylist.start()  # as Kernel.start does: revocation notices, local "not revoked" answers
        ident = await verifier.verify(token)  # loads the JWKS once, as the app does at its first request
        await cold.verify(token)

        async def loop(name: str, fn: Any, is_async: bool) -> None:
            samples: list[float] = []
            deadline = time.perf_counter() + budget_s
            for _ in range(200):  # warm-up
                await fn() if is_async else fn()
            while len(samples) < max_ops and time.perf_counter() < deadline:
                t0 = time.perf_counter()
                if is_async:
                    await fn()
                else:
                    fn()
                samples.append(time.perf_counter() - t0)
            out[name] = _per_op(samples)

        await loop(VERIFY, lambda: verifier.verify(token), True)
        await loop(VERIFY_COLD, lambda: cold.verify(token), True)
        key = verifier._keys[jwt.get_unverified_header(token)["kid"]].key

        options = {"require": ["iss", "sub", "aud", "exp", "iat", "jti"], "verify_nbf": True}

        def decode() -> None:
            jwt.decode(token, key=key, algorithms=ALGORITHMS, audience=verifier.audiences, issuer=verifier.issuer,
                       leeway=5, options=options)  # fmt: skip

        await loop("pyjwt ES256 decode alone", decode, False)
        signing_input, _, sig_b64 = token.rpartition(".")
        raw = jwt.utils.base64url_decode(sig_b64)
        der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
        msg = signing_input.encode()
        await loop("P-256 signature check alone (cryptography)",
                   lambda: key.verify(der, msg, ec.ECDSA(hashes.SHA256())), False)  # fmt: skip
        await loop("denylist fallback (subscription down): MGET",
                   lambda: fallback.is_denied(ident.jti, ident.family_id, ident.user_id), True)  # fmt: skip
        await loop("jwt.get_unverified_header", lambda: jwt.get_unverified_header(token), False)
    finally:
        await kernel.denylist.stop()
        await kernel.redis.aclose()
        await kernel.engine.dispose()
    return out


class _RefreshChain:
    """Rotates one refresh-token family: every answer carries the next request's token."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.alive = True

    def _req(self) -> bytes:
        body = urlencode({"grant_type": "refresh_token", "refresh_token": self.token, "client_id": "runner-app"})
        return load.post("/oauth2/token", body.encode(), content_type="application/x-www-form-urlencoded")

    def first(self) -> bytes:
        return self._req()

    def next(self, status: int, body: bytes) -> bytes | None:
        if status != 200:
            return None
        self.token = json.loads(body)["refresh_token"]
        return self._req()


def main() -> int:
    install_signal_handlers()
    res = Results("auth")
    res.extra["command"] = "uv run python bench/auth_tokens.py"
    duration = seconds("duration", 8.0)
    with embedded_servers() as servers, App(servers) as app:
        runners = accounts.runners(app.base_url, 8)
        base = ceiling(res, app, 64)

        print("auth: in-process verification ...", flush=True)
        import uvloop

        with Sampler() as sampler:
            timings = uvloop.run(_inproc(servers, runners[0].access_token, seconds("inproc", 3.0), 50_000))
        for name, t in timings.items():
            role = {VERIFY: "verify", VERIFY_COLD: "verify-cold"}.get(name, "verify-part")
            res.row(name, kind="inproc", role=role, rps=round(1e6 / t["per_op_us"], 1), **t,
                    other_load_cores=round(sampler.other_cores, 2),
                    target="<= 0.2 ms" if role != "verify-part" else None)  # fmt: skip
        for name, role in ((VERIFY, "repeat"), (VERIFY_COLD, "first sight")):
            t = timings[name]
            res.target(f"access-token verification ({role}) <= 0.2 ms", t["p50_ms"] <= 0.2,
                      f"p50 {t['p50_ms'] * 1000:.0f} us, mean {t['per_op_us']:.0f} us")  # fmt: skip
        res.extra["verify_us"] = timings[VERIFY]["per_op_us"]
        res.extra["verify_cold_us"] = timings[VERIFY_COLD]["per_op_us"]

        r, _ = measure(res, "ping + bearer token c=64", app, [load.get(PING, runners[0].bearer)], concurrency=64,
                       ceiling_rps=base, role="edge-verify")  # fmt: skip
        all_ok(res, "ping + bearer", r)
        if r.rps and base:
            res.note(f"edge token check costs ~{(1 / r.rps - 1 / base) * 1e6:.0f} us of app time per request over HTTP")

        print("auth: refresh chains ...", flush=True)
        chains_n = 32
        tokens = [t["refresh_token"] for t in accounts.login_again(app.base_url, runners[1], chains_n)]
        with Sampler(app.pid) as sampler:
            stream = load.Stream("refresh", (), chains_n, chain=lambda i: _RefreshChain(tokens[i]))
            (rr,) = load.run_many(app.port, [stream], duration_s=duration, warmup_s=1.0)
        http_row(res, "token refresh (rotating) c=32", rr, sampler, base, role="refresh")
        all_ok(res, "refresh", rr)

        print("auth: login and the event loop ...", flush=True)
        logins = [
            load.post("/api/v1/auth/login",
                      json.dumps({"email": a.email, "password": accounts.PASSWORD, "client_id": "runner-app"}).encode())
            for a in runners
        ]  # fmt: skip
        ping = [load.get(PING)]
        with Sampler(app.pid) as s_alone:
            (alone,) = load.run_many(app.port, [load.Stream("ping alone", ping, 4, processes=1)], duration_s=duration)
        http_row(res, "ping c=4, no other load", alone, s_alone, None, role="starve-base")
        with Sampler(app.pid) as s_mix:
            ping_mix, login_r = load.run_many(
                app.port,
                [
                    load.Stream("ping during logins", ping, 4, processes=1),
                    load.Stream("login", logins, 16, processes=1),
                ],
                duration_s=duration,
            )
        http_row(res, "login (argon2id) c=16", login_r, s_mix, base, role="login")
        http_row(res, "ping c=4 during login load", ping_mix, s_mix, None, role="starve")
        all_ok(res, "login", login_r)
        all_ok(res, "ping during logins", ping_mix)
        ratio = ping_mix.percentile(99) / max(alone.percentile(99), 1e-9)
        res.check(
            "login load does not starve the loop (ping p99 under login load < 50 ms)",
            ping_mix.percentile(99) < 50,
            f"ping p99 {alone.percentile(99):.2f} ms alone, {ping_mix.percentile(99):.2f} ms during "
            f"{login_r.rps:.1f} logins/s (x{ratio:.1f})",
        )
        res.check("app logged no errors", app.errors_logged() == 0, f"{app.errors_logged()} ERROR lines")
    res.save()
    return 1 if res.failed else 0


if __name__ == "__main__":
    sys.exit(main())
