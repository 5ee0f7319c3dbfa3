"""Where the OpenAI-compatible backend sends each attempt: the base URLs (replicas), which of them are
in service, and when one that left is probed again (see `openai_compat.py`, "Replicas").

A replica that refuses connections, or fails EJECT_AFTER times in a row while another one serves,
leaves the rotation (logged at WARNING the first time) and is probed by one real request after a
backoff that doubles; a reply below 500 counts as a sign of life, whatever it said of the request.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import logging
import time
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from r1distill.backends import failure_hint
from r1distill.redact import credentials, redact_url, url_secrets, without_credentials

log = logging.getLogger(__name__)

EJECT_AFTER = 5
"""Failed attempts in a row after which a replica leaves the rotation, if another one serves."""


@dataclass(slots=True)
class Failure:
    """Why one attempt failed, and what that says about the request and the replica."""

    reason: str
    """Short code that starts the row's error text: http_503, timeout, connection_refused, ..."""
    detail: str
    permanent: bool = False
    """The server refused this request as it is (4xx other than 408, 409, 425, 429): retrying cannot help."""
    answered: bool = False
    """The server replied with a status below 500: it is up, whatever it thought of the request."""
    unreachable: bool = False
    """No connection could be opened: nothing listens there, or the host is unknown."""
    retry_after: float | None = None

    def text(self) -> str:
        return f"{self.reason}: {self.detail}"


class Replica:
    """One base URL: where its requests go, how they authenticate, and whether it is in the rotation."""

    def __init__(self, url: str, api_key: str | None) -> None:
        # The credentials run to the last `@` (see redact.py): a password pasted unencoded, with a `/` or
        # `#` in it, still leaves the host, and never reaches the request line.
        parts = urlsplit(without_credentials(url))
        self.label = redact_url(url)
        self.prefix = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
        self.query = f"?{parts.query}" if parts.query else ""
        self.headers = {"Content-Type": "application/json"}
        self.secrets = url_secrets(url)
        user_password = credentials(url)
        if user_password is not None and any(user_password):
            # A user:password in the URL is HTTP basic auth (a proxy in front of the server); it replaces the key.
            basic = base64.b64encode(":".join(user_password).encode()).decode()
            self.headers["Authorization"] = f"Basic {basic}"
            self.secrets.append(basic)
        elif api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
            self.secrets.append(api_key)
        self.in_flight = 0
        self.closes_connections = False  # seen an HTTP/1.0 or Connection: close reply
        self.failures = 0  # failed attempts in a row
        self.live = True
        self.probe_at = 0.0  # when an out replica may be probed again (time.monotonic)
        self.probes = 0  # failed probes since it left the rotation
        self.probing = False
        self.warned = False
        self.problem: Failure | None = None  # why it last left the rotation

    def url(self, path: str) -> str:
        return f"{self.prefix}{path}{self.query}"


class Rotation:
    """The replicas in service, the ones out of it, and when to probe those again."""

    def __init__(self, replicas: list[Replica], retry_delay: float, max_retry_delay: float, max_probes: int) -> None:
        self.replicas = replicas
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.max_probes = max_probes
        self._turn = itertools.count()
        self._changed: asyncio.Event | None = None

    async def pick(self) -> tuple[Replica, bool] | None:
        """A replica for the next attempt and whether it is a probe; waits while none serves, None once all are given up."""
        while True:
            now = time.monotonic()
            live = []
            for replica in self.replicas:
                if replica.live:
                    live.append(replica)
                elif not replica.probing and replica.probe_at <= now:
                    replica.probing = True
                    return replica, True
            if len(live) == 1:
                return live[0], False
            if live:
                least = min(replica.in_flight for replica in live)
                candidates = [replica for replica in live if replica.in_flight == least]
                return candidates[next(self._turn) % len(candidates)], False
            if self.given_up():
                return None
            if self._changed is None:
                self._changed = asyncio.Event()
            waits = [replica.probe_at - now for replica in self.replicas if not replica.probing]
            try:
                await asyncio.wait_for(self._changed.wait(), timeout=min(waits) if waits else None)
            except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
                continue

    def given_up(self) -> bool:
        """Every replica is out and has failed all its probes."""
        return all(not r.live and not r.probing and r.probes > self.max_probes for r in self.replicas)

    def problem(self) -> Failure:
        """Why the replicas left the rotation (the most recent one's reason)."""
        return next(r.problem for r in reversed(self.replicas) if r.problem is not None)

    def succeeded(self, replica: Replica, probe: bool) -> None:
        replica.failures = 0
        if probe:
            replica.probing = False
        if not replica.live:
            replica.live = True
            replica.probes = 0
            log.info("%s answers again; back in the rotation", replica.label)
            self._notify()

    def failed(self, replica: Replica, probe: bool, failure: Failure) -> None:
        if failure.answered:
            self.succeeded(replica, probe)
            return
        replica.failures += 1
        if probe:
            replica.probing = False
            replica.probes += 1
            self.take_out(replica, failure)
        elif replica.live and (failure.unreachable or (replica.failures >= EJECT_AFTER and self._another_live(replica))):
            self.take_out(replica, failure)

    def _another_live(self, replica: Replica) -> bool:
        return any(other.live for other in self.replicas if other is not replica)

    def take_out(self, replica: Replica, failure: Failure) -> None:
        replica.live = False
        replica.problem = failure
        delay = min(self.max_retry_delay, self.retry_delay * 2**replica.probes)
        replica.probe_at = time.monotonic() + delay
        if replica.warned:
            log.info("%s is out of the rotation again (%s); next probe in %.1f s", replica.label, failure.reason, delay)
        else:
            replica.warned = True
            hint = failure_hint(failure.reason)
            log.warning(
                "%s: %s%s; out of the rotation, probed again with backoff",
                replica.label, failure.text()[:200], f" ({hint})" if hint else "",
            )
        self._notify()

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None
