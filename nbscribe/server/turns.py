"""Turn detection for one session of the local server: when a turn starts and ends, what it says.

`TurnEngine` is synchronous and pull-based: feed it PCM with `feed`, and it returns the events
(`SpeechStarted`, partial and final `Turn`, in the U3-Pro shape) that the audio caused; the server
encodes them with `nbscribe.messages`. A turn starts when the voice activity detector hears
speech (``SpeechStarted``); while it is open the turn's audio is re-decoded about once a second
(a partial ``Turn`` that may revise earlier text); it ends after ``max_turn_silence`` of silence,
or after ``min_turn_silence`` when the text so far ends a sentence, or on `force_endpoint` /
`finish`, with one formatted final ``Turn`` whose words are all final.

The speech recogniser and the detector come in through two small interfaces, `Decoder` and
`VoiceDetector`; the real ones (Whisper, Silero) are in `nbscribe.server.whisper`, and tests pass
scripted ones. Word times are integer milliseconds from the start of the session's audio.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..events import SpeakerRevision, SpeechStarted, Turn, Word
from ..params import StreamingParams
from .pcm import RATE, WINDOW, PcmDecoder

if TYPE_CHECKING:
    from .speakers import SpeakerLabeller

__all__ = ["Decoder", "EngineSettings", "TurnEngine", "VoiceDetector", "WordTiming"]

logger = logging.getLogger(__name__)

_SENTENCE_END = (".", "?", "!")
_WINDOW_MS = WINDOW * 1000 // RATE

#: One decoded word: its text, start and end (seconds from the start of the audio decoded),
#: and its probability.
WordTiming = tuple[str, float, float, float]


class Decoder(Protocol):
    """Writes what is said in a stretch of audio (`nbscribe.server.whisper.WhisperEngine`)."""

    def transcribe(self, audio: np.ndarray, *, language: str | None = None,
                   hotwords: str | None = None, prompt: str | None = None
                   ) -> tuple[str, list[WordTiming]]:
        """Return the text of float32 16 kHz `audio` ("" for none) and its words."""


class VoiceDetector(Protocol):
    """Tells speech from silence (`nbscribe.server.whisper.SileroStream`); keeps state."""

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        """Return the speech probability of each row of `windows`, shape ``(n, WINDOW)``."""


@dataclasses.dataclass
class EngineSettings:
    """Turn detection settings; the connection parameters override them where given.

    Attributes
    ----------
    min_turn_silence : int
        ms of silence after which a turn whose text ends a sentence is closed.
    max_turn_silence : int
        ms of silence after which a turn is closed regardless.
    vad_threshold : float
        Speech probability from which a window counts as speech.
    first_partial_ms, partial_interval_ms : int
        When the first partial of a turn is sent, and how often after it.
    max_turn_ms : int
        A turn is closed when it grows this long (Whisper decodes 30 s at most).
    preroll_ms : int
        Audio kept from before speech starts, so first syllables are not cut.
    """

    min_turn_silence: int = 400
    max_turn_silence: int = 1000
    vad_threshold: float = 0.5
    first_partial_ms: int = 500
    partial_interval_ms: int = 1000
    max_turn_ms: int = 25_000
    preroll_ms: int = 250

    def with_params(self, params: StreamingParams) -> EngineSettings:
        """Return these settings with the session's parameters applied."""
        changes: dict[str, Any] = {}
        for name in ("min_turn_silence", "max_turn_silence", "vad_threshold"):
            value = getattr(params, name)
            if value is not None:
                changes[name] = value
        if params.interruption_delay is not None:
            changes["first_partial_ms"] = params.interruption_delay + 256
        out = dataclasses.replace(self, **changes)
        out.min_turn_silence = min(out.min_turn_silence, out.max_turn_silence)
        return out


