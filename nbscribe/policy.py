"""When to connect again, when to roll over, which credential to use: the connection policy.

Pure decisions with the clock passed in, so each rule is tested alone; the transcriber's pump
thread asks them and acts.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

from .errors import ConnectError, StreamError, is_retryable
from .events import Begin

__all__ = ["Liveness", "ReconnectPolicy", "TokenSource"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class ReconnectPolicy:
    """Backoff between connection attempts, which errors are retried, and rollover.

    Parameters
    ----------
    enabled : bool
        Connect again after an unexpected close; ``False`` ends the session instead.
    first_delay, max_delay : float
        The wait before the second attempt, doubled after each failure, up to `max_delay`.
    rollover_seconds : float
        Open the next server session this long before the current one expires.
    """

    enabled: bool = True
    first_delay: float = 0.5
    max_delay: float = 10.0
    rollover_seconds: float = 60.0
    failures: int = 0
    next_attempt: float = 0.0

    def retryable(self, error: ConnectError | StreamError | None) -> bool:
        """Whether a session that ended with `error` may go on with a new connection."""
        if not self.enabled:
            return False
        return error is None or is_retryable(error.code)

    def may_attempt(self, now: float) -> bool:
        """Whether the backoff allows a connection attempt at `now`."""
        return now >= self.next_attempt

    def failed(self, now: float) -> float:
        """Record a failed attempt; return the delay before the next one."""
        self.failures += 1
        delay = min(self.max_delay, self.first_delay * 2 ** (self.failures - 1))
        self.next_attempt = now + delay
        return delay

    def connected(self) -> None:
        """Record a successful connection: the next failure starts the backoff afresh."""
        self.failures = 0
        self.next_attempt = 0.0

    def rollover_due(self, begin: Begin | None, wall_now: float) -> bool:
        """Whether the server session that began with `begin` is about to expire."""
        return bool(begin is not None and begin.expires_at
                    and wall_now > begin.expires_at - self.rollover_seconds)


class TokenSource:
    """The credential of each connection: a key, a fixed token, or a token factory.

    Parameters
    ----------
    token : str or callable or None
        A temporary token, or a function that mints one (tokens are single-use, so a factory
        gives every reconnect and rollover its own).
    """

    def __init__(self, token: str | Callable[[], str] | None) -> None:
        self._token = token
        self._used = False

    def next(self) -> str | None:
        """Return the token for the next connection (``None`` when a key is used)."""
        token = self._token
        if callable(token):
            return token()
        if token and self._used:
            logger.warning("reconnecting with the same temporary token, which the service "
                           "may refuse (tokens are single-use): pass token=<a function>")
        self._used = True
        return token


class Liveness:
    """Whether a connection is alive, from when its last frame came (pongs included).

    Parameters
    ----------
    ping_interval : float
        Ping after this long without a frame (0: never).
    timeout : float
        Dead after this long without a frame (0: never).
    now : float
        The clock's reading when the connection opened.
    """

    def __init__(self, ping_interval: float, timeout: float, now: float) -> None:
        self.ping_interval = ping_interval
        self.timeout = timeout
        self.last_heard = self.last_ping = now
        limits = [t for t in (ping_interval, timeout) if t]
        #: how often the reader should look (None: only when a frame comes)
        self.tick = min(0.5, max(0.02, min(limits) / 4)) if limits else None

    def heard(self, now: float) -> None:
        """Record a frame from the peer."""
        self.last_heard = now

    def quiet(self, now: float) -> float:
        """Return the seconds since the last frame."""
        return now - self.last_heard

    def dead(self, now: float) -> bool:
        """Whether nothing, not even a pong, came for longer than the timeout."""
        return bool(self.timeout) and self.quiet(now) > self.timeout

    def ping_due(self, now: float) -> bool:
        """Whether to ping now (and record that we do)."""
        since = min(self.quiet(now), now - self.last_ping)
        if not self.ping_interval or since < self.ping_interval:
            return False
        self.last_ping = now
        return True
