"""Small helpers for text meant for people."""

from __future__ import annotations

import re

from bsnas.errors import BsnasError

__all__ = ["plural", "regex", "setting_changes"]


def regex(pattern: str, flag: str) -> re.Pattern:
    """A regular expression the user gave with `flag`; an invalid one is a one-line BsnasError naming the flag."""
    try:
        return re.compile(pattern)
    except re.error as error:
        raise BsnasError(f"{flag} {pattern!r} is not a valid regular expression ({error}).") from None


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """`1 worker`, `2 workers` (`nouns` for irregular plurals)."""
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"


def setting_changes(held: dict, now: dict, label=str) -> str:
    """`key old, now new; ...` for every setting that differs between `held` and `now` (`label` names a key)."""
    return "; ".join(f"{label(key)} {held.get(key)!r}, now {now.get(key)!r}"
                     for key in sorted(set(held) | set(now)) if held.get(key) != now.get(key))
