"""Analysis of a session's turns with pandas: talk time, pace, pauses, overlaps, keyword search.

Every function takes the ``turns`` (or ``words``) DataFrame of a `Session` (columns ``start``,
``end`` in seconds, ``speaker``, ``text`` ...) and returns a DataFrame, so the results can be
sorted, plotted and exported like any other. Turns without a speaker count as ``"?"``.
"""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["CallSummary", "find", "gaps", "speaker_stats", "summary", "timeline"]


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


_DAYS = ("monday|tuesday|wednesday|thursday|friday|saturday|sunday|weekend|today|tonight|"
         "tomorrow|next week|next month|this week|this afternoon|this morning|this evening|"
         "end of (?:the )?(?:day|week|month|quarter|year)")
_MONTHS = ("january|february|march|april|may|june|july|august|september|october|november|"
           "december")
_WHEN = re.compile(
    rf"\b(?:(?:by|before|on|until|from|next|this|after)\s+)?(?:{_DAYS}|(?:{_MONTHS})\s+\d{{1,2}}"
    rf"(?:st|nd|rd|th)?|\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?(?:{_MONTHS})|"
    r"\d{1,2}(?::\d{2})?\s*(?:am|pm|o'clock))\b", re.IGNORECASE)
#: What makes a sentence a candidate action item or decision, in the order they are tried.
_ACTIONS = [
    ("decision", re.compile(
        r"\b(?:we(?:'ve| have)? (?:decided|agreed)|(?:it's|it is) decided|let's go with|"
        r"we(?:'ll| will) go with|the plan is|final decision)\b", re.IGNORECASE)),
    ("request", re.compile(
        r"\b(?:(?:can|could|would|will) you|please|you(?:'ll| will) need to|"
        r"you should|make sure)\b", re.IGNORECASE)),
    ("commitment", re.compile(
        r"\b(?:i(?:'ll| will| shall)|i(?:'m| am) going to|we(?:'ll| will| shall)|"
        r"we(?:'re| are) going to|let me|let's)\b", re.IGNORECASE)),
]


@dataclasses.dataclass
class CallSummary:
    """The shape of a call at a glance (`summary`): who talked how, and what was agreed.

    Attributes
    ----------
    people : pandas.DataFrame
        One row per speaker (or source).
    actions : pandas.DataFrame
        Candidate action items and decisions, one row per sentence.
    """

    people: pd.DataFrame
    actions: pd.DataFrame

    def _repr_html_(self) -> str:
        return (f"<h4>Who talked how</h4>{self.people.to_html(float_format='%.2f')}"
                f"<h4>Action items and decisions (candidates)</h4>"
                f"{self.actions.to_html(index=False, float_format='%.1f')}")


def _sentences(text: str) -> list[str]:
    return [x.strip() for x in re.split(r"(?<=[.?!])\s+", text or "") if x.strip()]


def summary(turns: pd.DataFrame, by: str | None = None) -> CallSummary:
    """Summarise a call without a language model: per person, and its action items.

    Parameters
    ----------
    turns : pandas.DataFrame
        ``session.turns`` (or a filtered copy); a merged "You vs Others" frame works too.
    by : str, optional
        The column that names people: default ``"source"`` when the frame has one (You vs
        Others), else ``"speaker"``.

    Returns
    -------
    CallSummary
        ``people``, indexed by person: ``talk_seconds``, ``share`` (of all talk time; the
        shares add up to 1), ``turns``, ``words``, ``words_per_minute``,
        ``longest_monologue_seconds`` (the longest stretch of consecutive turns by that person,
        first start to last end), ``questions`` (sentences ending in ``?``), ``interruptions``
        (turns begun before the other side's turn had ended) and ``response_seconds`` (the
        median pause before this person took over from someone else).
        ``actions``: ``start``, ``end``, the person, ``kind`` (``decision``, ``request`` or
        ``commitment``), ``when`` (a day, date or time named in it, if any) and ``text`` (the
        sentence). They are candidates found by phrasing ("can you ...", "I'll ...", "we
        agreed ..."): read them, do not file them unread.
    """
    import numpy as np
    import pandas as pd

    who = by or ("source" if "source" in turns.columns else "speaker")
    t = _clean(turns)
    if who != "speaker":
        if who not in t.columns:
            raise ValueError(f"no column {who!r} to name people by; the frame has "
                             f"{list(turns.columns)}")
        t["speaker"] = t[who].fillna("?").astype("string")
    t["seconds"] = (t["end"] - t["start"]).clip(lower=0)
    t["n"] = t["text"].fillna("").str.split().str.len()
    t["questions"] = t["text"].fillna("").map(
        lambda x: sum(1 for sent in _sentences(x) if sent.endswith("?")))
    columns = ["talk_seconds", "share", "turns", "words", "words_per_minute", "questions",
               "interruptions", "response_seconds", "longest_monologue_seconds"]
    if t.empty:
        return CallSummary(pd.DataFrame(columns=columns).rename_axis(who),
                           pd.DataFrame(columns=["start", "end", who, "kind", "when", "text"]))
    spk = t["speaker"].astype(object).to_numpy()
    took_over = np.r_[False, spk[1:] != spk[:-1]]  # someone else spoke the turn before
    # runs of consecutive turns by one person
    run = np.cumsum(np.r_[True, spk[1:] != spk[:-1]])
    runs = t.groupby(run).agg(speaker=("speaker", "first"), start=("start", "min"),
                              end=("end", "max"))
    runs["seconds"] = runs["end"] - runs["start"]
    # how each turn began, relative to the other side's latest turn
    other_end = np.full(len(t), np.nan)
    latest: dict[str, float] = {}
    for i, (person, end) in enumerate(zip(spk, t["end"], strict=True)):
        others = [e for s, e in latest.items() if s != person]
        if others:
            other_end[i] = max(others)
        latest[person] = max(latest.get(person, end), end)
    start = t["start"].to_numpy(dtype=float)
    interrupts = ~np.isnan(other_end) & (start < other_end)
    t["interrupts"] = interrupts
    t["response"] = np.where(took_over & ~interrupts, start - other_end, np.nan)
    g = t.groupby("speaker", observed=True)
    people = pd.DataFrame({
        "talk_seconds": g["seconds"].sum(),
        "turns": g.size(),
        "words": g["n"].sum(),
        "questions": g["questions"].sum(),
        "interruptions": g["interrupts"].sum(),
        "response_seconds": g["response"].median(),
        "longest_monologue_seconds": runs.groupby("speaker")["seconds"].max(),
    })
    total = people["talk_seconds"].sum()
    people.insert(1, "share", people["talk_seconds"] / total if total > 0 else 0.0)
    minutes = people["talk_seconds"] / 60
    people.insert(4, "words_per_minute", (people["words"] / minutes).where(minutes > 0))
    people.index.name = who
    people = people.sort_values("talk_seconds", ascending=False)

    rows = []
    for start, end, spk, text in zip(t["start"], t["end"], t["speaker"], t["text"],
                                     strict=True):
        for sentence in _sentences(text):
            kind = next((k for k, pattern in _ACTIONS if pattern.search(sentence)), None)
            when = _WHEN.search(sentence)
            if kind is None and when is None:
                continue
            rows.append({"start": start, "end": end, who: spk,
                         "kind": kind or "date", "when": when.group(0) if when else "",
                         "text": sentence})
    actions = pd.DataFrame(rows, columns=["start", "end", who, "kind", "when", "text"])
    return CallSummary(people, actions)
