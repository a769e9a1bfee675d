"""The local server's engine, under its former name: kept so that old imports still work.

The engine now lives in three modules with one job each: `nbscribe.server.whisper` (the
faster-whisper adapter: `WhisperEngine`, `SileroStream`, `load_model`), `nbscribe.server.turns`
(turn detection: `TurnEngine`, `EngineSettings`) and `nbscribe.server.pcm` (the wire's audio as
float32 at 16 kHz). Import from those.
"""

from __future__ import annotations

from .pcm import RATE, WINDOW  # noqa: F401 (old imports)
from .pcm import mulaw_to_float as _mulaw_to_float  # noqa: F401 (old imports)
from .turns import EngineSettings, TurnEngine
from .whisper import CONTEXT, SileroStream, WhisperEngine, load_model  # noqa: F401

__all__ = ["EngineSettings", "SileroStream", "TurnEngine", "WhisperEngine", "load_model"]
