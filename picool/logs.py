"""Structured logging: one JSON object a line, with the request id of the request being served."""

from __future__ import annotations

import atexit
import contextvars
import copy
import json
import logging
import logging.handlers
import queue
import sys
import threading
import time
from typing import Any

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


class JsonFormatter(logging.Formatter):
    """Formats records as JSON with ts, level, logger, msg, request_id and any ``extra`` fields."""

    _skip = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
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
        return json.dumps(out, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Human-readable lines for the terminal, with the request id when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        rid = getattr(record, "request_id", None) or request_id_var.get()
        return f"{base} [{rid}]" if rid else base


class _Enqueue(logging.handlers.QueueHandler):
    """Hands records to the writer thread without ever blocking: the record is made self-contained here
    (message merged, traceback rendered, request id captured, since context variables stay in this thread)
    and dropped, counted, when the queue is full."""

    def __init__(self, q: queue.Queue[Any]) -> None:
        super().__init__(q)
        self.dropped = 0

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        out = copy.copy(record)
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

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1


class _Writer:
    """The thread that formats queued records and writes them, as many as are waiting in one write: one
    wake-up and one system call per batch, not per record (a thread that woke for every record cost the
    event loop's thread about 6 % of its throughput in handing the interpreter lock back and forth)."""

    _STOP: Any = object()
    BATCH = 512

    def __init__(self, records: queue.Queue[Any], formatter: logging.Formatter) -> None:
        self.records = records
        self.formatter = formatter
        self.stream = sys.stderr
        self._thread = threading.Thread(target=self._run, name="picool-log-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Write what is queued, then end the thread."""
        if self._thread.is_alive():
            self.records.put(self._STOP)  # blocks if full: it is the last thing asked of a stopping process
            self._thread.join()

    def _run(self) -> None:
        while True:
            batch = [self.records.get()]
            while len(batch) < self.BATCH:
                try:
                    batch.append(self.records.get_nowait())
                except queue.Empty:
                    break
            done = any(r is self._STOP for r in batch)
            lines = []
            for record in batch:
                if record is self._STOP:
                    continue
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
            if done:
                return


_FORMATTER = logging.Formatter()
_QUEUE_MAX = 50_000
_RUNNING: list[tuple[_Writer, _Enqueue]] = []  # the writer thread and its handler


def configure_logging(level: str = "INFO", json_lines: bool = True) -> None:
    """Install the root handler once (idempotent).

    Records go through a bounded queue to one writer thread, which formats and writes them to stderr: a
    request never waits for a write (a log file behind a busy disk or a slow pipe stalled the event loop
    for tens of milliseconds, every request in flight with it). The queue is drained at exit; a record
    that finds it full is dropped and counted rather than wait.
    """
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
    records: queue.Queue[Any] = queue.Queue(_QUEUE_MAX)
    handler = _Enqueue(records)
    handler._picool = True  # type: ignore[attr-defined]
    writer = _Writer(records, formatter)
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
