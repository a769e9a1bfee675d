"""Connection parameters of the v3 streaming protocol: validation and query-string encoding.

Both sides use this module: the client validates and encodes parameters before it connects, and
the local server decodes a query string with the service's tolerant rules (booleans in any case,
lists as a JSON array, repeated keys or commas, deprecated aliases).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any

from .errors import ConfigError

__all__ = ["KNOWN_MODELS", "PRO_MODELS", "StreamingParams"]

logger = logging.getLogger(__name__)

#: The U3 Pro family: every final is formatted; partials may revise the text.
PRO_MODELS = frozenset(
    {"u3-rt-pro", "u3-rt-pro-beta-1", "u3-pro", "universal-3-5-pro", "universal-3-6-pro"}
)
#: Every speech model the protocol documents.
KNOWN_MODELS = PRO_MODELS | {
    "universal-streaming-english",
    "universal-streaming-multilingual",
    "whisper-rt",
}
_PRO_ONLY = (
    "prompt",
    "agent_context",
    "previous_context_n_turns",
    "continuous_partials",
    "interruption_delay",
    "voice_focus",
    "voice_focus_threshold",
    "mode",
    "language_codes",
)
_ALIASES = {
    "min_end_of_turn_silence_when_confident": "min_turn_silence",
    "noise_suppression_model": "voice_focus",
    "noise_suppression_threshold": "voice_focus_threshold",
    "language_code": "language_codes",
    "formatted_finals": "format_turns",
    "keyterms": "keyterms_prompt",
}
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}
_LANG = re.compile(r"^[a-z]{2,3}$")


def _unit(name: str, value: float, low: float = 0.0, high: float = 1.0) -> None:
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low:g} and {high:g}, got {value!r}")


@dataclasses.dataclass
class StreamingParams:
    """Every connection parameter of AssemblyAI's v3 streaming API.

    ``None`` means "not sent": the service's default applies. Field names are the wire names.
    Call :meth:`validate` (the client does it before connecting) to check types, ranges and
    combinations; each error names the parameter and what is allowed.

    Attributes
    ----------
    speech_model : str
        ``"u3-rt-pro"`` by default; see `KNOWN_MODELS`.
    sample_rate : int
        Hz of the PCM that is sent (16000 by default).
    encoding : str
        ``"pcm_s16le"`` (default) or ``"pcm_mulaw"``.
    keyterms_prompt : list of str
        Up to 100 terms of at most 50 characters to bias recognition towards.
    min_turn_silence, max_turn_silence : int
        Milliseconds of silence for a speculative / a forced end of turn.
    speaker_labels : bool
        Label speakers (``"A"``, ``"B"`` ...) on turns and words.
    format_turns : bool
        Universal models only: punctuation and casing (Pro models always format).
    """

    speech_model: str = "u3-rt-pro"
    sample_rate: int = 16000
    encoding: str = "pcm_s16le"
    format_turns: bool | None = None
    end_of_turn_confidence_threshold: float | None = None
    min_turn_silence: int | None = None
    max_turn_silence: int | None = None
    vad_threshold: float | None = None
    keyterms_prompt: list[str] | None = None
    prompt: str | None = None
    agent_context: str | None = None
    previous_context_n_turns: int | None = None
    language_detection: bool | None = None
    language_codes: list[str] | None = None
    inactivity_timeout: int | None = None
    speaker_labels: bool | None = None
    max_speakers: int | None = None
    filter_profanity: bool | None = None
    domain: str | None = None
    voice_focus: str | None = None
    voice_focus_threshold: float | None = None
    continuous_partials: bool | None = None
    interruption_delay: int | None = None
    mode: str | None = None
    redact_pii: bool | None = None
    redact_pii_policies: list[str] | None = None
    redact_pii_sub: str | None = None
    include_partial_turns: bool | None = None
    session_heartbeat: bool | None = None
    webhook_url: str | None = None
    webhook_auth_header_name: str | None = None
    webhook_auth_header_value: str | None = None
    customer_support_audio_capture: bool | None = None

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """Return the wire names of every parameter."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> StreamingParams:
        """Build from keyword arguments, refusing unknown names with a helpful message."""
        unknown = sorted(set(kwargs) - set(cls.names()))
        if unknown:
            raise ConfigError(
                f"unknown streaming parameter(s): {', '.join(unknown)}; "
                f"known ones are: {', '.join(cls.names())}"
            )
        return cls(**kwargs)

    @classmethod
    def from_query(cls, pairs: Iterable[tuple[str, str]]) -> tuple[StreamingParams, list[str]]:
        """Decode query-string pairs with the service's tolerant rules, then validate.

        Parameters
        ----------
        pairs : iterable of (str, str)
            As from ``urllib.parse.parse_qsl(query, keep_blank_values=True)``.

        Returns
        -------
        params : StreamingParams
            The decoded, validated parameters.
        ignored : list of str
            Names that are not parameters (``token`` excluded); a server logs them.

        Raises
        ------
        ConfigError
            A value has the wrong type or is out of range.
        """
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        values: dict[str, list[str]] = {}
        ignored: list[str] = []
        for key, raw in pairs:
            if key == "token":
                continue
            name = _ALIASES.get(key, key)
            if name not in types:
                ignored.append(key)
                continue
            values.setdefault(name, []).append(raw)
        kwargs: dict[str, Any] = {}
        for name, raws in values.items():
            kind = str(types[name])
            if "list" in kind:
                kwargs[name] = _decode_list(name, raws)
            else:
                kwargs[name] = _decode_scalar(name, raws[-1], kind)
        params = cls(**kwargs)
        params.validate()
        return params, ignored

    # -- checks and encoding ----------------------------------------------------------------

    def validate(self) -> StreamingParams:
        """Check types, ranges and combinations; return ``self``.

        Raises
        ------
        ConfigError
            Naming the parameter, what it got and what is allowed.
        """
        if not isinstance(self.speech_model, str) or not self.speech_model:
            raise ConfigError("speech_model must be a non-empty string such as 'u3-rt-pro'")
        if self.speech_model not in KNOWN_MODELS:
            logger.warning(
                "speech_model %r is not one of the documented models (%s); sending it anyway",
                self.speech_model,
                ", ".join(sorted(KNOWN_MODELS)),
            )
        if self.encoding not in ("pcm_s16le", "pcm_mulaw"):
            raise ConfigError(
                f"encoding must be 'pcm_s16le' or 'pcm_mulaw', got {self.encoding!r}"
            )
        self._check_types()
        if not 4000 <= self.sample_rate <= 192000:
            raise ConfigError(f"sample_rate must be 4000-192000 Hz, got {self.sample_rate}")
        for name in ("end_of_turn_confidence_threshold", "vad_threshold", "voice_focus_threshold"):
            value = getattr(self, name)
            if value is not None:
                _unit(name, value)
        for name in ("min_turn_silence", "max_turn_silence"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 60000:
                raise ConfigError(f"{name} must be 0-60000 ms, got {value}")
        if (
            self.min_turn_silence is not None
            and self.max_turn_silence is not None
            and self.min_turn_silence > self.max_turn_silence
        ):
            raise ConfigError(
                f"min_turn_silence ({self.min_turn_silence} ms) must not exceed "
                f"max_turn_silence ({self.max_turn_silence} ms)"
            )
        if self.keyterms_prompt is not None:
            if len(self.keyterms_prompt) > 100:
                raise ConfigError(
                    f"keyterms_prompt allows at most 100 terms, got {len(self.keyterms_prompt)}"
                )
            for term in self.keyterms_prompt:
                if not term.strip() or len(term) > 50:
                    raise ConfigError(
                        f"each keyterm must be 1-50 characters (longer ones are ignored by the "
                        f"service), got {term!r}"
                    )
        if self.language_codes is not None:
            codes = self.language_codes
            if len(codes) > 10:
                raise ConfigError(f"language_codes allows at most 10 codes, got {len(codes)}")
            if "multi" in codes and len(codes) > 1:
                raise ConfigError("language_codes: 'multi' must stand alone")
            bad = [c for c in codes if c != "multi" and not _LANG.match(c)]
            if bad:
                raise ConfigError(f"language_codes must be ISO 639-1 codes like 'en', got {bad}")
        ranges = {
            "inactivity_timeout": (5, 3600),
            "max_speakers": (1, 10),
            "interruption_delay": (0, 1000),
            "previous_context_n_turns": (0, 100),
        }
        for name, (low, high) in ranges.items():
            value = getattr(self, name)
            if value is not None and not low <= value <= high:
                raise ConfigError(f"{name} must be {low}-{high}, got {value}")
        if self.max_speakers is not None and not self.speaker_labels:
            raise ConfigError("max_speakers needs speaker_labels=True")
        choices = {
            "voice_focus": ("near-field", "far-field"),
            "mode": ("min_latency", "balanced", "max_accuracy"),
            "redact_pii_sub": ("hash", "entity_name"),
        }
        for name, allowed in choices.items():
            value = getattr(self, name)
            if value is not None and value not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
        if self.agent_context is not None and len(self.agent_context) > 1750:
            raise ConfigError(
                f"agent_context allows at most 1750 characters, got {len(self.agent_context)}"
            )
        if self.speech_model in KNOWN_MODELS and self.speech_model not in PRO_MODELS:
            used = [n for n in _PRO_ONLY if getattr(self, n) is not None]
            if used:
                raise ConfigError(
                    f"{', '.join(used)} only work with the U3 Pro models "
                    f"({', '.join(sorted(PRO_MODELS))}), not {self.speech_model!r}"
                )
        return self

    def _check_types(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            kind = str(f.type)
            if "bool" in kind:
                ok = isinstance(value, bool)
            elif "int" in kind:
                ok = isinstance(value, int) and not isinstance(value, bool)
            elif "float" in kind:
                ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            elif "list" in kind:
                ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
                if ok:
                    setattr(self, f.name, list(value))
            else:
                ok = isinstance(value, str)
            if not ok:
                raise ConfigError(f"{f.name} must be of type {kind}, got {value!r}")

    def to_query(self) -> list[tuple[str, str]]:
        """Encode as query pairs: ``true``/``false``, lists as JSON arrays, ``None`` omitted."""
        pairs = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, (list, tuple, dict)):
                text = json.dumps(list(value) if isinstance(value, tuple) else value)
            else:
                text = str(value)
            pairs.append((f.name, text))
        return pairs

    def to_dict(self) -> dict[str, Any]:
        """Return the parameters that are set, without webhook secrets."""
        out = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        if "webhook_auth_header_value" in out:
            out["webhook_auth_header_value"] = "***"
        return out

    def replace(self, **changes: Any) -> StreamingParams:
        """Return a copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    @property
    def is_pro(self) -> bool:
        """Whether the model is of the U3 Pro family (formatted finals, revising partials)."""
        return self.speech_model in PRO_MODELS


def _decode_scalar(name: str, raw: str, kind: str) -> Any:
    text = raw.strip()
    try:
        if "bool" in kind:
            low = text.lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError(raw)
        if "int" in kind:
            number = float(text)
            if number != int(number):
                raise ValueError(raw)
            return int(number)
        if "float" in kind:
            return float(text)
    except ValueError:
        raise ConfigError(f"{name}: cannot read {raw!r} as {kind.split(' ')[0]}") from None
    return raw


def _decode_list(name: str, raws: list[str]) -> list[str]:
    out: list[str] = []
    for raw in raws:
        text = raw.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                raise ConfigError(f"{name}: invalid JSON array {raw!r}") from None
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{name}: expected a JSON array of strings, got {raw!r}")
            out.extend(value)
        elif text:
            out.extend(part.strip() for part in text.split(",") if part.strip())
    return out


def merge_update(params: StreamingParams, update: Mapping[str, Any]) -> StreamingParams:
    """Apply the fields of an ``UpdateConfiguration`` message to a copy of `params`.

    Unknown fields are ignored; the result is validated.
    """
    known = set(StreamingParams.names())
    changes = {_ALIASES.get(k, k): v for k, v in update.items() if _ALIASES.get(k, k) in known}
    return params.replace(**changes).validate()
