"""The one exception type for mistakes a user can fix (bad files, names, flags)."""

from __future__ import annotations

__all__ = ["BsnasError"]


class BsnasError(ValueError):
    """A user error: the message is one sentence naming the file, the field and what is allowed.

    The CLI prints it on one line to stderr and exits with status 2; it never shows a traceback.
    """
