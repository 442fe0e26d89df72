"""Logging: JSON lines written by a writer thread (a request never waits for a write), with the request id
of the request that logged, tracebacks and extra fields; a full queue drops records instead of blocking."""

from __future__ import annotations

import json
import subprocess
import sys

_PROBE = """
import logging, threading, time
from picool import logs
logs.configure_logging("INFO", json_lines=True)
log = logging.getLogger("probe")
token = logs.request_id_var.set("req-1")
log.info("hello %s", "world", extra={"status": 201})
try:
    1 / 0
except ZeroDivisionError:
    log.exception("it broke")
logs.request_id_var.reset(token)
log.warning("after")
print("main thread did not wait", flush=True)
"""

_FULL = """
import logging, sys, time
from picool import logs
logs._QUEUE_MAX = 5
logs.configure_logging("INFO", json_lines=True)
writer = logs._RUNNING[0][0]
writer.stop()  # a writer that has fallen far behind: nothing leaves the queue
t0 = time.perf_counter()
for i in range(50):
    logging.getLogger("flood").info("line %d", i)
took = time.perf_counter() - t0
handler = logs._RUNNING[0][1]
print(f"dropped {handler.dropped} in {took:.3f}s", flush=True)
logs._RUNNING.clear()
"""


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)


def test_records_reach_stderr_as_json_with_request_id_and_traceback() -> None:
    out = _run(_PROBE)
    assert "main thread did not wait" in out.stdout
    lines = [json.loads(line) for line in out.stderr.splitlines() if line.startswith("{")]
    assert [(r["logger"], r["level"], r["msg"]) for r in lines] == [
        ("probe", "info", "hello world"),
        ("probe", "error", "it broke"),
        ("probe", "warning", "after"),
    ]
    assert lines[0]["request_id"] == "req-1" and lines[0]["status"] == 201  # captured in the logging thread
    assert lines[1]["request_id"] == "req-1" and "ZeroDivisionError: division by zero" in lines[1]["exc"]
    assert "request_id" not in lines[2]


def test_a_full_queue_drops_records_instead_of_blocking() -> None:
    out = _run(_FULL)
    dropped, took = out.stdout.split()[1], float(out.stdout.split()[3].rstrip("s"))
    assert dropped == "45" and took < 1.0
