"""The one exception type for problems a user can fix (bad input, bad options).

The CLI turns it into a one-line message and exit code 2; anything else is a bug and keeps its traceback.
"""


class UsageError(Exception):
    """A problem with the user's input or options; the message names the file, column or option and the fix."""
