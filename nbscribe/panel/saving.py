"""The panel's Save: which formats it writes, through the one save path (`nbscribe.export`)."""

from __future__ import annotations

import os
from pathlib import Path

from ..recorder import LiveSession

__all__ = ["panel_formats", "save"]


def panel_formats() -> tuple[str, ...]:
    """Return what the panel saves: the audio, CSV, JSON, SRT, VTT, and Parquet with pyarrow."""
    formats = ("wav", "csv", "json", "srt", "vtt")
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return formats
    return (*formats, "parquet")


def save(session: LiveSession, folder: str | os.PathLike[str]) -> Path:
    """Write `session` with its audio into `folder` (a folder per source when merged).

    Returns
    -------
    Path
        The folder.
    """
    return session.save(folder, panel_formats())
