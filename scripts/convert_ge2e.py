"""Convert Resemblyzer's GE2E voice encoder checkpoint to the NumPy file nbscribe ships.

Usage::

    pip download --no-deps resemblyzer==0.1.4      # a 15 MB wheel; torch is not needed
    python scripts/convert_ge2e.py Resemblyzer-0.1.4-py3-none-any.whl nbscribe/server/ge2e.npz

``pretrained.pt`` is a legacy (pre-zip) PyTorch pickle. It is read here with a restricted
unpickler that knows three names (an OrderedDict, torch's tensor rebuild function and its float
storage) and refuses every other class, so nothing in the file is executed; the tensors are
rebuilt as NumPy arrays from the raw storages that follow the pickle. The weights are written as
float16 (2.9 MB; the embeddings they give differ from float32's by a cosine of about 1e-5).
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import sys
import zipfile

import numpy as np


class _FloatStorage:
    """Stands in for ``torch.FloatStorage`` in the pickle."""


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return lambda storage, offset, size, stride, *rest: ("tensor", storage, offset, size,
                                                                stride)
        if (module, name) == ("torch", "FloatStorage"):
            return _FloatStorage
        raise pickle.UnpicklingError(f"refusing {module}.{name}")

    def persistent_load(self, pid: tuple) -> tuple:
        _kind, storage_type, key, _location, size = pid[:5]
        if storage_type is not _FloatStorage:
            raise pickle.UnpicklingError("only float32 storages are expected")
        return ("storage", key, size)


def read_checkpoint(f: io.BufferedIOBase) -> dict[str, np.ndarray]:
    """Return the state dict of a legacy PyTorch checkpoint as float32 arrays."""
    for _ in range(3):  # magic number, protocol version, system info
        pickle.load(f)
    obj = _Unpickler(f).load()
    keys = pickle.load(f)
    storages = {}
    for key in keys:
        (count,) = struct.unpack("<q", f.read(8))
        storages[key] = np.frombuffer(f.read(count * 4), dtype="<f4")
    state = obj.get("model_state", obj)
    out = {}
    for name, value in state.items():
        _tag, (_s, key, _size), offset, shape, stride = value
        data = storages[key][offset:]
        out[name] = np.lib.stride_tricks.as_strided(
            data, shape=shape, strides=[s * 4 for s in stride]).copy()
    return out


def main(wheel: str, target: str) -> None:
    """Write the float16 weights of the checkpoint in `wheel` to `target` (a ``.npz``)."""
    with zipfile.ZipFile(wheel) as z, z.open("resemblyzer/pretrained.pt") as raw:
        weights = read_checkpoint(io.BufferedReader(io.BytesIO(raw.read())))
    np.savez_compressed(target, **{k: v.astype(np.float16) for k, v in weights.items()})
    for k, v in weights.items():
        print(f"{k:24} {tuple(v.shape)}")  # noqa: T201 - a command-line script


if __name__ == "__main__":
    main(*sys.argv[1:3])
