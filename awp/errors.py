"""Expected failures and how the command line reports them.

Every mistake a user can make (a missing file, an unknown preset, a nonsensical hyperparameter)
raises a :class:`UserError` with a one-line message. The console command turns it into that one
line on stderr and a non-zero exit status (2 for bad usage); a traceback appears only with
``--debug``. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations


class UserError(Exception):
    """A failure the user can fix; the message is shown as one line, exit status 1."""

    exit_code = 1


class UsageError(UserError):
    """Bad usage of a command or API (unknown name, wrong type, bad range); exit status 2."""

    exit_code = 2


def require(condition: bool, message: str, error: type[UserError] = UsageError) -> None:
    """Raise ``error(message)`` unless ``condition`` holds: the one validation helper."""
    if not condition:
        raise error(message)


def require_all(checks: "list[tuple[bool, str]]", error: type[UserError] = UsageError) -> None:
    """:func:`require` for a table of (condition, message): the first that fails is raised."""
    for condition, message in checks:
        require(condition, message, error)


def one_line(exc: BaseException, limit: int | None = None) -> str:
    """The exception's message on one line: its lines joined with ' | ' (the exception's type when
    it has no message), cut to ``limit`` characters when given. The one formatter of every message
    that quotes a library's error."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = " | ".join(lines) or type(exc).__name__
    return text if limit is None or len(text) <= limit else text[: limit - 3] + "..."
