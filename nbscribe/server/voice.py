"""A speaker (voice) encoder in NumPy: one 256-number fingerprint per stretch of speech.

The model is the GE2E speaker encoder of Resemblyzer (Wan et al., "Generalized End-to-End Loss
for Speaker Verification", 2018; weights trained by Resemble AI, Apache-2.0, see
``ge2e-NOTICE.md`` beside the weights): 40 mel bands every 10 ms, a 3-layer LSTM of 256 units, a
linear layer with ReLU, and L2 normalisation. An utterance is cut into 1.6 s windows ("partials")
that overlap by half; its embedding is the normalised mean of theirs. Two embeddings of one voice
have a cosine similarity around 0.75-0.9, two voices usually below 0.65.

The weights ship with nbscribe as ``ge2e.npz`` (float16, 2.9 MB), converted once from the
``pretrained.pt`` of the PyPI wheel ``resemblyzer`` 0.1.4 by ``scripts/convert_ge2e.py`` with a
restricted unpickler that builds arrays and nothing else. Loading them needs NumPy only: no
PyTorch, no download, no code executed from the checkpoint.
"""

from __future__ import annotations

import functools
import importlib.resources
import logging

import numpy as np

from .pcm import RATE

__all__ = ["FRAME", "PARTIAL", "VoiceEncoder", "cosine"]

logger = logging.getLogger(__name__)

