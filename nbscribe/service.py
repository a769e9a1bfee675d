"""Which service the audio goes to, with which credential: decided once, in one place.

A `Service` is resolved from what the user gave (a URL, a key, a token or token factory, or
nothing) when it is made, and it owns what it starts: the embedded local server, when there is
no key. Several transcribers may share one service (`MultiTranscriber`, the panel across its
sessions); whoever calls `Service.start` calls `Service.stop`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from .errors import ConfigError
from .policy import TokenSource
from .protocol import DEFAULT_URL, redact_url

__all__ = ["Service", "resolve_api_key"]

logger = logging.getLogger(__name__)


def resolve_api_key(api_key: str | None) -> str | None:
    """Return `api_key`, else ``$ASSEMBLYAI_API_KEY``, else ``None`` (blank counts as unset)."""
    key = api_key if api_key is not None else os.environ.get("ASSEMBLYAI_API_KEY")
    return key.strip() or None if key else None


class Service:
    """A v3 streaming service: AssemblyAI, a server at a URL, or the embedded local server.

    Parameters
    ----------
    url : str, optional
        A v3 endpoint. Default: AssemblyAI when there is a key or token, else the local server.
    api_key : str, optional
        AssemblyAI key (default ``$ASSEMBLYAI_API_KEY``). Never shown; never sent to the local
        server.
    token : str or callable, optional
        A temporary token, or a function that mints one (each connection gets its own).
    local : bool, optional
        ``True`` forces the embedded local server even when a key is configured; ``False``
        forbids it (an error when there is neither a key nor a URL).
    model : str, optional
        The local server's model (a CTranslate2 folder or a faster-whisper name).
    """

    def __init__(self, url: str | None = None, *, api_key: str | None = None,
                 token: str | Callable[[], str] | None = None, local: bool | None = None,
                 model: str | None = None) -> None:
        key = resolve_api_key(api_key)
        if local is None:
            local = url is None and key is None and token is None
        if local and url is not None:
            raise ConfigError("local=True starts nbscribe's own server: do not give url= too")
        if not local and url is None and key is None and token is None:
            raise ConfigError("no API key: set ASSEMBLYAI_API_KEY, pass api_key= or token=, or "
                              "use the local server (local=True)")
        self.local = bool(local)
        self._url = url
        self._api_key = None if self.local else key
        self._tokens = TokenSource(None if self.local else token)
        self.model = model
        self.server: Any = None  # the embedded LocalServer, while started
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<Service {self.describe()}>"

    @property
    def url(self) -> str:
        """The WebSocket URL (for the local server: once started)."""
        if self.local:
            if self.server is None:
                raise ConfigError("the local server is not running: call start() first")
            return str(self.server.url)
        return self._url or DEFAULT_URL

    @property
    def started(self) -> bool:
        """Whether the service is ready for connections (a remote one always is)."""
        return not self.local or self.server is not None

    def describe(self) -> str:
        """Return a short name of where audio goes (never containing a key or token)."""
        if self.local:
            server = self.server
            return server.describe() if server is not None else "the local Whisper server"
        return redact_url(self._url or DEFAULT_URL)

    def credentials(self) -> tuple[str | None, str | None]:
        """Return the (API key, token) for the next connection; ``(None, None)`` when local."""
        if self.local:
            return None, None
        return self._api_key, self._tokens.next()

    def start(self, fast: bool = False) -> Service:
        """Start the embedded local server if this service is local and it is not running.

        Parameters
        ----------
        fast : bool
            Accept audio faster than real time (files sent in fast mode).
        """
        with self._lock:
            if self.local and self.server is None:
                from .server.embedded import start_local_server

                self.server = start_local_server(fast=fast, model=self.model)
                logger.info("no API key: transcribing offline with %s", self.server.describe())
        return self

    def stop(self) -> None:
        """Stop what `start` started (idempotent)."""
        with self._lock:
            server, self.server = self.server, None
        if server is not None:
            server.stop()

    def __enter__(self) -> Service:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
