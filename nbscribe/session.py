"""The session: what has been said so far, built from server events.

Rules it applies (the same for every model family):

- A turn is keyed by ``turn_order``; every message replaces the stored one (transcripts are
  cumulative, not deltas). Partials revise partials.
- The *last* end-of-turn message of a turn wins, so a formatted duplicate (Universal models with
  ``format_turns``) replaces the raw final. A partial never replaces a final.
- ``SpeakerRevision`` relabels earlier turns and their words.

A session may span several server sessions (after a reconnect): each has a ``segment`` number and
an offset that puts its times on one timeline. All methods are thread-safe.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import itertools
import os
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from .events import (
    Begin,
    ErrorEvent,
    Event,
    SpeakerRevision,
    Termination,
    Turn,
    WarningEvent,
    Word,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Session", "TurnRecord"]

#: the ``turns`` DataFrame's columns and dtypes (the fields of `TurnRow`)
TURN_COLUMNS = {
    "turn_order": "int64",
    "segment": "int64",
    "start": "float64",
    "end": "float64",
    "speaker": "string",
    "text": "string",
    "confidence": "float64",
    "n_words": "int64",
    "final": "bool",
    "formatted": "bool",
    "language": "string",
}
WORD_COLUMNS = {
    "turn_order": "int64",
    "segment": "int64",
    "start": "float64",
    "end": "float64",
    "text": "string",
    "confidence": "float64",
    "speaker": "string",
    "word_is_final": "bool",
}


class TurnRow(NamedTuple):
    """A turn's row of the ``turns`` DataFrame (the fields are `TURN_COLUMNS`)."""

    turn_order: int
    segment: int
    start: float | None
    end: float | None
    speaker: str | None
    text: str
    confidence: float | None
    n_words: int
    final: bool
    formatted: bool
    language: str | None


class WordColumns(NamedTuple):
    """A turn's words as columns of the ``words`` DataFrame (the fields are `WORD_COLUMNS`)."""

    turn_order: Any  # numpy arrays, or lists for the string columns
    segment: Any
    start: Any
    end: Any
    text: list[str]
    confidence: Any
    speaker: list[str | None]
    word_is_final: Any


class Columns(NamedTuple):
    """What a final turn contributes to the DataFrames, made once when it becomes final."""

    row: TurnRow
    words: WordColumns | None


@dataclasses.dataclass
class TurnRecord:
    """One turn as the session holds it: the latest message and its place on the timeline."""

    segment: int
    turn: Turn
    offset_ms: int
    final: bool
    updated_at: float
    # this turn's DataFrame row and word columns, made once when it becomes final
    columns: Columns | None = dataclasses.field(default=None, repr=False, compare=False)
    #: the source it was heard on, in a merged multi-source view (`MultiSession.latest`)
    source: str | None = None
    #: the session's speaker names (label -> name), shared by its records
    names: Mapping[str, str] = dataclasses.field(default_factory=dict, repr=False,
                                                 compare=False)

    @property
    def start(self) -> float | None:
        """Seconds from the session start to the first word, or ``None`` without words."""
        words = self.turn.words
        return (words[0].start + self.offset_ms) / 1000.0 if words else None

    @property
    def end(self) -> float | None:
        """Seconds from the session start to the end of the last word."""
        words = self.turn.words
        return (words[-1].end + self.offset_ms) / 1000.0 if words else None

    @property
    def label(self) -> str | None:
        """The turn's speaker label as the service sent it, or the most common word speaker."""
        if self.turn.speaker_label:
            return self.turn.speaker_label
        labels = [w.speaker for w in self.turn.words if w.speaker and w.speaker != "PENDING"]
        return max(set(labels), key=labels.count) if labels else None

    @property
    def speaker(self) -> str | None:
        """The turn's speaker: its name when one was given (`Session.name_speakers`)."""
        label = self.label
        return self.names.get(label, label) if label is not None else None


