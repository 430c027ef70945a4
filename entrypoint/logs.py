"""Logging setup: `YYYY-MM-DD HH:MM:SS [LEVEL] message`, INFO/WARNING on stdout, ERROR on stderr.

Every record is formatted into exactly one line, redacted and with control characters escaped
(log_text), whatever its message, arguments or traceback hold. PID 1 logs through non-blocking
OutputSinks (see output_sink), so a stalled log reader never blocks it; other processes (the
health server) use the same formatting on plain streams.
"""

from __future__ import annotations

import logging
import sys
import threading
from types import TracebackType

from entrypoint.log_text import safe_record
from entrypoint.output_sink import OutputSink

LOG_FORMAT = "%(asctime)s [%(levelname)s] %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
# A record longer than this is cut, saying how much: an output sink queues at most 256 KiB per
# stream and drops a longer line whole, so an error quoting a huge config line would vanish.
RECORD_LIMIT = 16 * 1024


class _SafeFormatter(logging.Formatter):
    """The last step of every record, traceback included: one line, no credential, no control character."""

    def format(self, record: logging.LogRecord) -> str:
        line = safe_record(super().format(record))
        if len(line) > RECORD_LIMIT:
            line = f"{line[:RECORD_LIMIT]} ... [{len(line) - RECORD_LIMIT} more characters cut]"
        return line


class _BelowErrorFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


class SinkHandler(logging.Handler):
    """Writes each formatted record as one line to an OutputSink (never blocks)."""

    def __init__(self, sink: OutputSink) -> None:
        super().__init__()
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.sink.write_line(self.format(record).encode("utf-8", errors="replace"))
        except Exception:
            self.handleError(record)


def _log_uncaught(
    kind: type[BaseException], error: BaseException, trace: TracebackType | None
) -> None:
    logging.getLogger("cephaloproxy").critical("Uncaught exception", exc_info=(kind, error, trace))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is not None and not isinstance(args.exc_value, SystemExit):
        _log_uncaught(args.exc_type, args.exc_value, args.exc_traceback)


def configure_logging(
    level_name: str, sinks: tuple[OutputSink, OutputSink] | None = None
) -> logging.Logger:
    """Configure the root logger once; returns the project logger.

    With `sinks` (stdout, stderr), records go to them; otherwise to sys.stdout/sys.stderr.
    """
    formatter = _SafeFormatter(LOG_FORMAT, DATE_FORMAT)
    to_stdout: logging.Handler
    to_stderr: logging.Handler
    if sinks is not None:
        to_stdout, to_stderr = SinkHandler(sinks[0]), SinkHandler(sinks[1])
    else:
        to_stdout, to_stderr = logging.StreamHandler(sys.stdout), logging.StreamHandler(sys.stderr)
    to_stdout.setFormatter(formatter)
    to_stdout.addFilter(_BelowErrorFilter())
    to_stderr.setFormatter(formatter)
    to_stderr.setLevel(logging.ERROR)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(to_stdout)
    root.addHandler(to_stderr)
    root.setLevel(getattr(logging, level_name, logging.INFO))
    # An exception nobody catches becomes a record too: one line, redacted, escaped.
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread
    return logging.getLogger("cephaloproxy")
