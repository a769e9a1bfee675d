"""Audio sources: a sound device, a file, an array (and the browser: `nbscribe.browser`).

Every source delivers float32 (or int16) blocks shaped (frames, channels) at its own sample rate
and channel count; `nbscribe.convert.Converter` turns them into what the service wants. Each
satisfies `AudioSource`.
"""

from .arrays import ArraySource, FileSource
from .base import AudioSource
from .device import DeviceSource

__all__ = ["ArraySource", "AudioSource", "DeviceSource", "FileSource"]
