"""Log hygiene for the server and workers: secrets never reach a log line, and a flood of identical lines is
cut down to one line plus a count.

`RedactFilter` rewrites a record's final message: `token=…` / `ticket=…` / `password=…` / `api_key=…` query
or form values, `Authorization: …` header values and toonbooth API tokens (`tb_…`) anywhere become
`[redacted]`. `RepeatFilter` lets the first of identical messages (same logger, level and text) through,
drops the repeats for `window_s` seconds and then logs how many were dropped.
"""

from __future__ import annotations

import logging
import re
import threading
import time

_SECRET_PARAM = re.compile(r"(?i)\b(token|ticket|access_token|api_key|apikey|password|passwd|secret)=([^&\s\"']+)")
_AUTH_HEADER = re.compile(r"(?i)\b(authorization[\"']?\s*[:=]\s*[\"']?)(bearer|basic)?\s*[A-Za-z0-9+/=._~-]+")
_API_TOKEN = re.compile(r"\btb_[A-Za-z0-9_-]{8,}")
REDACTED = "[redacted]"


def redact(text: str) -> str:
    """`text` with secrets replaced by `[redacted]`."""
    text = _SECRET_PARAM.sub(lambda m: f"{m.group(1)}={REDACTED}", text)
    text = _AUTH_HEADER.sub(lambda m: f"{m.group(1)}{(m.group(2) or '') + ' ' if m.group(2) else ''}{REDACTED}", text)
    return _API_TOKEN.sub("tb_" + REDACTED, text)


class RedactFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is logged as it is
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


class RepeatFilter(logging.Filter):
    """Identical lines within `window_s` after the first are dropped; the next line after the window says how
    many were."""

    def __init__(self, window_s: float = 10.0, max_keys: int = 1024):
        super().__init__()
        self.window_s = window_s
        self.max_keys = max_keys
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        key = (record.name, record.levelno, message)
        now = time.monotonic()
        with self._lock:
            first, dropped = self._seen.get(key, (0.0, -1))
            if dropped >= 0 and now - first < self.window_s:
                self._seen[key] = (first, dropped + 1)
                return False
            if len(self._seen) >= self.max_keys:
                self._seen.clear()
            self._seen[key] = (now, 0)
        if dropped > 0:
            record.msg, record.args = f"{message} (and {dropped} identical lines in the last {self.window_s:g} s)", None
        return True


_INSTALLED_ATTR = "_toonbooth_filters"


def install_log_filters(logger_names: tuple[str, ...] = ("", "uvicorn", "uvicorn.access", "uvicorn.error")) -> None:
    """Put one RedactFilter and one RepeatFilter on every handler of these loggers (idempotent)."""
    for name in logger_names:
        for handler in logging.getLogger(name).handlers:
            if getattr(handler, _INSTALLED_ATTR, False):
                continue
            handler.addFilter(RedactFilter())
            handler.addFilter(RepeatFilter())
            setattr(handler, _INSTALLED_ATTR, True)