N_FFT = 400  # 25 ms
FRAME = 160  # hop: 10 ms at 16 kHz
N_MELS = 40
PARTIAL = 160  # frames in one window of the encoder: 1.6 s
HIDDEN = 256
TARGET_DBFS = -30.0


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two vectors."""
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0 or nb == 0:
        return 0.0
    return float(a @ b) / (na * nb)


@functools.lru_cache(maxsize=1)
def _weights() -> dict[str, np.ndarray]:
    ref = importlib.resources.files("nbscribe.server").joinpath("ge2e.npz")
    with ref.open("rb") as f, np.load(f) as npz:
        return {k: npz[k].astype(np.float32) for k in npz.files}


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    # Slaney's scale (librosa's default): linear below 1 kHz, logarithmic above.
    f = np.asarray(f, dtype=np.float64)
    log_step = np.log(6.4) / 27.0
    return np.where(f >= 1000.0, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / log_step,
                    f * 3.0 / 200.0)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    log_step = np.log(6.4) / 27.0
    return np.where(m >= 15.0, 1000.0 * np.exp(log_step * (m - 15.0)), m * 200.0 / 3.0)


@functools.lru_cache(maxsize=1)
def _mel_basis() -> np.ndarray:
    """Return the (40, 201) Slaney-normalised mel filterbank the encoder was trained with."""
    fft_hz = np.linspace(0, RATE / 2, 1 + N_FFT // 2)
    mel_hz = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(RATE / 2), N_MELS + 2))
    widths = np.diff(mel_hz)
    ramps = mel_hz[:, None] - fft_hz[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    basis = np.maximum(0, np.minimum(lower, upper))
    basis *= (2.0 / (mel_hz[2:] - mel_hz[:-2]))[:, None]
    return basis.astype(np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # the same function, without overflow warnings


class VoiceEncoder:
    """GE2E speaker embeddings of 16 kHz float32 audio.

    Thread-safe: it keeps no state between calls. Make one and share it.

    Examples
    --------
    >>> enc = VoiceEncoder()
    >>> frames = enc.mel(audio)               # (n, 40), one row per 10 ms
    >>> e = enc.embed_frames(frames)          # (256,), unit length
    """

    def __init__(self) -> None:
        w = _weights()
        # PyTorch orders the gates (input, forget, cell, output); put the cell gate last so
        # that one sigmoid covers the three others.
        order = np.r_[0:2 * HIDDEN, 3 * HIDDEN:4 * HIDDEN, 2 * HIDDEN:3 * HIDDEN]
        self._layers = [
            (w[f"lstm.weight_ih_l{i}"][order].T.copy(), w[f"lstm.weight_hh_l{i}"][order].T.copy(),
             (w[f"lstm.bias_ih_l{i}"] + w[f"lstm.bias_hh_l{i}"])[order])
            for i in range(3)
        ]
        self._linear = (w["linear.weight"].T.copy(), w["linear.bias"])
        self._mel = _mel_basis().T.copy()
        self._window = np.hanning(N_FFT + 1)[:-1].astype(np.float32)

    def mel(self, audio: np.ndarray) -> np.ndarray:
        """Return the mel power spectrogram of `audio`, shape ``(1 + len // 160, 40)``.

        The audio is first brought to -30 dBFS, as in training, so that the level of a voice
        does not change its fingerprint.
        """
        audio = np.asarray(audio, dtype=np.float32)
        rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) if audio.size else 0.0
        if rms > 1e-6:
            audio = audio * np.float32(10 ** (TARGET_DBFS / 20) / rms)
        if audio.size < N_FFT // 2 + 1:
            audio = np.pad(audio, (0, N_FFT // 2 + 1 - audio.size))
        padded = np.pad(audio, N_FFT // 2, mode="reflect")
        n = 1 + (len(padded) - N_FFT) // FRAME
        frames = np.lib.stride_tricks.as_strided(
            padded, (n, N_FFT), (padded.strides[0] * FRAME, padded.strides[0]), writeable=False
        )
        spectrum = np.fft.rfft(frames * self._window, axis=1)
        power = (spectrum.real ** 2 + spectrum.imag ** 2).astype(np.float32)
        return power @ self._mel

    def embed_windows(self, windows: np.ndarray) -> np.ndarray:
        """Embed a batch of mel windows, shape ``(b, t, 40)`` -> ``(b, 256)`` (unit rows)."""
        x = np.asarray(windows, dtype=np.float32)
        b, t, _ = x.shape
        for w_ih, w_hh, bias in self._layers:
            gates_in = (x.reshape(b * t, -1) @ w_ih + bias).reshape(b, t, 4 * HIDDEN)
            h = np.zeros((b, HIDDEN), dtype=np.float32)
            c = np.zeros((b, HIDDEN), dtype=np.float32)
            out = np.empty((b, t, HIDDEN), dtype=np.float32)
            for step in range(t):
                g = gates_in[:, step] + h @ w_hh
                ifo = _sigmoid(g[:, :3 * HIDDEN])
                c = ifo[:, HIDDEN:2 * HIDDEN] * c + ifo[:, :HIDDEN] * np.tanh(g[:, 3 * HIDDEN:])
                h = ifo[:, 2 * HIDDEN:] * np.tanh(c)
                out[:, step] = h
            x = out
        w, bias = self._linear
        e = np.maximum(0.0, x[:, -1] @ w + bias)
        norms = np.linalg.norm(e, axis=1, keepdims=True)
        return e / np.maximum(norms, 1e-9)

    def window_starts(self, n_frames: int, step: int = PARTIAL // 2) -> list[int]:
        """Start frames of the windows that cover `n_frames` (the last one ends at the end)."""
        if n_frames <= PARTIAL:
            return [0]
        starts = list(range(0, n_frames - PARTIAL + 1, step))
        if starts[-1] + PARTIAL < n_frames:
            starts.append(n_frames - PARTIAL)
        return starts

    def windows(self, frames: np.ndarray, starts: list[int]) -> np.ndarray:
        """Stack the windows of `frames` that begin at `starts` (short input is zero-padded)."""
        if len(frames) < PARTIAL:
            frames = np.pad(frames, ((0, PARTIAL - len(frames)), (0, 0)))
        return np.stack([frames[s:s + PARTIAL] for s in starts])

    def embed_frames(self, frames: np.ndarray) -> np.ndarray:
        """Embed one utterance given as mel frames: the normalised mean of its windows."""
        partials = self.embed_windows(self.windows(frames, self.window_starts(len(frames))))
        return _unit(partials.mean(axis=0))

    def embed(self, audio: np.ndarray) -> np.ndarray:
        """Embed one utterance of 16 kHz float32 audio."""
        return self.embed_frames(self.mel(audio))


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v
