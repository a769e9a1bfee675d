"""Several sources at once, e.g. "You" (the microphone) and "Others" (system audio).

The service transcribes mono audio, so each source gets its own `Transcriber` and its own server
session; `MultiSession` merges them into one set of DataFrames with a ``source`` column beside
``speaker``, on one timeline: time zero is the moment the first source sent its first audio, and
every source's times are shifted by how much later it started.

When one source hears another (a microphone near speakers that play the call captured by a
loopback: ``echo_of={"you": "others"}``, the default for sources named so), the microphone's
frames go through an `nbscribe.echo.EchoCanceller` fed by the loopback's frames, and
`MultiSession` marks the microphone's turns that still repeat a loopback turn as echo and leaves
them out of its DataFrames, live view and exports (``include_echo=True`` shows them).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .echo import EchoCanceller, find_echoes
from .errors import ConfigError
from .events import Event
from .pump import run_all
from .service import Service
from .session import Session, TurnRecord
from .sources import AudioSource
from .transcriber import Stats, Transcriber

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["MultiSession", "MultiTranscriber"]

logger = logging.getLogger(__name__)


class MultiSession:
    """The sessions of several sources, merged on one timeline.

    Parameters
    ----------
    sessions : mapping of str to Session
        One session per source name.
    offsets : mapping of str to float
        Seconds to add to each source's times (when it started after the first one).
    echo_of : mapping of str to str, optional
        ``{microphone: loopback}``: the microphone source hears the loopback source through the
        speakers. Its turns that repeat the loopback's are echo.
    include_echo : bool
        Whether echo turns stay in `turns`, `words`, `latest` and exports (with ``echo`` True);
        by default they are left out (they stay in the source's journal and `echoes`).
    """

    def __init__(self, sessions: Mapping[str, Session], offsets: Mapping[str, float],
                 echo_of: Mapping[str, str] | None = None, include_echo: bool = False) -> None:
        self.sessions = dict(sessions)
        self.offsets = dict(offsets)
        self.echo_of = dict(echo_of or {})
        self.include_echo = include_echo

    # -- echo ---------------------------------------------------------------------------------

    def _echo_keys(self, records: Mapping[str, list[TurnRecord]] | None = None
                   ) -> dict[str, dict[tuple[int, int], str]]:
        """Return, per microphone source, its echo turns: (segment, turn_order) -> repeated text.

        `records` are each source's final turns to judge (default: all of them).
        """
        out: dict[str, dict[tuple[int, int], str]] = {}
        for mic, ref in self.echo_of.items():
            if mic not in self.sessions or ref not in self.sessions:
                continue
            mine = records[mic] if records is not None else self.sessions[mic].records()
            theirs = records[ref] if records is not None else self.sessions[ref].records()
            dm, dr = self.offsets.get(mic, 0.0), self.offsets.get(ref, 0.0)
            out[mic] = find_echoes(
                [((r.segment, r.turn.turn_order), r.start + dm, r.end + dm, r.turn.transcript)
                 for r in mine if r.start is not None and r.end is not None],
                [(r.start + dr, r.end + dr, r.turn.transcript)
                 for r in theirs if r.start is not None and r.end is not None])
        return out

    @property
    def echoes(self) -> pd.DataFrame:
        """The microphone turns marked as echo: source, turn_order, start, end, text, repeats."""
        import pandas as pd

        rows = []
        for mic, keys in self._echo_keys().items():
            shift = self.offsets.get(mic, 0.0)
            for r in self.sessions[mic].records():
                key = (r.segment, r.turn.turn_order)
                if key in keys:
                    rows.append({"source": mic, "segment": r.segment,
                                 "turn_order": r.turn.turn_order,
                                 "start": round(r.start + shift, 3), "end": round(r.end + shift, 3),
                                 "text": r.turn.transcript, "repeats": keys[key]})
        return pd.DataFrame(rows, columns=["source", "segment", "turn_order", "start", "end",
                                           "text", "repeats"])

    def _frames(self, kind: str, include_echo: bool | None) -> dict[str, pd.DataFrame]:
        import numpy as np

        include = self.include_echo if include_echo is None else include_echo
        keys = self._echo_keys() if self.echo_of else {}
        frames = {}
        for name, session in self.sessions.items():
            frame = session.turns if kind == "turns" else session.words
            if self.echo_of:
                echo = keys.get(name, {})
                flags = np.array([(seg, order) in echo for seg, order in
                                  zip(frame["segment"], frame["turn_order"], strict=True)],
                                 dtype=bool)
                frame = frame.assign(echo=flags)
                if not include:
                    frame = frame.loc[~flags]
            frames[name] = frame
        return frames

    def _merge(self, frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
        import pandas as pd

        parts = []
        for name, frame in frames.items():
            frame = frame.copy()
            shift = self.offsets.get(name, 0.0)
            frame["start"] = (frame["start"] + shift).round(3)
            frame["end"] = (frame["end"] + shift).round(3)
            frame.insert(0, "source", pd.array([name] * len(frame), dtype="string"))
            parts.append(frame)
        merged = pd.concat(parts, ignore_index=True)
        return merged.sort_values(["start", "source"], kind="stable").reset_index(drop=True)

    @property
    def turns(self) -> pd.DataFrame:
        """Final turns of every source: ``source``, ``speaker``, ``start``, ``end``, ``text`` ...

        Echo turns are left out unless `include_echo` (see `turns_frame`).
        """
        return self.turns_frame()

    @property
    def words(self) -> pd.DataFrame:
        """Words of every source, with ``source``, on the common timeline (echo left out)."""
        return self.words_frame()

    def turns_frame(self, include_echo: bool | None = None) -> pd.DataFrame:
        """Return the merged turns; with sources that hear each other, an ``echo`` column.

        Parameters
        ----------
        include_echo : bool, optional
            Keep the microphone's turns that repeat the loopback (default: `include_echo`).
        """
        return self._merge(self._frames("turns", include_echo))

    def words_frame(self, include_echo: bool | None = None) -> pd.DataFrame:
        """Return the merged words (see `turns_frame`)."""
        return self._merge(self._frames("words", include_echo))

    @property
    def text(self) -> str:
        """The merged transcript, one ``source: text`` line per turn."""
        return "\n".join(f"{r.source}: {r.text}" for r in self.turns.itertuples())

    def for_export(self) -> dict[str, Session]:
        """Each source's session as exports write it: echo turns left out unless included."""
        if not self.echo_of or self.include_echo:
            return dict(self.sessions)
        keys = self._echo_keys()
        return {name: session.without(set(keys.get(name, {})))
                for name, session in self.sessions.items()}

    def __len__(self) -> int:
        return sum(len(s) for s in self.sessions.values())

    def latest(self, n: int) -> list[TurnRecord]:
        """Return the last `n` final turns of all sources on the common timeline.

        For live views; each record's ``source`` names its source.
        """
        latest = {name: session.latest(n) for name, session in self.sessions.items()}
        echo = ({} if self.include_echo or not self.echo_of
                else self._echo_keys(latest))
        recs = []
        for name, records in latest.items():
            shift = round(self.offsets.get(name, 0.0) * 1000)
            hidden = echo.get(name, {})
            recs += [dataclasses.replace(r, offset_ms=r.offset_ms + shift, source=name)
                     for r in records if (r.segment, r.turn.turn_order) not in hidden]
        recs.sort(key=lambda r: (r.start is None, r.start or 0.0))
        return recs[-n:] if n > 0 else []

    @property
    def partial(self) -> TurnRecord | None:
        """The most recent turn still being spoken, of any source."""
        open_turns = [p for p in (s.partial for s in self.sessions.values()) if p is not None]
        return max(open_turns, key=lambda r: r.updated_at, default=None)

    def name_speakers(self, names: Mapping[str, str] | None = None, /, *,
                      source: str | None = None, **more: str) -> None:
        """Give speakers names in every source's session, or in `source`'s only.

        Labels belong to a source (``"A"`` of ``others`` is not ``"A"`` of ``you``): pass
        `source` when the sources' labels differ. See `Session.name_speakers`.
        """
        if source is not None and source not in self.sessions:
            raise ValueError(f"no source named {source!r}; there are {sorted(self.sessions)}")
        for name, session in self.sessions.items():
            if source is None or name == source:
                session.name_speakers(names, **more)

    def continuity(self) -> str:
        """Say per source whether its stream was interrupted (empty when none was)."""
        return "; ".join(f"{name}: {note}" for name, session in self.sessions.items()
                         if (note := session.continuity()))

    def save(self, folder: str | os.PathLike[str],
             formats: tuple[str, ...] = ("csv", "json", "srt", "vtt")) -> Path:
        """Write ``turns.csv`` and ``words.csv`` (merged) and each source's files in a subfolder.

        See `nbscribe.export.save` for the `formats`; return the folder.
        """
        from .export import save

        save(self, folder, formats)
        return Path(folder)


class MultiTranscriber:
    """Transcribe several sources at once, one server session each, merged in `session`.

    Parameters
    ----------
    sources : mapping of str to AudioSource
        For example ``{"you": DeviceSource("MacBook Pro Microphone"),
        "others": DeviceSource("BlackHole 2ch")}``. The names become the ``source`` column.
    out_dir : str or Path, optional
        Each source writes its audio and journal into ``out_dir/<name>``; `stop` saves the
        merged tables into `out_dir` and each source's exports beside its audio.
    url, api_key, token, local, service
        Where the audio goes (see `Transcriber`): one `Service` shared by every source; without
        a key or URL, one local server is started for all of them.
    echo_of : mapping of str to str, optional
        ``{microphone: loopback}`` when the microphone hears what the loopback captures (a call
        on the speakers). Default: ``{"you": "others"}`` when the sources are named so; ``{}``
        for none.
    cancel_echo : bool
        Remove the loopback's sound from the microphone before it is transcribed (acoustic
        echo cancellation; needs ``pip install 'nbscribe[echo]'``, else a warning).
    include_echo : bool
        Keep the microphone turns that still repeat the loopback in the merged DataFrames,
        the live view and exports (they are always in the source's journal).
    **kwargs
        Passed to every `Transcriber` (``speech_model``, ``keyterms_prompt``, ...).
    """

    def __init__(self, sources: Mapping[str, AudioSource], *,
                 out_dir: str | os.PathLike[str] | None = None, url: str | None = None,
                 api_key: str | None = None, token: str | Callable[[], str] | None = None,
                 local: bool | None = None, service: Service | None = None,
                 echo_of: Mapping[str, str] | None = None, cancel_echo: bool = True,
                 include_echo: bool = False, **kwargs: Any) -> None:
        if len(sources) < 1:
            raise ConfigError("give at least one source, e.g. {'you': mic, 'others': loopback}")
        bad = [n for n in sources if not n or "/" in n or n in (".", "..")]
        if bad:
            raise ConfigError(f"source names must be plain words, got {bad}")
        if service is not None and (url, api_key, token, local) != (None,) * 4:
            raise ConfigError("pass either service= or url/api_key/token/local, not both")
        self.out_dir = Path(out_dir) if out_dir else None
        self.service = service or Service(url, api_key=api_key, token=token, local=local)
        self._owns_service = service is None
        self.transcribers = {
            name: Transcriber(src, out_dir=self.out_dir / name if self.out_dir else None,
                              service=self.service, **kwargs)
            for name, src in sources.items()
        }
        if echo_of is None:
            echo_of = {"you": "others"} if {"you", "others"} <= set(sources) else {}
        unknown = [n for pair in echo_of.items() for n in pair if n not in sources]
        if unknown or len(set(echo_of.values())) < len(echo_of):
            raise ConfigError(f"echo_of maps a microphone source to a loopback source, each "
                              f"used once; got {dict(echo_of)} for sources {sorted(sources)}")
        self.echo_of = dict(echo_of)
        self.include_echo = include_echo
        self.cancellers: dict[str, EchoCanceller] = {}
        if cancel_echo:
            for mic, ref in self.echo_of.items():
                mic_tr, ref_tr = self.transcribers[mic], self.transcribers[ref]
                live = mic_tr.source.realtime and ref_tr.source.realtime
                canceller = EchoCanceller(mic_tr.params.sample_rate,
                                          max_wait=2.0 if live else 10.0)
                mic_tr.stage, ref_tr.stage = canceller.microphone, canceller.reference
                self.cancellers[mic] = canceller
        self._started = False
        self._saved = False

    def on(self, listener: Callable[[Event], None]) -> Callable[[], None]:
        """Call ``listener(event)`` for every event of every source; return an unsubscriber.

        See `on_source` for the source's name too.
        """
        return _all([tr.on(listener) for tr in self.transcribers.values()])

    def on_source(self, listener: Callable[[str, Event], None]) -> Callable[[], None]:
        """Call ``listener(source_name, event)`` for every event of every source."""
        return _all([tr.on(functools.partial(listener, name))
                     for name, tr in self.transcribers.items()])

    def start(self) -> MultiTranscriber:
        """Start every source; if one cannot start, stop the others and raise its error."""
        first = next(iter(self.transcribers.values()))
        started = []
        try:
            self.service.start(fast=not first.source.realtime)
            for tr in self.transcribers.values():
                tr.start()
                started.append(tr)
        except BaseException:
            for tr in started:
                tr.stop()
            self._stop_service()
            raise
        self._started = True
        return self

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every source has ended (files) or `timeout`; return whether all have."""
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        for tr in self.transcribers.values():
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not tr.wait(left):
                return False
        return True

    def stop(self, timeout: float | None = None) -> MultiSession:
        """Stop every source (each sends its last audio and waits for its final turns).

        Every source stops at once, within one shared budget (default: the transcribers'
        ``stop_timeout``). With an `out_dir`, the merged session is saved there once.
        """
        import time

        first = next(iter(self.transcribers.values()))
        deadline = time.monotonic() + (first.stop_timeout if timeout is None else timeout)
        for tr in self.transcribers.values():
            tr.request_stop(deadline)
        ended: list[bool] = []
        run_all(*(functools.partial(self._finish, tr, deadline, ended)
                  for tr in self.transcribers.values()), self._stop_service)
        session = self.session
        if len(ended) == len(self.transcribers) and all(ended):
            run_all(functools.partial(self._save_once, session))
        return session

    @staticmethod
    def _finish(tr: Transcriber, deadline: float, ended: list[bool]) -> None:
        # each source's threads end by the deadline; the merged session is saved once, here
        ended.append(tr.finish_stop(deadline, save=False))

    def _save_once(self, session: MultiSession) -> None:
        if self.out_dir is not None and self._started and not self._saved:
            self._saved = True
            session.save(self.out_dir)

    def _stop_service(self) -> None:
        if self._owns_service:
            self.service.stop()

    @property
    def state(self) -> str:
        """``streaming`` while any source streams; ``error`` if one ended with an error."""
        states = [tr.state for tr in self.transcribers.values()]
        for state in ("error", "reconnecting", "connecting", "streaming", "stopping"):
            if state in states:
                return state
        return states[0]

    @property
    def error(self) -> Exception | None:
        """The first error that ended a source early, if any."""
        return next(iter(self.errors.values()), None)

    @property
    def audio_path(self) -> None:
        """Each source has its own WAV (``transcribers[name].audio_path``)."""
        return None

    def stats(self) -> Stats:
        """Progress of all sources together (loudest level, summed audio and drops)."""
        parts = [tr.stats() for tr in self.transcribers.values()]
        return Stats(state=self.state, elapsed=max(p.elapsed for p in parts),
                     audio_seconds=max(p.audio_seconds for p in parts),
                     bytes_sent=sum(p.bytes_sent for p in parts),
                     level_dbfs=max(p.level_dbfs for p in parts),
                     overflows=sum(p.overflows for p in parts))

    @property
    def errors(self) -> dict[str, Exception]:
        """The error that ended each source early, if any."""
        return {n: tr.error for n, tr in self.transcribers.items() if tr.error is not None}

    @property
    def session(self) -> MultiSession:
        """The merged session (live: it grows while the sources run)."""
        starts = {n: tr.first_audio_at for n, tr in self.transcribers.items()}
        known = [t for t in starts.values() if t is not None]
        t0 = min(known) if known else 0.0
        offsets = {n: (t - t0 if t is not None else 0.0) for n, t in starts.items()}
        return MultiSession({n: tr.session for n, tr in self.transcribers.items()}, offsets,
                            echo_of=self.echo_of, include_echo=self.include_echo)

    def __enter__(self) -> MultiTranscriber:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _all(unsubscribers: list[Callable[[], None]]) -> Callable[[], None]:
    """Return one function that calls every unsubscriber."""
    def unsubscribe() -> None:
        for undo in unsubscribers:
            undo()

    return unsubscribe
