"""Structured logging: one JSON object a line, with the request id of the request being served."""

from __future__ import annotations

import atexit
import collections
import contextvars
import logging
import sys
import threading
import time
from typing import Any

import msgspec

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


class JsonFormatter(logging.Formatter):
    """Formats records as JSON with ts, level, logger, msg, request_id and any ``extra`` fields (a value
    JSON has no type for is written as its ``str``)."""

    _skip = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
    _encoder = msgspec.json.Encoder(enc_hook=str)

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:  # one strftime a second, not one a line
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        out: dict[str, Any] = {
            "ts": f"{self._stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = getattr(record, "request_id", None) or request_id_var.get()
        if rid:
            out["request_id"] = rid
        for k, v in record.__dict__.items():
            if k not in self._skip and not k.startswith("_"):
                out[k] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        return self._encoder.encode(out).decode()


class TextFormatter(logging.Formatter):
    """Human-readable lines for the terminal, with the request id when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        rid = getattr(record, "request_id", None) or request_id_var.get()
        return f"{base} [{rid}]" if rid else base


class _Enqueue(logging.Handler):
    """Hands records to the writer thread without ever blocking: the record is made self-contained here
    (message merged, traceback rendered, request id captured, since context variables stay in this thread)
    and dropped, counted, when the writer is ``limit`` records behind. A warning or worse wakes the writer at
    once; the rest wait for its next round."""

    def __init__(self, writer: _Writer, limit: int) -> None:
        super().__init__()
        self.writer = writer
        self.limit = limit
        self.dropped = 0

    def handle(self, record: logging.LogRecord) -> bool:
        # No handler lock: handing over is one atomic append.
        if not self.filter(record):
            return False
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        try:
            pending = self.writer.pending
            if len(pending) >= self.limit:
                self.dropped += 1
                return
            pending.append(self.prepare(record))  # deque.append is atomic: no lock, no wake-up
            if record.levelno >= logging.WARNING:
                self.writer.wake.set()
        except Exception:
            self.handleError(record)

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # A shallow copy (other handlers still see the record as it was), made without copy.copy's generic
        # machinery: a LogRecord is its attributes.
        out = type(record).__new__(type(record))
        out.__dict__.update(record.__dict__)
        out.msg = record.getMessage()
        out.args = None
        if record.exc_info:
            out.exc_text = _FORMATTER.formatException(record.exc_info)
        out.exc_info = None
        if not hasattr(out, "request_id"):
            rid = request_id_var.get()
            if rid:
                out.request_id = rid
        return out


class _Writer:
    """The thread that formats the handed-over records and writes them, every ``INTERVAL_S`` (at once for a
    warning or worse, and at a stop), all that are waiting in one write.

    It wakes on a timer rather than per record. A thread woken for every record costs the event loop's
    thread a wake-up and a hand-over of the interpreter lock per request: when requests come one at a time
    (a server below its capacity) nothing batches, and that was about 6 % of a request's CPU.
    """

    INTERVAL_S = 0.05

    def __init__(self, formatter: logging.Formatter) -> None:
        self.pending: collections.deque[logging.LogRecord] = collections.deque()
        self.wake = threading.Event()
        self.formatter = formatter
        self.stream = sys.stderr
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="picool-log-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Write what is pending, then end the thread."""
        if self._thread.is_alive():
            self._stopping = True
            self.wake.set()
            self._thread.join()

    def _run(self) -> None:
        while True:
            self.wake.wait(self.INTERVAL_S)
            self.wake.clear()
            stopping = self._stopping  # read before draining: what was handed over before the stop is written
            self._write_pending()
            if stopping:
                return

    def _write_pending(self) -> None:
        lines = []
        pending = self.pending
        while pending:
            record = pending.popleft()
            try:
                lines.append(self.formatter.format(record))
            except Exception:  # a record that cannot be formatted is lost, not the writer
                lines.append(f"picool.logs: unformattable record from {record.name}")
        if lines:
            try:
                self.stream.write("\n".join(lines) + "\n")
                self.stream.flush()
            except (OSError, ValueError):  # stderr closed or gone: nothing better to do
                pass


_FORMATTER = logging.Formatter()
_PENDING_MAX = 50_000
_RUNNING: list[tuple[_Writer, _Enqueue]] = []  # the writer thread and its handler


def configure_logging(level: str = "INFO", json_lines: bool = True) -> None:
    """Install the root handler once (idempotent).

    Records are handed to one writer thread, which formats and writes them to stderr (see
    :class:`_Writer`): a request never waits for a write (a log file behind a busy disk or a slow pipe
    stalled the event loop for tens of milliseconds, every request in flight with it). What is pending is
    written at exit; a record that finds the writer ``_PENDING_MAX`` records behind is dropped and counted
    rather than wait.
    """
    # What no line of ours prints, a record need not gather: the caller's file and line (a walk up the
    # stack on every call), the thread's name, the process id (the logging HOWTO's "Optimization").
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_picool", False):
            root.removeHandler(h)
    flush_logging()
    formatter: logging.Formatter = (
        JsonFormatter()
        if json_lines
        else TextFormatter("%(asctime)s %(levelname)-5s %(name)s: %(message)s", "%H:%M:%S")
    )
    writer = _Writer(formatter)
    handler = _Enqueue(writer, _PENDING_MAX)
    handler._picool = True  # type: ignore[attr-defined]
    writer.start()
    _RUNNING.append((writer, handler))
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "kafka", "asyncio", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def flush_logging() -> None:
    """Write every queued record and stop the writer (at exit, and before logging is configured anew)."""
    while _RUNNING:
        writer, handler = _RUNNING.pop()
        writer.stop()  # writes what it holds first
        if handler.dropped:
            print(f"picool.logs: {handler.dropped} log records dropped (the writer fell behind)", file=sys.stderr)


atexit.register(flush_logging)
