"""Small helpers for text meant for people."""

from __future__ import annotations

__all__ = ["plural", "setting_changes"]


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """`1 worker`, `2 workers` (`nouns` for irregular plurals)."""
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"


def setting_changes(held: dict, now: dict, label=str, show=lambda key, value: repr(value)) -> str:
    """`key old, now new; ...` for every setting that differs between `held` and `now` (`label` names a key,
    `show(key, value)` writes a value)."""
    return "; ".join(f"{label(key)} {show(key, held.get(key))}, now {show(key, now.get(key))}"
                     for key in sorted(set(held) | set(now)) if held.get(key) != now.get(key))
