"""Logging setup: `YYYY-MM-DD HH:MM:SS [LEVEL] message`, INFO/WARNING on stdout, ERROR on stderr."""

from __future__ import annotations

import logging
import sys

from entrypoint.redact import redact_text

LOG_FORMAT = "%(asctime)s [%(levelname)s] %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


class _RedactFilter(logging.Filter):
    """Last line of defence: no log record carries a credential, whatever its source."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact_text(record.getMessage())
        record.args = None
        return True


class _BelowErrorFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


def configure_logging(level_name: str) -> logging.Logger:
    """Configure the root logger once; returns the project logger."""
    formatter = logging.Formatter(LOG_FORMAT, DATE_FORMAT)
    to_stdout = logging.StreamHandler(sys.stdout)
    to_stdout.setFormatter(formatter)
    to_stdout.addFilter(_RedactFilter())
    to_stdout.addFilter(_BelowErrorFilter())
    to_stderr = logging.StreamHandler(sys.stderr)
    to_stderr.setFormatter(formatter)
    to_stderr.addFilter(_RedactFilter())
    to_stderr.setLevel(logging.ERROR)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(to_stdout)
    root.addHandler(to_stderr)
    root.setLevel(getattr(logging, level_name, logging.INFO))
    return logging.getLogger("cephaloproxy")
