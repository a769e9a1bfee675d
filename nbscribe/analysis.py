"""Analysis of a session's turns with pandas: talk time, pace, pauses, overlaps, keyword search.

Every function takes the ``turns`` (or ``words``) DataFrame of a `Session` (columns ``start``,
``end`` in seconds, ``speaker``, ``text`` ...) and returns a DataFrame, so the results can be
sorted, plotted and exported like any other. Turns without a speaker count as ``"?"``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["find", "gaps", "speaker_stats", "timeline"]


def _clean(turns: pd.DataFrame) -> pd.DataFrame:
    need = {"start", "end", "text"}
    missing = need - set(turns.columns)
    if missing:
        raise ValueError(
            f"expected a turns DataFrame with {sorted(need)}; missing {sorted(missing)}"
        )
    out = turns.dropna(subset=["start", "end"]).copy()
    speaker = out["speaker"] if "speaker" in out else None
    out["speaker"] = speaker.fillna("?").astype("string") if speaker is not None else "?"
    return out.sort_values("start", kind="stable").reset_index(drop=True)


def speaker_stats(turns: pd.DataFrame) -> pd.DataFrame:
    """Talk time, share, turns, words and words per minute for each speaker.

    Returns
    -------
    pandas.DataFrame
        Indexed by speaker: ``turns``, ``words``, ``talk_seconds``, ``share`` (of all talk
        time), ``words_per_minute`` (words over that speaker's talk time) and
        ``mean_turn_seconds``; sorted by talk time.
    """
    import pandas as pd

    t = _clean(turns)
    t["seconds"] = (t["end"] - t["start"]).clip(lower=0)
    t["n"] = t["text"].fillna("").str.split().str.len()
    g = t.groupby("speaker", observed=True)
    stats = pd.DataFrame({
        "turns": g.size(),
        "words": g["n"].sum(),
        "talk_seconds": g["seconds"].sum(),
    })
    total = stats["talk_seconds"].sum()
    stats["share"] = stats["talk_seconds"] / total if total > 0 else 0.0
    minutes = stats["talk_seconds"] / 60
    stats["words_per_minute"] = (stats["words"] / minutes).where(minutes > 0)
    stats["mean_turn_seconds"] = stats["talk_seconds"] / stats["turns"]
    return stats.sort_values("talk_seconds", ascending=False)


def gaps(turns: pd.DataFrame) -> pd.DataFrame:
    """Measure the space between consecutive turns: a pause (> 0) or an overlap (< 0).

    Returns
    -------
    pandas.DataFrame
        One row per pair of consecutive turns: ``after`` and ``before`` (speakers), ``start``
        (end of the earlier turn), ``seconds`` (next start minus this end), ``kind``
        (``"pause"``, ``"overlap"`` or ``"none"``) and ``handover`` (whether the speaker
        changed).
    """
    import pandas as pd

    t = _clean(turns)
    if len(t) < 2:
        return pd.DataFrame(columns=["after", "before", "start", "seconds", "kind", "handover"])
    prev, nxt = t.iloc[:-1].reset_index(drop=True), t.iloc[1:].reset_index(drop=True)
    seconds = nxt["start"] - prev["end"]
    kind = seconds.map(lambda s: "pause" if s > 0 else ("overlap" if s < 0 else "none"))
    return pd.DataFrame({
        "after": prev["speaker"],
        "before": nxt["speaker"],
        "start": prev["end"],
        "seconds": seconds,
        "kind": kind.astype("string"),
        "handover": prev["speaker"] != nxt["speaker"],
    })


def find(frame: pd.DataFrame, pattern: str, *, regex: bool = False,
         case: bool = False) -> pd.DataFrame:
    """Find turns (or words) whose text contains `pattern`, with their times.

    Parameters
    ----------
    frame : pandas.DataFrame
        ``session.turns`` or ``session.words``.
    pattern : str
        A word or phrase (whole words), or a regular expression with ``regex=True``.
    regex, case : bool
        Treat `pattern` as a regular expression; match case.

    Returns
    -------
    pandas.DataFrame
        The matching rows, with a ``match`` column holding the text that matched.
    """
    expr = pattern if regex else r"\b" + re.escape(pattern) + r"\b"
    flags = 0 if case else re.IGNORECASE
    text = frame["text"].fillna("").astype(str)
    found = text.str.extract(f"({expr})", flags=flags, expand=False)
    out = frame[found.notna()].copy()
    out["match"] = found[found.notna()]
    return out


def timeline(turns: pd.DataFrame, ax=None, title: str | None = "Who spoke when"):
    """Plot turns as horizontal bars per speaker (a Gantt chart); return the matplotlib axes."""
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("the timeline needs matplotlib: pip install matplotlib") from None
    t = _clean(turns)
    speakers = list(dict.fromkeys(t["speaker"]))
    if ax is None:
        _, ax = plt.subplots(figsize=(10, 0.6 * max(2, len(speakers)) + 1))
    for i, spk in enumerate(speakers):
        rows = t[t["speaker"] == spk]
        ax.broken_barh(list(zip(rows["start"], rows["end"] - rows["start"], strict=True)),
                       (i - 0.4, 0.8))
    ax.set_yticks(range(len(speakers)), speakers)
    ax.set_xlabel("seconds")
    if title:
        ax.set_title(title)
    return ax
