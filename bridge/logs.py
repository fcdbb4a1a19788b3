"""Structured logging: one line per event, key=value or JSON, with secrets scrubbed.

Our own messages are written as ``event=... key=value`` pairs. Third-party loggers that would
print URLs containing the bot token (httpx) or query strings (aiohttp's access log) are turned
down, and a filter replaces any configured secret that still reaches a handler.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Iterable

from bridge.networks import registered

_PAIR = re.compile(r"(\w+)=('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|\S+)")


class SecretFilter(logging.Filter):
    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s and len(s) >= 8]

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        scrubbed = message
        for secret in self.secrets:
            scrubbed = scrubbed.replace(secret, "***")
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        return True


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        line = f"ts={ts} level={record.levelname.lower()} logger={record.name} {record.getMessage()}"
        if record.exc_info:
            line += " exc=" + json.dumps(self.formatException(record.exc_info))
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        out: dict[str, object] = {
            "ts": record.created,
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        pairs = _PAIR.findall(message)
        if pairs and message.startswith(pairs[0][0] + "="):
            for key, value in pairs:
                out[key] = value.strip("'\"")
        else:
            out["msg"] = message
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


class ScrubbingFormatter(logging.Formatter):
    """Scrubs the whole formatted line, tracebacks included (the filter sees only the message)."""

    def __init__(self, inner: logging.Formatter, secrets: Iterable[str]) -> None:
        super().__init__()
        self.inner = inner
        self.secrets = [s for s in secrets if s and len(s) >= 8]

    def format(self, record: logging.LogRecord) -> str:
        line = self.inner.format(record)
        for secret in self.secrets:
            line = line.replace(secret, "***")
        return line


def setup_logging(level: str = "INFO", fmt: str = "keyvalue", secrets: Iterable[str] = ()) -> None:
    secrets = list(secrets)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        ScrubbingFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter(), secrets)
    )
    handler.addFilter(SecretFilter(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    quiet = "INFO" if level == "DEBUG" else "WARNING"
    libraries = [name for spec in registered() for name in spec.library_loggers]
    for name in ("httpx", "httpcore", "aiohttp.access", "mau", *libraries, "aiosqlite", "houseline.db"):
        logging.getLogger(name).setLevel(
            "WARNING" if name in ("httpx", "httpcore", "aiohttp.access") else quiet
        )
