"""The panel's renderers: pure functions from a session or stats to the HTML the widgets show.

No widgets and no threads here: every function returns a string (escaped where it holds text
from the transcript or an error), so it can be tested on its own.
"""

from __future__ import annotations

import html

from ..recorder import LiveSession
from ..transcriber import Stats

__all__ = ["CSS", "clock", "error_html", "level", "live_status", "partial_html",
           "stopped_status", "turns_html"]

#: The panel's style sheet (an HTML widget at the top of the panel).
CSS = """<style>
.nbs-turns { max-height: 320px; overflow-y: auto; border: 1px solid #ddd; padding: 4px 8px; }
.nbs-turn { margin: 2px 0; } .nbs-time { color: #888; font-family: monospace; }
.nbs-spk { font-weight: 600; } .nbs-partial-text { color: #666; font-style: italic; }
.nbs-err { color: #b00020; }
</style>"""

#: What the live view shows before the first final turn.
NO_TURNS = "<i>No turns yet.</i>"

#: The level meter's floor (dBFS): silence, and the meter when no session runs.
LEVEL_FLOOR = -60.0


def clock(seconds: float | None) -> str:
    """Return ``mm:ss`` (``h:mm:ss`` from an hour on), or ``--:--`` for no time."""
    if seconds is None:
        return "--:--"
    m, s = divmod(int(seconds), 60)
    return f"{m:02d}:{s:02d}" if m < 60 else f"{m // 60}:{m % 60:02d}:{s:02d}"


def turns_html(session: LiveSession, max_turns: int) -> str:
    """Return the live view: the latest `max_turns` final turns, and how many are hidden.

    Each turn shows its start, its source and speaker when known, and its text.
    """
    records = session.latest(max_turns)
    hidden = len(session) - len(records)
    rows = []
    if hidden:
        rows.append(f"<div class='nbs-more'><i>{hidden} earlier turns: see "
                    "panel.turns</i></div>")
    for r in records:
        label = " · ".join(x for x in (r.source, r.speaker) if x)
        who = f"<span class='nbs-spk'>{html.escape(label)}</span> " if label else ""
        rows.append(f"<div class='nbs-turn'><span class='nbs-time'>{clock(r.start)}"
                    f"</span> {who}{html.escape(r.turn.transcript)}</div>")
    return "\n".join(rows) or NO_TURNS


def partial_html(session: LiveSession) -> str:
    """Return the turn still being spoken (empty when there is none)."""
    partial = session.partial  # at most a few open turns: cheap
    text = partial.turn.transcript if partial else ""
    return f"<span class='nbs-partial-text'>{html.escape(text)}</span>" if text else ""


def live_status(stats: Stats, n_turns: int) -> str:
    """Return the status line while a session runs."""
    return (f"● {stats.state} · {clock(stats.elapsed)} · {stats.audio_seconds:.1f} s sent · "
            f"{stats.overflows} dropped · {n_turns} turns")


def stopped_status(stats: Stats | None, n_turns: int, continuity: str = "") -> str:
    """Return the status line once a session has ended (`stats` ``None``: it never began).

    `continuity` (`Session.continuity`) says whether connections were lost and replaced.
    """
    seconds = stats.audio_seconds if stats else 0.0
    line = f"stopped · {n_turns} turns · {seconds:.1f} s of audio"
    return f"{line} · {continuity}" if continuity else line


def level(stats: Stats) -> float:
    """Return the level meter's value: the last block's level, clipped to the meter's range."""
    return max(LEVEL_FLOOR, min(0.0, stats.level_dbfs))


def error_html(message: str) -> str:
    """Return an error message as the panel shows it."""
    return f"<span class='nbs-err'>{html.escape(message)}</span>"
