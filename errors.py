"""The one exception type for problems a user can fix (bad input, bad options).

The CLI turns it into a one-line message and exit code 2; anything else is a bug and keeps its traceback.
"""


class UsageError(Exception):
    """A problem with the user's input or options; the message names the file, column or option and the fix."""


def first_line(err: BaseException, secret: str | None = None) -> str:
    """An exception as one short line for a UsageError message (its type when it has no text).

    `secret` is replaced by *** before the line is cut, so no part of it can survive.
    """
    text = str(err).replace(secret, "***") if secret else str(err)
    return (text.strip() or type(err).__name__).splitlines()[0][:300]
