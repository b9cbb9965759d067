"""User-facing errors.

Everything a user can get wrong (a name, a value, a file) raises :class:`SafestressError` with a
one-line message. The command line prints that line and exits non-zero; it never shows a
traceback for these, and it raises them before anything is written to the store.
"""

from __future__ import annotations


class SafestressError(Exception):
    """A problem with the user's input or environment, described in one line."""


class UnknownNameError(SafestressError, KeyError):
    """A registry lookup for a name that is not registered."""

    def __str__(self) -> str:  # KeyError would otherwise wrap the message in quotes
        return str(self.args[0]) if self.args else ""
