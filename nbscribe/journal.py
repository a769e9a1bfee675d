"""The session journal: every server event appended to disk as it arrives, and reloading it.

``events.jsonl`` holds one JSON object per line: the event's type and fields, the segment (server
session) it belongs to, that segment's offset on the session timeline, and the time it arrived.
Each line is flushed as it is written (a final turn is also fsync'ed), so after a crash or a
``kill -9`` `load_session` rebuilds everything that had arrived, from the journal and the WAV
(which is valid while it grows). A torn last line is ignored.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from .events import EVENT_TYPES, Event, SpeakerRevision, Turn, Word
from .session import Session

__all__ = ["JOURNAL_NAME", "Journal", "load_session"]

logger = logging.getLogger(__name__)

JOURNAL_NAME = "events.jsonl"
#: Event class name (as the journal writes it) -> class.
_TYPES = {cls.__name__: cls for cls in EVENT_TYPES.values()}


def event_to_dict(event: Event) -> dict[str, Any]:
    """Return an event as plain JSON-ready data, with its type name under ``"event"``."""
    return {"event": type(event).__name__, **dataclasses.asdict(event)}


def event_from_dict(data: dict[str, Any]) -> Event:
    """Rebuild an event written by `event_to_dict`."""
    fields = dict(data)
    cls = _TYPES[fields.pop("event")]
    if cls is Turn:
        fields["words"] = tuple(Word(**w) for w in fields.get("words", ()))
    elif cls is SpeakerRevision:
        fields["revisions"] = tuple(
            (order, label, tuple(Word(**w) for w in words))
            for order, label, words in fields.get("revisions", ())
        )
    return cls(**fields)


class Journal:
    """Append-only event log of one session (thread-safe).

    Parameters
    ----------
    path : str or Path
        The ``events.jsonl`` file to create.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")
        self._lock = threading.Lock()

    def _write(self, record: dict[str, Any], sync: bool = False) -> None:
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with self._lock:
            if self._file.closed:
                return
            self._file.write(line)
            self._file.flush()
            if sync:
                os.fsync(self._file.fileno())

    def event(self, event: Event, segment: int, offset_ms: int) -> None:
        """Append one server event of server session `segment`."""
        final = isinstance(event, Turn) and event.end_of_turn
        self._write({"t": round(time.time(), 3), "segment": segment, "offset_ms": offset_ms,
                     **event_to_dict(event)}, sync=final)

    def gap(self, start: float, end: float, reason: str) -> None:
        """Record audio (seconds on the session timeline) that no server session received."""
        self._write({"t": round(time.time(), 3), "gap": [round(start, 3), round(end, 3)],
                     "reason": reason}, sync=True)

    def interruption(self, record: dict[str, Any]) -> None:
        """Record a lost connection that was replaced (where, why, how much audio was resent)."""
        self._write({"t": round(time.time(), 3), "interruption": record}, sync=True)

    def meta(self, **fields: Any) -> None:
        """Record facts about the session (source, service, parameters; never a key)."""
        self._write({"t": round(time.time(), 3), "meta": fields}, sync=True)

    def close(self) -> None:
        """Close the file (idempotent)."""
        with self._lock:
            if not self._file.closed:
                self._file.close()


def load_session(folder: str | os.PathLike[str]) -> Session:
    """Rebuild a session from its folder (``events.jsonl`` and ``audio.wav``).

    Works on the folder of a session that was stopped, or killed mid-way: everything the journal
    holds is applied again with the same rules as live.

    Parameters
    ----------
    folder : str or Path
        A transcriber's ``out_dir``.

    Returns
    -------
    Session
        With `audio_path` (and ``metadata["audio_file"]``) pointing at the WAV and
        ``audio_seconds`` set from it, and the speaker names saved in ``session.json``.
    """
    folder = Path(folder)
    path = folder / JOURNAL_NAME
    if not path.exists():
        raise FileNotFoundError(f"no {JOURNAL_NAME} in {folder}: not a session folder")
    session = Session()
    lines = path.read_text(encoding="utf-8").splitlines()
    for n, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except ValueError:
            if n == len(lines):
                logger.info("ignoring a torn last line in %s", path)
                continue
            raise ValueError(f"{path}:{n} is not valid JSON") from None
        if "meta" in record:
            session.metadata.update(record["meta"])
        elif "gap" in record:
            session.gaps.append(tuple(record["gap"]))
        elif "interruption" in record:
            session.interruptions.append(record["interruption"])
        elif "event" in record:
            data = {k: v for k, v in record.items() if k not in ("t", "segment", "offset_ms")}
            session.apply(event_from_dict(data), segment=record["segment"],
                          offset_ms=record["offset_ms"])
    audio = folder / "audio.wav"
    if audio.exists():
        import soundfile

        session.audio_seconds = soundfile.info(str(audio)).duration
        session.metadata["audio_file"] = str(audio)
        session.audio_path = audio
    saved = folder / "session.json"
    if saved.exists():  # names given to speakers after the journal was written
        try:
            names = json.loads(saved.read_text(encoding="utf-8")).get("speaker_names")
        except ValueError:
            names = None
        if isinstance(names, dict):
            session.name_speakers({str(k): str(v) for k, v in names.items()})
    return session
