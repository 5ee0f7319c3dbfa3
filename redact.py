"""Credentials never leave the process: URLs and command lines made safe to log, write and upload.

A base URL can carry a password (`http://user:secret@host/v1`) or a key in its query string
(`?api_key=...`, `?key=...`, `?token=...`). Manifests and dataset cards record the command line and
`push` uploads them, so every URL that is logged or written goes through `redact_url` first. All
query values are hidden, not only the ones with telling names: a value that is not a secret
(`api-version=2024-06-01`) costs nothing to hide, a key under an unexpected name would leak.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

HIDDEN = "***"
_URL = re.compile(r"https?://[^\s'\"<>]+")


def redact_url(url: str) -> str:
    """`url` with its user, password and query values replaced by ***.

    >>> redact_url("http://user:secret@gpu-7:8000/v1")
    'http://***@gpu-7:8000/v1'
    >>> redact_url("https://api.example.com/v1?api_key=sk-123&api-version=2024")
    'https://api.example.com/v1?api_key=***&api-version=***'
    >>> redact_url("http://localhost:8000/v1")
    'http://localhost:8000/v1'
    """
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{HIDDEN}@{netloc.rsplit('@', 1)[1]}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(name, HIDDEN) for name, _ in pairs], safe="*") if pairs else HIDDEN
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str) -> str:
    """`text` with every http(s) URL in it redacted (a command line, an error message).

    >>> redact_text("generate in.jsonl --base-url=http://u:p@h/v1?key=abc -o out")
    'generate in.jsonl --base-url=http://***@h/v1?key=*** -o out'
    """
    return _URL.sub(lambda match: redact_url(match.group(0)), text)


def url_secrets(url: str) -> list[str]:
    """The secret parts of a URL (password, user, query values), to scrub from texts that echo them.

    >>> url_secrets("http://bob:hunter2@h/v1?key=abc")
    ['hunter2', 'bob', 'abc']
    """
    parts = urlsplit(url)
    found = [value for value in (parts.password, parts.username) if value]
    found += [value for _, value in parse_qsl(parts.query) if value]
    return found
