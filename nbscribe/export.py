"""Exports of a session: CSV, Parquet, JSON, SRT, VTT, Markdown and its audio.

`save` is the one way a session reaches a folder: `Transcriber.stop` (into its ``out_dir``),
`Session.save`, `MultiSession.save` and the panel's Save all call it, and it writes each file
once.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING

from .session import Session

if TYPE_CHECKING:
    from .multi import MultiSession

__all__ = ["DEFAULT_FORMATS", "FORMATS", "save", "to_markdown", "to_srt", "to_vtt"]

logger = logging.getLogger(__name__)

#: The formats `save` knows, and the files each one writes.
FORMATS = {
    "csv": ("turns.csv", "words.csv"),
    "parquet": ("turns.parquet", "words.parquet"),
    "json": ("session.json",),
    "srt": ("transcript.srt",),
    "vtt": ("transcript.vtt",),
    "md": ("transcript.md",),
    "wav": ("audio.wav",),
}

#: What `save` writes unless told otherwise (the audio is where the transcriber wrote it).
DEFAULT_FORMATS = ("csv", "json", "srt", "vtt")

#: The formats a merged multi-source session writes at its top level (tables only).
MERGED_FORMATS = ("csv", "parquet")


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
    session: Session | MultiSession,
    folder: str | os.PathLike[str],
    formats: tuple[str, ...] = DEFAULT_FORMATS,
) -> list[Path]:
    """Write a session's files, or a multi-source session's, into `folder`; return their paths.

    Parameters
    ----------
    session : Session or MultiSession
        What to write. A `MultiSession` writes its merged tables (``csv``, ``parquet``) into
        `folder` and each source's files, in the same formats, into ``folder/<source>``.
    folder : str or Path
        Created if needed; existing files of the same names are replaced.
    formats : tuple of str
        Any of `FORMATS`: ``csv`` (turns.csv, words.csv), ``parquet``, ``json``
        (session.json), ``srt``, ``vtt``, ``md``, and ``wav``: the audio that was sent
        (``audio.wav``, copied from ``session.audio_path`` unless it is already there).

    Raises
    ------
    ValueError
        An unknown format, or ``parquet`` without pyarrow (the message says what to install).
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown export format(s) {unknown}; choose from {sorted(FORMATS)}")
    if "parquet" in formats:
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ValueError(
                "Parquet export needs pyarrow: pip install 'nbscribe[parquet]'"
            ) from None
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    if not isinstance(session, Session):  # several sources: merged tables, a folder each
        written = _tables(session, out, [f for f in formats if f in MERGED_FORMATS])
        for name, part in session.for_export().items():
            written += save(part, out / name, formats)
        return written
    written = _tables(session, out, formats)
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
    if "wav" in formats:
        written += _audio(session.audio_path, out / "audio.wav")
    logger.info("wrote %s into %s", ", ".join(p.name for p in written), out)
    return written


def _tables(session: Session | MultiSession, out: Path, formats: Collection[str]) -> list[Path]:
    """Write the turns and words DataFrames in the table formats asked for."""
    written: list[Path] = []
    if "csv" in formats:
        session.turns.to_csv(out / "turns.csv", index=False)
        session.words.to_csv(out / "words.csv", index=False)
        written += [out / "turns.csv", out / "words.csv"]
    if "parquet" in formats:
        session.turns.to_parquet(out / "turns.parquet", index=False)
        session.words.to_parquet(out / "words.parquet", index=False)
        written += [out / "turns.parquet", out / "words.parquet"]
    return written


def _audio(source: Path | None, target: Path) -> list[Path]:
    """Copy the session's WAV to `target`, unless there is none or it is that file already."""
    if source is None or not source.exists():
        logger.info("no audio to save (the session has no audio file)")
        return []
    if target.exists() and source.resolve() == target.resolve():
        return [target]  # the transcriber wrote it here: nothing to copy
    shutil.copyfile(source, target)
    return [target]
