"""Logging: JSON lines written by a writer thread (a request never waits for a write), with the request id
of the request that logged, tracebacks and extra fields; a writer far behind makes records drop instead of
blocking; the writer wakes on a timer (or at once for a warning), not per record; the access log."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from litestar import Litestar, get
from litestar.params import FromPath
from litestar.testing import TestClient

from picool import logs
from picool.web import RequestIdMiddleware

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
logs._PENDING_MAX = 5
logs.configure_logging("INFO", json_lines=True)
writer = logs._RUNNING[0][0]
writer.stop()  # a writer that has fallen far behind: nothing is taken any more
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


class _Lines(logging.Formatter):
    """Collects what the writer writes (a stream with ``write`` and ``flush``)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[float, str]] = []

    def write(self, text: str) -> None:
        self.writes.append((time.monotonic(), text))

    def flush(self) -> None:
        pass


@pytest.fixture
def writer() -> Iterator[tuple[logs._Writer, logs._Enqueue, _Lines]]:
    lines = _Lines()
    w = logs._Writer(logs.JsonFormatter())
    w.stream = lines  # type: ignore[assignment]
    handler = logs._Enqueue(w, 100)
    w.start()
    yield w, handler, lines
    w.stop()


def _record(level: int, msg: str) -> logging.LogRecord:
    return logging.LogRecord("probe", level, __file__, 1, msg, (), None)


def test_the_writer_batches_info_records_on_its_timer(writer: tuple[logs._Writer, logs._Enqueue, _Lines]) -> None:
    _w, handler, lines = writer
    for i in range(20):
        handler.handle(_record(logging.INFO, f"line {i}"))
    deadline = time.monotonic() + 5
    while sum(t.count("\n") for _, t in lines.writes) < 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    written = [json.loads(line)["msg"] for _, text in lines.writes for line in text.splitlines()]
    assert written == [f"line {i}" for i in range(20)]
    assert len(lines.writes) <= 2  # one write a round, not one a record


def test_a_warning_wakes_the_writer_at_once(writer: tuple[logs._Writer, logs._Enqueue, _Lines]) -> None:
    w, handler, lines = writer
    w.INTERVAL_S = 30.0  # type: ignore[misc]  # only a wake-up can write within the test
    time.sleep(logs._Writer.INTERVAL_S * 2)  # the writer is now in its long wait
    handler.handle(_record(logging.INFO, "quiet"))
    handler.handle(_record(logging.WARNING, "loud"))
    deadline = time.monotonic() + 5
    while not lines.writes and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [json.loads(line)["msg"] for line in lines.writes[0][1].splitlines()] == ["quiet", "loud"]


def test_a_stop_writes_what_is_pending(writer: tuple[logs._Writer, logs._Enqueue, _Lines]) -> None:
    w, handler, lines = writer
    w.INTERVAL_S = 30.0  # type: ignore[misc]
    time.sleep(logs._Writer.INTERVAL_S * 2)
    for i in range(3):
        handler.handle(_record(logging.INFO, f"line {i}"))
    w.stop()
    assert [json.loads(line)["msg"] for _, text in lines.writes for line in text.splitlines()] == [
        "line 0",
        "line 1",
        "line 2",
    ]


@get("/hello/{name:str}", sync_to_thread=False)
def _hello(name: FromPath[str]) -> dict[str, str]:
    return {"hello": name}


def test_the_access_log_has_a_line_per_request(caplog: pytest.LogCaptureFixture) -> None:
    app = Litestar([_hello], logging_config=None)
    app.asgi_handler = RequestIdMiddleware(app.asgi_handler)  # outermost, as the gateway mounts it
    with caplog.at_level(logging.INFO, logger="picool.access"), TestClient(app) as client:
        ok = client.get("/hello/ann", headers={"X-Request-ID": "rid-12345678"})
        missing = client.get("/nowhere")
    assert ok.status_code == 200 and ok.headers["x-request-id"] == "rid-12345678"
    records = [r for r in caplog.records if r.name == "picool.access"]
    assert [(r.method, r.path, r.status) for r in records] == [  # type: ignore[attr-defined]
        ("GET", "/hello/ann", 200),
        ("GET", "/nowhere", 404),
    ]
    assert records[0].getMessage() == "GET /hello/ann 200"
    assert all(r.duration_ms >= 0 for r in records)  # type: ignore[attr-defined]
    line = json.loads(logs.JsonFormatter().format(records[0]))
    assert line["request_id"] == "rid-12345678" and line["status"] == 200 and line["client"]
    assert len(missing.headers["x-request-id"]) == 32  # made when the client sent none
