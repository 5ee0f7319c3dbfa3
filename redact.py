"""One rule for everything r1distill logs, writes or uploads: credentials never leave the process, and
text from a server or a model cannot drive the terminal.

Credentials come in three shapes, and each is hidden (`***`) wherever it would be recorded:

- In a URL: a password (`http://user:secret@host/v1`) or a key in its query string (`?api_key=...`).
  Manifests, cards, results.json, pipeline.json and run.json record command lines and settings, and
  `push` uploads some of them, so every URL goes through `redact_url`. A password is often pasted
  unencoded, with `/`, `#`, `?` or `:` in it (`http://user:pa/ss#w?d@host/v1`), which a standard URL
  parser splits at the first `/`: here the credentials are everything between `://` and the LAST `@`
  (an `@` anywhere else in a base URL must be written `%40`). All query values are hidden, not only
  those with telling names: hiding `api-version=2024-06-01` costs nothing, a key under an unexpected
  name would leak.
- In a setting whose name says it is one (`hub_token`, `api_key`, `password`, `secret`, at any depth
  of nested settings, such as rl's `trl:` passthrough): its value is hidden (`redact_settings`).
- In the environment: the value of a variable whose name says it is a credential (`HF_TOKEN`, the
  one `--api-key-env` names, `AWS_SECRET_ACCESS_KEY`) is scrubbed from every text recorded, should
  it appear there (`redact_text`).

Server replies and model output are untrusted text: before one is shown or written in an error,
`strip_controls` removes ANSI escape sequences and control characters, so a reply cannot recolour,
retitle or rewrite the terminal. Every pattern here is linear in the text it scans.
"""

from __future__ import annotations

import os
import re
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

