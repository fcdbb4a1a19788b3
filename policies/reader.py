"""Reading a loaded YAML document key path by key path, collecting every problem.

Each problem starts with its key path and says what is wrong and how to fix it, so an operator
fixes the file in one pass. The bridge's config, each network's section and the policy
document all check values with :class:`Checks`, so a wrong value is worded the same way
wherever it is. It lives beside the policy model because the policy package imports nothing
from the rest of the project.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

__all__ = ["MISSING", "SECRET_HOWTO", "Checks", "ConfigReader", "value_kind"]

SECRET_HOWTO = 'generate one with: python -c "import secrets; print(secrets.token_urlsafe(32))"'


MISSING = object()


def value_kind(value: Any) -> str:
    """A value as a problem names it: "the text 'yes'", "the number 80", "a list"."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"{str(value).lower()} (true/false)"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the text '{value}'"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


class Checks:
    """Checks of one value at a key path. Each returns None when it reported a problem, so
    parsing carries on and every problem is found in one pass. Needs ``self.problems``."""

    problems: list[str]

    def bad(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def unknown_key(self, path: str, key: str, keys: tuple[str, ...]) -> None:
        close = difflib.get_close_matches(key, keys, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        self.bad(path, f"unknown key; {hint}the allowed keys are {', '.join(keys)}")

    def check_text(self, path: str, value: Any, how: str) -> str | None:
        if not isinstance(value, str):
            self.bad(path, f"expected text, got {value_kind(value)}; {how}".rstrip("; "))
            return None
        if not value.strip():
            self.bad(path, f"is empty; {how or 'give it a value'}")
            return None
        return value

    def check_boolean(self, path: str, value: Any) -> bool | None:
        if isinstance(value, bool):
            return value
        self.bad(path, f"expected true or false, got {value_kind(value)}; write true or false (no quotes)")
        return None

    def check_integer(self, path: str, value: Any, low: int, high: int) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int):
            self.bad(
                path,
                f"expected a whole number from {low} to {high}, got {value_kind(value)}; write a number without quotes",
            )
            return None
        if not low <= value <= high:
            self.bad(path, f"{value} is out of range; use a number from {low} to {high}")
            return None
        return value


@dataclass
class ConfigReader(Checks):
    """Walks the raw mapping, collecting problems instead of stopping at the first. Networks
    read their own sections with it (``NetworkSpec.parse_config``), adding their key hints."""

    data: dict[str, Any]
    problems: list[str] = field(default_factory=list)
    #: Key path -> how to fix it, used in "missing" and "is empty" problems.
    hints: dict[str, str] = field(default_factory=dict)

    def get(self, path: str, default: Any = MISSING) -> Any:
        node: Any = self.data
        walked: list[str] = []
        for part in path.split("."):
            if not isinstance(node, dict):
                self.problems.append(
                    f"{'.'.join(walked)}: expected a mapping of keys, got {value_kind(node)}; "
                    f"write it as 'key: value' lines indented under '{walked[-1]}:'"
                )
                return None
            walked.append(part)
            if part not in node or node[part] is None:
                if default is MISSING:
                    self.problems.append(f"{path}: missing; {self.hints.get(path, 'add it')}")
                    return None
                return default
            node = node[part]
        return node

    def string(self, path: str, default: Any = MISSING, *, allow_empty: bool = False) -> Any:
        value = self.get(path, default)
        if value is None or value is default:
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if allow_empty and isinstance(value, str):
            return value
        return self.check_text(path, value, self.hints.get(path, ""))

    def integer(self, path: str, default: Any = MISSING, *, low: int, high: int) -> Any:
        value = self.get(path, default)
        if value is None or value is default:
            return value
        return self.check_integer(path, value, low, high)

    def boolean(self, path: str, default: Any = MISSING) -> Any:
        value = self.get(path, default)
        if value is None:
            return value
        return self.check_boolean(path, value)

    def url(self, path: str, default: Any = MISSING, *, schemes: tuple[str, ...] = ("http", "https")) -> Any:
        value = self.string(path, default)
        if not value or value is default:
            return value
        parsed = urlparse(value)
        if parsed.scheme not in schemes or not parsed.netloc:
            self.problems.append(
                f"{path}: '{value}' is not a valid URL; write it as "
                f"{' or '.join(s + '://host:port' for s in schemes)}"
            )
            return None
        return value.rstrip("/")
