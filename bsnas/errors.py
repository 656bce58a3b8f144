"""The exceptions the CLI turns into one line: a mistake a user can fix (bad files, names, flags), a storage that
failed under a command, and a stop by SIGTERM."""

from __future__ import annotations

__all__ = ["BsnasError", "StorageFault", "Terminated", "shown"]


class BsnasError(ValueError):
    """A user error: the message is one sentence naming the file, the field and what is allowed.

    The CLI prints it on one line to stderr and exits with status 2; it never shows a traceback.
    """


class StorageFault(Exception):
    """The study's storage failed under a command (the database went away, a file is damaged): not the user's
    mistake. The message is one sentence saying what failed and how to go on; the CLI exits with status 1."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (a service manager's stop), raised so that a command stops as on Ctrl-C; the CLI exits with 143."""


def shown(text: object) -> str:
    """A file name or value from the user as it goes into a one-line message: as it is when printable, else quoted
    (a newline in a file name must not break the line)."""
    text = str(text)
    return text if text.isprintable() else repr(text)