class Session:
    """Turns, words, speakers and errors of one transcription, as they arrive.

    Use `apply` to feed events (the transcriber does this from its events thread); read `turns`
    and `words` as pandas DataFrames at any time.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._turns: dict[tuple[int, int], TurnRecord] = {}
        self._finals: list[tuple[int, int]] = []  # keys in the order turns became final
        self._open: set[tuple[int, int]] = set()  # keys of turns not final yet
        self._pending_revisions: dict[tuple[int, int], tuple[str | None, tuple[Word, ...]]] = {}
        self._names: dict[str, str] = {}
        self.segment = 0
        self.offset_ms = 0
        self.begins: list[Begin] = []
        self.terminations: list[Termination] = []
        self.errors: list[ErrorEvent] = []
        self.warnings: list[WarningEvent] = []
        self.gaps: list[tuple[float, float]] = []
        #: connections lost and replaced: ``{"at": s, "reason": ..., "resent_from": s,
        #: "resent_seconds": s}`` (noticed at, why, where the audio sent again began, how much)
        self.interruptions: list[dict[str, Any]] = []
        self.started_at = time.time()
        self.audio_seconds = 0.0
        self.metadata: dict[str, Any] = {}
        #: the WAV of the audio that was sent (set by the transcriber and by `load_session`)
        self.audio_path: Path | None = None

    # -- feeding ------------------------------------------------------------------------------

    def new_segment(self, offset_ms: int) -> int:
        """Start a new server session whose times begin at `offset_ms` on the timeline.

        Turns of earlier server sessions that never became final are dropped: a reconnected
        session transcribes their audio again. Returns the new segment number.
        """
        with self._lock:
            if self.begins or self._turns:
                self.segment += 1
            self.offset_ms = int(offset_ms)
            for key in [k for k in self._open if k[0] < self.segment]:
                self._open.discard(key)
                del self._turns[key]
            return self.segment

    def apply(self, event: Event, segment: int | None = None,
              offset_ms: int | None = None) -> bool:
        """Apply one event; return whether the transcript changed.

        Parameters
        ----------
        event : Event
            What the server said.
        segment, offset_ms : int, optional
            The server session the event came from and where its time zero lies on the
            session timeline (default: the current segment).
        """
        with self._lock:
            seg = self.segment if segment is None else segment
            off = self.offset_ms if offset_ms is None else offset_ms
            if isinstance(event, Turn):
                return self._apply_turn(event, seg, off)
            if isinstance(event, SpeakerRevision):
                return self._apply_revision(event, seg)
            if isinstance(event, Begin):
                self.begins.append(event)
            elif isinstance(event, Termination):
                self.terminations.append(event)
            elif isinstance(event, ErrorEvent):
                self.errors.append(event)
            elif isinstance(event, WarningEvent):
                self.warnings.append(event)
            return False

    def _apply_turn(self, turn: Turn, segment: int, offset_ms: int) -> bool:
        key = (segment, turn.turn_order)
        old = self._turns.get(key)
        if old is not None and old.final and not turn.end_of_turn:
            return False  # a late partial never undoes a final
        pending = self._pending_revisions.pop(key, None)
        if pending is not None and turn.speaker_label is None:
            turn = _relabel(turn, *pending)
        self._turns[key] = TurnRecord(
            segment=segment,
            turn=turn,
            offset_ms=offset_ms,
            final=turn.end_of_turn,
            updated_at=time.time(),
            names=self._names,
        )
        if turn.end_of_turn:
            self._turns[key].columns = _columns(self._turns[key])
            self._open.discard(key)
            if old is None or not old.final:
                self._finals.append(key)
        else:
            self._open.add(key)
        return True

    def _apply_revision(self, event: SpeakerRevision, segment: int) -> bool:
        changed = False
        for order, label, words in event.revisions:
            key = (segment, order)
            record = self._turns.get(key)
            if record is None:
                self._pending_revisions[key] = (label, words)
                continue
            record.turn = _relabel(record.turn, label, words)
            record.updated_at = time.time()
            if record.final:
                record.columns = _columns(record)
            changed = True
        return changed

    def name_speakers(self, names: Mapping[str, str] | None = None, /, **more: str) -> None:
        """Give speakers names: ``session.name_speakers(A="Nagg", B="Nell")``.

        From then on the names replace the labels in the DataFrames (``speaker`` columns), in
        every export and in live views; labels not named stay as they are. Works for labels
        from AssemblyAI and from the local server alike, and for labels still to come. A name
        given again replaces the earlier one; naming a label ``None`` or its own label undoes
        it. The labels are kept (`TurnRecord.label`, ``speaker_label`` in ``session.json``).

        Parameters
        ----------
        names : mapping of str to str, optional
            Label -> name, for labels that are not Python identifiers.
        **more : str
            Label=name.
        """
        changes = {**(names or {}), **more}
        for label, name in changes.items():
            if not isinstance(label, str) or not (name is None or isinstance(name, str)):
                raise TypeError(f"speaker names map a label to a name (str), got {label!r}: "
                                f"{name!r}")
        with self._lock:
            for label, name in changes.items():
                if name is None or name == label:
                    self._names.pop(label, None)
                else:
                    self._names[label] = name
            for record in self._turns.values():
                if record.final:
                    record.columns = _columns(record)

    def without(self, keys: set[tuple[int, int]]) -> Session:
        """Return a copy of this session without some turns.

        `keys` are ``(segment, turn_order)`` pairs. Exports that leave out echo use it; the
        journal keeps everything.
        """
        out = Session()
        with self._lock:
            for name in ("segment", "offset_ms", "started_at", "audio_seconds", "audio_path"):
                setattr(out, name, getattr(self, name))
            for name in ("begins", "terminations", "errors", "warnings", "gaps",
                         "interruptions"):
                setattr(out, name, list(getattr(self, name)))
            out.metadata = dict(self.metadata)
            out._names.update(self._names)
            for key, record in self._turns.items():
                if key not in keys:
                    out._turns[key] = dataclasses.replace(record, names=out._names)
            out._finals = [k for k in self._finals if k in out._turns]
            out._open = {k for k in self._open if k in out._turns}
        return out

    @property
    def speaker_names(self) -> dict[str, str]:
        """The names given to speaker labels (label -> name)."""
        with self._lock:
            return dict(self._names)

    # -- reading ------------------------------------------------------------------------------

    def records(self, include_partial: bool = False) -> list[TurnRecord]:
        """Return the turns in timeline order (finals only unless `include_partial`)."""
        with self._lock:
            recs = [r for r in self._turns.values() if include_partial or r.final]
            return sorted(recs, key=lambda r: (r.segment, r.turn.turn_order))

    def latest(self, n: int) -> list[TurnRecord]:
        """Return the last `n` final turns in timeline order.

        Its cost does not grow with the length of the session (for live views).
        """
        with self._lock:
            recs = [self._turns[k] for k in self._finals[-n:]] if n > 0 else []
            return sorted(recs, key=lambda r: (r.segment, r.turn.turn_order))

    @property
    def partial(self) -> TurnRecord | None:
        """The turn still being spoken (not final yet), or ``None``."""
        with self._lock:
            return self._turns[max(self._open)] if self._open else None

    @property
    def text(self) -> str:
        """The final transcript, one turn per line."""
        return "\n".join(r.turn.transcript for r in self.records())

    def __len__(self) -> int:
        with self._lock:
            return len(self._finals)

    def __iter__(self) -> Iterator[TurnRecord]:
        return iter(self.records())

    @property
    def turns(self) -> pd.DataFrame:
        """Final turns as a DataFrame: turn_order, start, end (seconds), speaker, text ..."""
        return self.turns_frame()

    @property
    def words(self) -> pd.DataFrame:
        """Words of the final turns as a DataFrame (times in seconds)."""
        return self.words_frame()

    def turns_frame(self, include_partial: bool = False) -> pd.DataFrame:
        """Return turns as a DataFrame with typed columns.

        Parameters
        ----------
        include_partial : bool
            Include the turn still being spoken (``final`` is False on it).
        """
        with _gc_paused():
            rows = [(r.columns or _columns(r)).row for r in self.records(include_partial)]
            columns = list(zip(*rows, strict=True)) if rows else [()] * len(TURN_COLUMNS)
            return _frame(dict(zip(TurnRow._fields, map(list, columns), strict=True)),
                          TURN_COLUMNS)

    def words_frame(self, include_partial: bool = False) -> pd.DataFrame:
        """Return the words of the turns as a DataFrame with typed columns."""
        with _gc_paused():
            return self._word_columns(include_partial)

    def _word_columns(self, include_partial: bool) -> pd.DataFrame:
        import numpy as np
        import pandas as pd

        parts = [(r.columns or _columns(r)).words for r in self.records(include_partial)]
        parts = [p for p in parts if p is not None]
        if not parts:
            return _frame({name: [] for name in WORD_COLUMNS}, WORD_COLUMNS)
        chain = itertools.chain.from_iterable
        data = {
            name: (pd.array(list(chain(getattr(p, name) for p in parts)), dtype="string")
                   if dtype == "string" else np.concatenate([getattr(p, name) for p in parts]))
            for name, dtype in WORD_COLUMNS.items()
        }
        return pd.DataFrame(data, columns=list(WORD_COLUMNS))

    def to_dict(self) -> dict[str, Any]:
        """Return everything as plain JSON-ready data (what ``session.json`` holds)."""
        with self._lock:
            return {
                "started_at": self.started_at,
                "audio_seconds": round(self.audio_seconds, 3),
                "metadata": self.metadata,
                "speaker_names": dict(self._names),
                "server_sessions": [
                    {"id": b.id, "expires_at": b.expires_at, "configuration": b.configuration}
                    for b in self.begins
                ],
                "turns": [
                    {
                        "turn_order": r.turn.turn_order,
                        "segment": r.segment,
                        "start": r.start,
                        "end": r.end,
                        "speaker": r.speaker,
                        "speaker_label": r.label,
                        "text": r.turn.transcript,
                        "formatted": r.turn.turn_is_formatted,
                        "words": [
                            {
                                "text": w.text,
                                "start": (w.start + r.offset_ms) / 1000.0,
                                "end": (w.end + r.offset_ms) / 1000.0,
                                "confidence": w.confidence,
                                "speaker": self._names.get(w.speaker, w.speaker)
                                if w.speaker else w.speaker,
                            }
                            for w in r.turn.words
                        ],
                    }
                    for r in self.records()
                ],
                "gaps": [{"start": a, "end": b} for a, b in self.gaps],
                "interruptions": list(self.interruptions),
                "errors": [{"code": e.code, "message": e.message} for e in self.errors],
                "warnings": [{"code": w.code, "message": w.message} for w in self.warnings],
            }

    def save(self, folder: str | os.PathLike[str],
             formats: tuple[str, ...] = ("csv", "json", "srt", "vtt")) -> Path:
        """Write the session's files into `folder` and return it; see `nbscribe.export.save`.

        Add ``"wav"`` to `formats` for a copy of the audio, ``"parquet"``, ``"md"`` for more.
        """
        from .export import save

        save(self, folder, formats)
        return Path(folder)

    def continuity(self) -> str:
        """Say in one line whether the stream was interrupted and whether audio was lost.

        Empty when the session ran without a break. Used by the CLI's closing lines and the
        panel's final status.
        """
        lost = sum(end - start for start, end in self.gaps)
        breaks = self.interruptions
        if not breaks and not lost:
            return ""
        parts = []
        if breaks:
            resent = sum(b.get("resent_seconds", 0.0) for b in breaks)
            where = ", ".join(f"{b['at']:.1f} s" for b in breaks[:5])
            since = breaks[0].get("resent_from", breaks[0]["at"])
            parts.append(f"{len(breaks)} connection{'s' if len(breaks) > 1 else ''} lost and "
                         f"replaced (noticed at {where}); {resent:.1f} s of audio sent again, "
                         f"from {since:.1f} s on")
        parts.append(f"{lost:.1f} s of audio never reached a server in {len(self.gaps)} gap(s) "
                     "(still in audio.wav): see session.gaps" if lost else "no audio was lost")
        return "; ".join(parts)

    def __repr__(self) -> str:
        return f"<Session {len(self)} final turns, {self.audio_seconds:.1f} s audio>"


def _columns(r: TurnRecord) -> Columns:
    """Return a turn's DataFrame row and its word columns (numpy arrays and lists)."""
    import numpy as np

    turn, words = r.turn, r.turn.words
    speaker = r.speaker
    row = TurnRow(turn.turn_order, r.segment, r.start, r.end, speaker, turn.transcript,
                  sum(w.confidence for w in words) / len(words) if words else None, len(words),
                  r.final, turn.turn_is_formatted, turn.language_code)
    if not words:
        return Columns(row, None)
    n, off = len(words), r.offset_ms
    word_cols = WordColumns(
        np.full(n, turn.turn_order, dtype=np.int64),
        np.full(n, r.segment, dtype=np.int64),
        np.array([(w.start + off) / 1000.0 for w in words], dtype=np.float64),
        np.array([(w.end + off) / 1000.0 for w in words], dtype=np.float64),
        [w.text for w in words],
        np.array([w.confidence for w in words], dtype=np.float64),
        [r.names.get(w.speaker, w.speaker) if w.speaker and w.speaker != "PENDING" else speaker
         for w in words],
        np.array([w.word_is_final for w in words], dtype=bool),
    )
    return Columns(row, word_cols)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a frame is built.

    With a long session in memory, a collection triggered by the build's temporaries rescans
    every stored turn and word, which can cost more than the build itself (measured again
    with the named cache: 10,000 turns after the benchmark's other work, 130 ms without the
    pause, 61-80 ms with it). Nothing built here forms cycles.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _frame(cols: dict[str, list[Any]], dtypes: dict[str, str]) -> pd.DataFrame:
    """Build a DataFrame column by column in its final dtype (no inference, no astype)."""
    import numpy as np
    import pandas as pd

    data = {}
    for name, dtype in dtypes.items():
        values = cols[name]
        if dtype == "string":
            data[name] = pd.array(values, dtype="string")
        else:  # numpy turns None into NaN for floats
            data[name] = np.array(values, dtype=dtype)
    return pd.DataFrame(data)


def _relabel(turn: Turn, label: str | None, words: tuple[Word, ...]) -> Turn:
    new_words = turn.words
    if words and len(words) == len(turn.words):
        new_words = tuple(
            dataclasses.replace(old, speaker=new.speaker or label)
            for old, new in zip(turn.words, words, strict=True)
        )
    elif label:
        new_words = tuple(dataclasses.replace(w, speaker=label) for w in turn.words)
    return dataclasses.replace(turn, speaker_label=label or turn.speaker_label, words=new_words)