HIDDEN = "***"
_URL = re.compile(r"https?://[^\s'\"<>]+", re.IGNORECASE)
_URL_START = re.compile(r"https?://", re.IGNORECASE)
# Setting and variable names that hold a credential: hub_token, api_key, HF_TOKEN, DB_PASSWORD, client_secret...
_SECRET_NAME = re.compile(r"(?:^|_)(?:token|secret|password|passwd|credentials?|api_?key|access_?key|private_?key|secret_?key|pat)$", re.IGNORECASE)
# ...but not the tokenizer's special tokens (eos_token: "<|im_end|>"), which are settings like any other.
_SPECIAL_TOKEN = re.compile(r"(?:^|_)(?:eos|bos|pad|unk|sep|cls|mask)_token$", re.IGNORECASE)
MIN_ENV_SECRET = 8
"""Shortest environment value scrubbed: shorter ones ("1", "true") would garble every text they occur in."""
MIN_URL_SECRET = 4
"""Shortest URL part scrubbed from texts that echo it ("v=1" is not a secret worth garbling digits for)."""
# ANSI escape sequences (CSI `ESC [ ... final`, OSC `ESC ] ... BEL`, two-byte `ESC x`) and the other C0/C1
# control characters but newline and tab. The classes of the CSI parts are disjoint: linear.
_CONTROLS = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]?|[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def split_credentials(url: str) -> tuple[str, str | None, str]:
    """(`scheme://`, the credentials before the host or None, the rest), the credentials running to the last `@`.

    >>> split_credentials("http://user:pa/ss#w?d@host:8000/v1")
    ('http://', 'user:pa/ss#w?d', 'host:8000/v1')
    >>> split_credentials("https://host/v1")
    ('https://', None, 'host/v1')
    """
    scheme, separator, rest = url.partition("://")
    if not separator:
        return "", None, url
    at = rest.rfind("@")
    if at < 0:
        return scheme + separator, None, rest
    return scheme + separator, rest[:at], rest[at + 1 :]


def credentials(url: str) -> tuple[str, str] | None:
    """The (user, password) a URL carries, percent-decoded (as HTTP basic auth sends them), or None.

    >>> credentials("http://agent:s3/cr#et@127.0.0.1:8000/v1")
    ('agent', 's3/cr#et')
    >>> credentials("http://bob:p%40ss@h/v1"), credentials("http://h/v1")
    (('bob', 'p@ss'), None)
    """
    userinfo = split_credentials(url)[1]
    if userinfo is None:
        return None
    user, _, password = userinfo.partition(":")
    return unquote(user), unquote(password)


def without_credentials(url: str) -> str:
    """`url` with its credentials taken out: what the request goes to.

    >>> without_credentials("http://agent:s3/cr#et@127.0.0.1:8000/v1?x=1")
    'http://127.0.0.1:8000/v1?x=1'
    """
    scheme, _, rest = split_credentials(url)
    return scheme + rest


def redact_url(url: str) -> str:
    """`url` with its credentials and query values replaced by ***.

    >>> redact_url("http://user:secret@gpu-7:8000/v1")
    'http://***@gpu-7:8000/v1'
    >>> redact_url("http://user:pa/ss#w?d@gpu-7:8000/v1")
    'http://***@gpu-7:8000/v1'
    >>> redact_url("https://api.example.com/v1?api_key=sk-123&api-version=2024")
    'https://api.example.com/v1?api_key=***&api-version=***'
    >>> redact_url("HTTP://localhost:8000/v1")
    'http://localhost:8000/v1'
    """
    scheme, userinfo, rest = split_credentials(url)
    try:
        parts = urlsplit(scheme + rest)
    except ValueError:  # "http://[::1/v1": not a URL it can take apart, so nothing of it is shown
        return f"{scheme}{HIDDEN}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(name, HIDDEN) for name, _ in pairs], safe="*") if pairs else HIDDEN
    netloc = parts.netloc if userinfo is None else f"{HIDDEN}@{parts.netloc}"
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def url_secrets(url: str) -> list[str]:
    """The secret parts of a URL (password, user, query values) as written, decoded and percent-encoded,
    to scrub from texts that echo them (a server's error message); longest first.

    >>> url_secrets("http://bob:s3/cr#et@h/v1?key=abcd")
    ['s3%2Fcr%23et', 's3/cr%23et', 's3/cr#et', 'abcd']
    """
    scheme, userinfo, rest = split_credentials(url)
    found: set[str] = set()
    if userinfo is not None:
        user, _, password = userinfo.partition(":")
        for written in (user, password):
            decoded = unquote(written)
            found |= {written, decoded, quote(decoded, safe=""), quote(decoded)}
    try:
        query = urlsplit(scheme + rest).query
    except ValueError:
        query = ""
    found |= {value for _, value in parse_qsl(query)}
    return sorted((s for s in found if len(s) >= MIN_URL_SECRET), key=lambda s: (-len(s), s))


def secret_name(name: str) -> bool:
    """A setting or environment variable whose name says it holds a credential.

    >>> [secret_name(n) for n in ("hub_token", "api-key", "HF_TOKEN", "AWS_SECRET_ACCESS_KEY", "password", "client_secret")]
    [True, True, True, True, True, True]
    >>> [secret_name(n) for n in ("max_tokens", "eos_token", "api_key_env", "tokenizer", "seed")]
    [False, False, False, False, False]
    """
    name = name.replace("-", "_")
    return bool(_SECRET_NAME.search(name)) and not _SPECIAL_TOKEN.search(name)


def secret_variable(name: str) -> bool:
    """An environment variable whose value is scrubbed: one named like a credential, or any `*_KEY`,
    which is what `--api-key-env` accepts (`DEEPSEEK_KEY` holds a key although no setting would be named so).

    >>> [secret_variable(n) for n in ("HF_TOKEN", "DEEPSEEK_KEY", "OPENAI_API_KEY", "HOME", "MAX_TOKENS", "KEYBOARD")]
    [True, True, True, False, False, False]
    """
    return secret_name(name) or name.upper().endswith("_KEY")


def env_secrets() -> list[str]:
    """The values of the environment variables named like credentials (HF_TOKEN, the --api-key-env
    variable, ...), longest first, read now: a key exported mid-session is scrubbed too."""
    found = {value for name, value in os.environ.items() if secret_variable(name) and len(value) >= MIN_ENV_SECRET}
    return sorted(found, key=len, reverse=True)


def scrub(text: str, secrets: list[str]) -> str:
    """`text` with each of `secrets` (longest first, so no part of a longer one survives) replaced by ***.

    >>> scrub("key sk-abc123 and sk-abc", ["sk-abc123", "sk-abc"])
    'key *** and ***'
    """
    for secret in secrets:
        text = text.replace(secret, HIDDEN)
    return text


def redact_text(text: str) -> str:
    """`text` (a command line, an error message, a log line) with every http(s) URL in it redacted and
    every credential of the environment scrubbed.

    >>> redact_text("generate in.jsonl --base-url=Http://u:p@h/v1?key=abc -o out")
    'generate in.jsonl --base-url=http://***@h/v1?key=*** -o out'
    """
    return _URL.sub(lambda match: redact_url(match.group(0)), scrub(text, env_secrets()))


def redact_arg(arg: str) -> str:
    """One command-line argument or setting: from its first `http(s)://` to its end it is one URL (a
    password may hold a space or a quote that would end a URL in free text), before it any text.

    >>> redact_arg("--base-url=http://u:it's a secret@h/v1")
    '--base-url=http://***@h/v1'
    """
    start = _URL_START.search(arg)
    if start is None:
        return redact_text(arg)
    return redact_text(arg[: start.start()]) + redact_url(scrub(arg[start.start() :], env_secrets()))


def redact_command(command: list[str]) -> list[str]:
    """A recorded command line (`sys.argv`), each argument through `redact_arg`.

    >>> redact_command(["r1distill", "eval", "--base-url", "http://user:pa/ss@h/v1"])
    ['r1distill', 'eval', '--base-url', 'http://***@h/v1']
    """
    return [redact_arg(arg) for arg in command]


def redact_settings(value):
    """Settings (nested dicts and lists of them, as `asdict` makes) as they may be recorded: the value of a
    key named like a credential hidden, every text through `redact_arg`.

    >>> redact_settings({"model": "m", "trl": {"hub_token": "hf_abc", "model_init_kwargs": {"token": "t"}},
    ...                  "base_urls": ["http://u:p@h/v1"], "eos_token": "<|im_end|>", "hub_private_repo": None})
    {'model': 'm', 'trl': {'hub_token': '***', 'model_init_kwargs': {'token': '***'}}, 'base_urls': ['http://***@h/v1'], 'eos_token': '<|im_end|>', 'hub_private_repo': None}
    """
    if isinstance(value, dict):
        return {key: HIDDEN if secret_name(str(key)) and value[key] is not None and not isinstance(value[key], bool)
                else redact_settings(value[key]) for key in value}
    if isinstance(value, (list, tuple)):
        return [redact_settings(item) for item in value]
    if isinstance(value, str):
        return redact_arg(value)
    return value


def strip_controls(text: str) -> str:
    """Untrusted text (a server's error, a model's output) safe to print: ANSI escape sequences and
    control characters removed, newlines and tabs kept.

    >>> strip_controls("\\x1b[31mbad\\x1b[0m key\\x1b]0;pwned\\x07\\r\\x08!")
    'bad key!'
    """
    return _CONTROLS.sub("", text)


# Credentials of other services, which --api-key-env would send to whatever host --base-url names.
OTHER_CREDENTIALS = frozenset({
    "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HUGGINGFACE_HUB_TOKEN", "HUGGINGFACE_TOKEN", "HF_API_TOKEN", "GITHUB_TOKEN", "GH_TOKEN",
    "GITLAB_TOKEN", "CI_JOB_TOKEN", "NPM_TOKEN", "PYPI_TOKEN", "PYPI_API_TOKEN", "WANDB_API_KEY", "KAGGLE_KEY", "CODECOV_TOKEN",
    "SLACK_TOKEN", "SLACK_BOT_TOKEN", "VAULT_TOKEN", "DOCKER_TOKEN", "CLOUDFLARE_API_TOKEN", "DIGITALOCEAN_TOKEN", "HEROKU_API_KEY",
})
OTHER_CREDENTIAL_PREFIXES = ("AWS_", "GITHUB_", "ACTIONS_", "AZURE_CLIENT_", "GOOGLE_APPLICATION_", "SSH_", "GPG_")


def api_key_env_problem(name: str) -> str | None:
    """Why --api-key-env NAME may not be sent to a --base-url, or None: the variable must be named like that
    service's API key, and not be a known credential of another service (the Hub, AWS, GitHub...).

    >>> [api_key_env_problem(n) is None for n in ("OPENAI_API_KEY", "DEEPSEEK_API_KEY", "MY_API_KEY", "VLLM_TOKEN")]
    [True, True, True, True]
    >>> [api_key_env_problem(n) is None for n in ("HF_TOKEN", "AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN", "HOME", "PATH")]
    [False, False, False, False, False]
    """
    upper = name.upper()
    if upper in OTHER_CREDENTIALS or upper.startswith(OTHER_CREDENTIAL_PREFIXES):
        return (
            f"--api-key-env {name}: is another service's credential, and the key is sent to every --base-url; "
            "put the server's key in a variable of its own, e.g. export MY_SERVER_API_KEY=..."
        )
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) or not upper.endswith(("_KEY", "_TOKEN", "APIKEY")):
        return f"--api-key-env {name}: name the variable that holds the server's API key, ending in _KEY or _TOKEN (e.g. OPENAI_API_KEY)"
    return None
