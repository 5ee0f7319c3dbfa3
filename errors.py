"""The exception types the CLI turns into one line instead of a traceback.

`UsageError` (input or options a user can fix) exits with code 2, `StageError` (a run that cannot go
on, with a message saying what to do) with code 1; anything else is a bug and keeps its traceback.
"""


class UsageError(Exception):
    """A problem with the user's input or options; the message names the file, column or option and the fix."""


class StageError(RuntimeError):
    """A run that cannot go on for a reason outside its input (e.g. verifier workers that keep dying)."""


def first_line(err: BaseException, secret: str | None = None) -> str:
    """An exception as one short line for a UsageError message (its type when it has no text).

    `secret` is replaced by *** before the line is cut, so no part of it can survive.
    """
    text = str(err).replace(secret, "***") if secret else str(err)
    return (text.strip() or type(err).__name__).splitlines()[0][:300]
