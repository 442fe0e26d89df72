"""Profile the app under one scenario's load with py-spy (sampling, no change to the app) and print where
its time goes: inclusive share per function, and the hottest self-time frames.

    uv run python bench/profile_app.py ping-token        # GET /api/v1/ping with a bearer token
    uv run python bench/profile_app.py ping              # the ceiling endpoint
    uv run python bench/profile_app.py nearby [TASKS]    # nearby search, hot set (default 100000 tasks)
    uv run python bench/profile_app.py nearby-cold [TASKS]  # nearby search, local level cold, Redis warm
    uv run python bench/profile_app.py wallet            # wallet read, local-cache hit
    uv run python bench/profile_app.py flash             # flash-session claims (split: the consumer in picool work)
    uv run python bench/profile_app.py flash-single      # flash-session claims, the consumer in the app

py-spy is not a project dependency: this runs it with ``uvx --from py-spy py-spy`` (PyPI), as root or with
ptrace allowed. The collapsed stacks are kept in ``bench/out/profile-<what>.txt``.
"""

from __future__ import annotations

import collections
import contextlib
import subprocess
import sys
import threading

from harness import accounts, load
from harness.results import OUT
from harness.servers import App, Worker, embedded_servers, install_signal_handlers

PYSPY = ["uvx", "--from", "py-spy", "py-spy"]
NONBLOCKING = False  # blocking sampling: whole stacks (non-blocking reads tear many of them, losing their roots)


def summarize(raw_path: str, top: int = 40) -> str:
    """Inclusive and self shares per frame from py-spy's collapsed (``raw``) output."""
    inclusive: collections.Counter[str] = collections.Counter()
    self_t: collections.Counter[str] = collections.Counter()
    total = 0
    with open(raw_path) as f:
        for line in f:
            stack, _, n = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            try:
                count = int(n)
            except ValueError:  # a frame name with a line break in it (py-spy prints source text)
                continue
            total += count
            frames = stack.split(";")
            for fr in set(frames):
                inclusive[_short(fr)] += count
            self_t[_short(frames[-1])] += count
    out = [f"{total} samples", "", "inclusive:"]
    out += [f"  {100 * c / total:5.1f}%  {name}" for name, c in inclusive.most_common(top)]
    out += ["", "self:"]
    out += [f"  {100 * c / total:5.1f}%  {name}" for name, c in self_t.most_common(top)]
    return "\n".join(out)


def _short(frame: str) -> str:
    # "func (path/to/module.py:123)" -> "func (module.py)"
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = path.split("/")
    tail = "/".join(parts[-2:]) if len(parts) >= 2 else path
    return f"{name} ({tail})"


def main() -> int:
    install_signal_handlers()
    what = sys.argv[1] if len(sys.argv) > 1 else "ping-token"
    seconds = 12.0
    import flash

    claims = what in {"flash", "flash-single"}
    env = flash.CLAIM_LIMITS if claims else {}
    serve_args = ("--no-consumers",) if what == "flash" else ()
    with (
        embedded_servers() as servers,
        App(servers, serve_args=serve_args, **env) as app,
        Worker(app) if serve_args else contextlib.nullcontext(),
    ):
        if what == "ping":
            reqs = [load.get("/api/v1/ping")]
        elif what == "ping-token":
            runner = accounts.runners(app.base_url, 1)[0]
            reqs = [load.get("/api/v1/ping", runner.bearer)]
        elif what.startswith("nearby"):
            from harness import tasks

            n = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
            field = tasks.TaskField.make(n)
            tasks.seed_sync(servers, field, 0, n)
            runner = accounts.runners(app.base_url, 1)[0]
            if what == "nearby-cold":  # local level cold, Redis warm: many points, replayed
                points = field.queries(20_000, seed=7)
                reqs = tasks.requests(points, runner.bearer)
                load.run("fill Redis", app.port, reqs, concurrency=64, duration_s=20, warmup_s=0.5, cycle=False)
            else:
                reqs = tasks.requests(field.queries(100, seed=11), runner.bearer)
                load.run("warm", app.port, reqs, concurrency=64, duration_s=3, warmup_s=0.5)
        elif what == "wallet":
            import wallet

            reqs = wallet.setup(servers, app).requests()
        elif claims:
            import asyncio

            seeded = asyncio.run(flash._seed(servers, app))
            path = f"/api/v1/coupon/flash-sessions/{seeded.session_id}/claims"
            reqs = [load.post(path, b"", {"Authorization": f"Bearer {t}"}) for t in seeded.tokens]
            load.run("warm", app.port, reqs, concurrency=64, duration_s=3, warmup_s=0.5)
        else:
            raise SystemExit(f"unknown scenario {what!r}")
        OUT.mkdir(parents=True, exist_ok=True)
        raw = str(OUT / f"profile-{what}.txt")
        spy = subprocess.Popen(
            [*PYSPY, "record", "--pid", str(app.pid), "--duration", str(int(seconds - 2)), "--rate", "250",
             "--format", "raw", "--output", raw, *(["--nonblocking"] if NONBLOCKING else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        result: list[load.LoadResult] = []
        t = threading.Thread(
            target=lambda: result.append(load.run(what, app.port, reqs, concurrency=64, duration_s=seconds, warmup_s=1))
        )
        t.start()
        try:
            _out, err = spy.communicate(timeout=seconds + 60)
        finally:
            if spy.poll() is None:
                spy.kill()
            t.join(timeout=seconds + 30)
        if spy.returncode != 0:
            print(err.decode(errors="replace"))
            return 1
        if result:
            print(result[0].line())
        print(summarize(raw))
    return 0


if __name__ == "__main__":
    sys.exit(main())
