"""Exports of a session: CSV, Parquet, JSON, SRT, VTT and Markdown."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .session import Session

__all__ = ["FORMATS", "save", "to_markdown", "to_srt", "to_vtt"]

logger = logging.getLogger(__name__)

#: The formats `save` knows, and the files each one writes.
FORMATS = {
    "csv": ("turns.csv", "words.csv"),
    "parquet": ("turns.parquet", "words.parquet"),
    "json": ("session.json",),
    "srt": ("transcript.srt",),
    "vtt": ("transcript.vtt",),
    "md": ("transcript.md",),
}


def _stamp(seconds: float, sep: str) -> str:
    ms = max(0, round(seconds * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _cues(session: Session) -> list[tuple[float, float, str]]:
    cues = []
    for r in session.records():
        text = r.turn.transcript.strip()
        if not text or r.start is None:
            continue
        end = r.end if r.end is not None and r.end > r.start else r.start + 0.5
        speaker = r.speaker
        cues.append((r.start, end, f"{speaker}: {text}" if speaker else text))
    return cues


def to_srt(session: Session) -> str:
    """Return the final turns as SubRip subtitles (one cue per turn, speaker as a prefix)."""
    blocks = [
        f"{i}\n{_stamp(a, ',')} --> {_stamp(b, ',')}\n{text}\n"
        for i, (a, b, text) in enumerate(_cues(session), 1)
    ]
    return "\n".join(blocks)


def to_vtt(session: Session) -> str:
    """Return the final turns as WebVTT (speakers as ``<v>`` voice spans)."""
    out = ["WEBVTT", ""]
    for r in session.records():
        text = r.turn.transcript.strip()
        if not text or r.start is None:
            continue
        end = r.end if r.end is not None and r.end > r.start else r.start + 0.5
        body = f"<v {r.speaker}>{text}" if r.speaker else text
        out += [f"{_stamp(r.start, '.')} --> {_stamp(end, '.')}", body, ""]
    return "\n".join(out)


def to_markdown(session: Session) -> str:
    """Return the final turns as a Markdown transcript with timestamps."""
    lines = ["# Transcript", ""]
    for a, _, text in _cues(session):
        lines.append(f"- **{_stamp(a, '.')[:-4]}** {text}")
    return "\n".join(lines) + "\n"


def save(
    session: Session,
    folder: str | os.PathLike[str],
    formats: tuple[str, ...] = ("csv", "json", "srt", "vtt"),
) -> list[Path]:
    """Write the session's files into `folder` and return their paths.

    Parameters
    ----------
    session : Session
        What to write.
    folder : str or Path
        Created if needed; existing files of the same names are replaced.
    formats : tuple of str
        Any of `FORMATS`: ``csv`` (turns.csv, words.csv), ``parquet``, ``json``
        (session.json), ``srt``, ``vtt``, ``md``.

    Raises
    ------
    ValueError
        An unknown format, or ``parquet`` without pyarrow (the message says what to install).
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown export format(s) {unknown}; choose from {sorted(FORMATS)}")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if "csv" in formats:
        session.turns.to_csv(out / "turns.csv", index=False)
        session.words.to_csv(out / "words.csv", index=False)
        written += [out / "turns.csv", out / "words.csv"]
    if "parquet" in formats:
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ValueError(
                "Parquet export needs pyarrow: pip install 'nbscribe[parquet]'"
            ) from None
        session.turns.to_parquet(out / "turns.parquet", index=False)
        session.words.to_parquet(out / "words.parquet", index=False)
        written += [out / "turns.parquet", out / "words.parquet"]
    texts = {
        "json": ("session.json", lambda: json.dumps(session.to_dict(), indent=2) + "\n"),
        "srt": ("transcript.srt", lambda: to_srt(session)),
        "vtt": ("transcript.vtt", lambda: to_vtt(session)),
        "md": ("transcript.md", lambda: to_markdown(session)),
    }
    for fmt, (name, render) in texts.items():
        if fmt in formats:
            (out / name).write_text(render(), encoding="utf-8")
            written.append(out / name)
    logger.info("wrote %s", ", ".join(p.name for p in written))
    return written
