"""Normalised cross-correlation with NumPy's FFT (no SciPy needed)."""

from __future__ import annotations

import numpy as np


def best_xcorr(captured: np.ndarray, reference: np.ndarray) -> float:
    """Return the normalised correlation of `reference` with `captured` at the best lag."""
    n = len(captured) + len(reference)
    size = 1 << (n - 1).bit_length()
    spec = np.fft.rfft(captured, size) * np.conj(np.fft.rfft(reference, size))
    corr = np.fft.irfft(spec, size)
    lag = int(np.argmax(corr))
    lag = lag if lag < len(captured) else lag - size
    if lag >= 0:
        a, b = captured[lag : lag + len(reference)], reference[: len(captured) - lag]
    else:
        a, b = captured[: len(reference) + lag], reference[-lag:]
    m = min(len(a), len(b))
    a, b = a[:m], b[:m]
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))
