"""The one rule for a name that becomes a file or folder name: a run (`--name`), a search space (its trials are
named `<space>_t<N>`), a trial, an architecture that `bsnas export` writes.

Such a name is 1 to 100 letters, digits, '.', '_' or '-', starting with a letter or digit: one path component that
stays in the folder it is put in (no '/', no '..', no hidden or option-like name, no newline). A writer refuses a
name that breaks the rule (`check_name`); it never repairs it. Only names bsnas makes up itself (default run
names from a file name) are made to fit (`name_from`).
"""

from __future__ import annotations

import re

from bsnas.errors import BsnasError

__all__ = ["NAME_LENGTH", "check_name", "is_name", "name_from", "name_rule"]

NAME_LENGTH = 100
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def is_name(text: object, max_length: int = NAME_LENGTH) -> bool:
    """Whether `text` obeys the rule (with names of at most `max_length` characters)."""
    return isinstance(text, str) and len(text) <= max_length and _NAME.fullmatch(text) is not None


def name_rule(max_length: int = NAME_LENGTH) -> str:
    """The rule in words, for messages."""
    return f"1 to {max_length} letters, digits, '.', '_' or '-', starting with a letter or digit"


def check_name(name: object, where: str, what: str, why: str) -> str:
    """`name` when it obeys the rule; else a BsnasError `<where> <name>: <what> is <the rule> (<why>).`"""
    if not is_name(name):
        raise BsnasError(f"{where} {name!r}: {what} is {name_rule()} ({why}).")
    return name


def name_from(text: str, max_length: int = NAME_LENGTH) -> str:
    """A name that obeys the rule, made from `text` (e.g. a file name): every run of other characters becomes
    '_', leading '.', '_' and '-' are dropped, the rest is cut to `max_length` characters."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", text).lstrip("._-")[:max_length]
    return name or "run"
