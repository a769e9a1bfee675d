"""Start the local server in-process: what nbscribe uses when no API key is configured."""

from __future__ import annotations

from .app import LocalServer, ServerConfig

__all__ = ["start_local_server"]


def start_local_server(fast: bool = False, model: str | None = None) -> LocalServer:
    """Start a local server on 127.0.0.1 at a free port and return it (call ``stop()`` after).

    Parameters
    ----------
    fast : bool
        Accept audio faster than real time (for files sent in fast mode).
    model : str, optional
        A faster-whisper model folder or name; default the bundled tiny.en.
    """
    config = ServerConfig(port=0, model=model, max_rate=None if fast else 1.5)
    return LocalServer(config).start()