class TurnEngine:
    """Turn detection and transcription for one session.

    Parameters
    ----------
    engine : Decoder
        The recogniser, shared by the server's sessions (a `WhisperEngine`).
    params : StreamingParams
        The session's connection parameters (sample rate, encoding, keyterms, silences ...).
    settings : EngineSettings, optional
        Defaults for what the parameters leave unset.
    vad : VoiceDetector, optional
        This session's own detector; default a new Silero VAD (needs faster-whisper).
    speakers : SpeakerLabeller, optional
        Labels final turns by voice (and splits them where the voice changes); the server
        passes one when the session asks for ``speaker_labels``.
    """

    def __init__(self, engine: Decoder, params: StreamingParams,
                 settings: EngineSettings | None = None,
                 vad: VoiceDetector | None = None,
                 speakers: SpeakerLabeller | None = None) -> None:
        if vad is None:
            from .whisper import SileroStream

            vad = SileroStream()
        self.engine = engine
        self.vad = vad
        self.speakers = speakers
        self.base_settings = settings or EngineSettings()
        self.params = params
        self.settings = self.base_settings.with_params(params)
        self.turn_order = 0
        self.samples = 0  # 16 kHz samples consumed so far
        self.decodes = 0
        self.decode_seconds = 0.0  # wall time of the last decode
        self._pcm = PcmDecoder(params.sample_rate)
        self._pending = np.zeros(0, dtype=np.float32)
        self._partials = True
        self._preroll: list[np.ndarray] = []
        self._turn: list[np.ndarray] | None = None
        self._turn_start = 0
        self._speech_run = 0
        self._speech_windows = 0
        self._silence_ms = 0
        self._checked_this_silence = False
        self._next_partial_ms = 0
        self._last_partial = ""
        self._last_decode: tuple[int, str, list[WordTiming]] | None = None

    # -- input --------------------------------------------------------------------------------

    def update(self, params: StreamingParams) -> None:
        """Apply an ``UpdateConfiguration`` (silences, keyterms, prompt)."""
        self.params = params
        self.settings = self.base_settings.with_params(params)

    def decode_pcm(self, data: bytes) -> np.ndarray:
        """Turn the wire bytes into float32 samples at 16 kHz."""
        return self._pcm(data, self.params.encoding)

    def feed(self, data: bytes, partials: bool = True) -> list[SpeechStarted | Turn]:
        """Consume audio bytes; return the events it caused (maybe none).

        Parameters
        ----------
        data : bytes
            Audio in the session's encoding and sample rate.
        partials : bool
            Whether partial turns may be decoded; a server catching up on a backlog passes
            ``False`` so that only turn ends cost a decode.
        """
        self._partials = partials
        audio = self.decode_pcm(data)
        buf = np.concatenate([self._pending, audio]) if self._pending.size else audio
        n = len(buf) // WINDOW
        self._pending = buf[n * WINDOW :].copy()
        if n == 0:
            return []
        windows = buf[: n * WINDOW].reshape(n, WINDOW)
        probs = self.vad(windows)
        out: list[SpeechStarted | Turn] = []
        for window, prob in zip(windows, probs, strict=True):
            out += self._step(window, float(prob))
        return out

    def _step(self, window: np.ndarray, prob: float) -> list[SpeechStarted | Turn]:
        self.samples += WINDOW
        if self._turn is None:
            return self._listen(window, prob)
        s = self.settings
        self._turn.append(window)
        turn_ms = len(self._turn) * _WINDOW_MS
        if prob >= s.vad_threshold - 0.15:
            self._speech_windows = len(self._turn)
            self._silence_ms = 0
            self._checked_this_silence = False
        else:
            self._silence_ms += _WINDOW_MS
        if self._silence_ms >= s.max_turn_silence or turn_ms >= s.max_turn_ms:
            return self._finalize()
        if self._silence_ms >= s.min_turn_silence and not self._checked_this_silence:
            self._checked_this_silence = True
            text, words = self._decode()
            if text.endswith(_SENTENCE_END):
                return self._finalize(text, words)
            return self._partial(text, words)
        if self._silence_ms == 0 and turn_ms >= self._next_partial_ms and self._partials:
            # Partials are optional: when decoding is slow they come less often, so the engine
            # never falls behind the audio.
            interval = max(s.partial_interval_ms, int(2000 * self.decode_seconds))
            self._next_partial_ms = turn_ms + interval
            return self._partial(*self._decode())
        return []

    def _listen(self, window: np.ndarray, prob: float) -> list[SpeechStarted | Turn]:
        """Between turns: keep a little audio, and open a turn after 64 ms of speech."""
        s = self.settings
        self._preroll.append(window)
        max_pre = max(1, s.preroll_ms * RATE // 1000 // WINDOW)
        del self._preroll[:-max_pre - 2]
        self._speech_run = self._speech_run + 1 if prob >= s.vad_threshold else 0
        if self._speech_run < 2:
            return []
        keep = min(len(self._preroll), self._speech_run + max_pre)
        self._turn = self._preroll[-keep:]
        self._preroll = []
        self._turn_start = self.samples - keep * WINDOW
        speech_ms = (self.samples - self._speech_run * WINDOW) * 1000 // RATE
        self._silence_ms = 0
        self._checked_this_silence = False
        self._next_partial_ms = s.first_partial_ms
        self._last_partial = ""
        self._last_decode = None
        self._speech_windows = len(self._turn)
        return [SpeechStarted(timestamp=int(speech_ms), confidence=round(prob, 6))]

    # -- decoding -----------------------------------------------------------------------------

    def _decode(self) -> tuple[str, list[WordTiming]]:
        assert self._turn is not None
        # Silence added since the last decode does not change the words: reuse it.
        if self._last_decode is not None and self._last_decode[0] == self._speech_windows:
            return self._last_decode[1], self._last_decode[2]
        audio = np.concatenate(self._turn)
        self.decodes += 1
        keyterms = self.params.keyterms_prompt
        language = (self.params.language_codes or [None])[0]
        started = time.perf_counter()
        result = self.engine.transcribe(
            audio,
            language=None if language == "multi" else language,
            hotwords=" ".join(keyterms) if keyterms else None,
            prompt=self.params.prompt,
        )
        self.decode_seconds = time.perf_counter() - started
        self._last_decode = (self._speech_windows, *result)
        return result

    def _words(self, words: list[WordTiming], final: bool) -> tuple[Word, ...]:
        base = self._turn_start * 1000 / RATE
        return tuple(
            Word(text=text, start=round(base + start * 1000), end=round(base + end * 1000),
                 confidence=round(prob, 6), word_is_final=final)
            for text, start, end, prob in words
        )

    def _partial(self, text: str, words: list[WordTiming]) -> list[SpeechStarted | Turn]:
        if not text or text == self._last_partial:
            return []
        self._last_partial = text
        return [Turn(turn_order=self.turn_order, transcript=text, end_of_turn=False,
                     turn_is_formatted=False, end_of_turn_confidence=0.0,
                     words=self._words(words, final=False), utterance="")]

    def _finalize(self, text: str | None = None, words: list[WordTiming] | None = None
                  ) -> list[SpeechStarted | Turn]:
        if self._turn is None:
            return []
        if text is None or words is None:
            text, words = self._decode()
        audio = self._turn
        self._turn = None
        self._speech_run = 0
        if not text:
            return []  # the detector heard something the decoder found no words in
        final = Turn(turn_order=self.turn_order, transcript=text, end_of_turn=True,
                     turn_is_formatted=True, end_of_turn_confidence=1.0,
                     words=self._words(words, final=True), utterance=text)
        finals = [final]
        if self.speakers is not None:
            finals = self.speakers.label(final, np.concatenate(audio),
                                         self._turn_start * 1000 / RATE)
        self.turn_order += len(finals)
        return list(finals)

    def force_endpoint(self) -> list[SpeechStarted | Turn]:
        """End the open turn now (``ForceEndpoint``)."""
        return self._finalize()

    def finish(self) -> list[SpeechStarted | Turn | SpeakerRevision]:
        """Flush everything at ``Terminate``.

        That is the partial window, the open turn, and the speaker labels that the voices of
        the whole session change (a ``SpeakerRevision``).
        """
        if self._pending.size and self._turn is not None:
            pad = np.zeros(WINDOW - self._pending.size, dtype=np.float32)
            self._turn.append(np.concatenate([self._pending, pad]))
            self._pending = np.zeros(0, dtype=np.float32)
        out: list[SpeechStarted | Turn | SpeakerRevision] = list(self._finalize())
        if self.speakers is not None:
            revision = self.speakers.revise()
            if revision is not None:
                out.append(revision)
        return out

    @property
    def audio_seconds(self) -> float:
        """Seconds of audio consumed."""
        return self.samples / RATE
