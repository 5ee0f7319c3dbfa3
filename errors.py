"""The exception types the CLI turns into one line instead of a traceback.

`UsageError` (input or options a user can fix) exits with code 2, `StageError` (a run that cannot go
on, with a message saying what to do) with code 1; anything else is a bug and keeps its traceback.
`missing_training` is the one line for a command that needs the training extra where it is not installed.
"""

import importlib.util

from r1distill.redact import redact_text, strip_controls

# What `pip install 'r1distill[train]'` brings (pyproject.toml): the local model, sft and rl.
TRAINING_LIBRARIES = ("torch", "transformers", "accelerate", "trl", "peft")


class UsageError(Exception):
    """A problem with the user's input or options; the message names the file, column or option and the fix."""


class StageError(RuntimeError):
    """A run that cannot go on for a reason outside its input (e.g. verifier workers that keep dying)."""


def first_line(err: BaseException, secret: str | None = None) -> str:
    """An exception as one short line for a message (its type when it has no text), safe to show and record.

    Its text often quotes a server or a model (a Hub refusal, a library echoing a URL): credentials are
    redacted and ANSI escapes and control characters removed (see redact.py), and `secret` is replaced
    by *** before the line is cut, so no part of it can survive.

    >>> first_line(ValueError("\\x1b[31mrefused\\x1b[0m by http://u:pw@h/v1\\nmore"))
    'refused by http://***@h/v1'
    """
    text = str(err).replace(secret, "***") if secret else str(err)
    return strip_controls(redact_text(text.strip() or type(err).__name__).splitlines()[0])[:300]


def missing_training(what: str, libraries: tuple[str, ...] = TRAINING_LIBRARIES) -> str | None:
    """The problem line when `what` needs a library of the training extra that is not installed, else None.

    `pip install r1distill` is the core (generate over a server, filter, eval of given completions,
    report, run, push); find_spec looks without importing, so the check costs nothing either way.

    >>> missing_training("sft", ("surely_not_installed",))
    "sft needs the training extra: pip install 'r1distill[train]'"
    """
    if all(importlib.util.find_spec(name) is not None for name in libraries):
        return None
    return f"{what} needs the training extra: pip install 'r1distill[train]'"
