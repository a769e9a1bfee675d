"""nbscribe's local AssemblyAI-compatible streaming server and its offline Whisper engine.

Needs the ``local`` extra: ``pip install 'nbscribe[local]'``.
"""

from __future__ import annotations

from .app import LocalServer, ServerConfig, serve_forever
from .turns import EngineSettings, TurnEngine
from .whisper import WhisperEngine, load_model

__all__ = [
    "EngineSettings",
    "LocalServer",
    "ServerConfig",
    "TurnEngine",
    "WhisperEngine",
    "load_model",
    "serve_forever",
]
