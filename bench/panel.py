"""Benchmark of the panel's live view: bytes per update and CPU per event as a session grows.

For sessions of 10, 1,000 and 10,000 turns it measures (no browser needed):
- bytes sent to the browser per refresh of the turns view (the widget's new value, which is what
  its comm message carries);
- kernel CPU to apply one event (a partial and a final) and to render one refresh.
Both must stay flat: the view shows the latest turns only. Run: ``python bench/panel.py``.
"""

from __future__ import annotations

import gc
import json
import time

from nbscribe.events import Turn, Word
from nbscribe.session import Session
from nbscribe.widget import Panel


def fill(session: Session, n: int) -> None:
    for i in range(n):
        words = tuple(Word(w, i * 3000 + 300 * k, i * 3000 + 300 * k + 250, 0.9, True)
                      for k, w in enumerate(f"this is turn number {i} of the session".split()))
        session.apply(Turn(i, " ".join(w.text for w in words), True, True, 1.0, words,
                           speaker_label="AB"[i % 2]))


def measure(panel: Panel, n: int) -> dict[str, float]:
    s = Session()
    fill(s, n)
    # Collect what earlier measurements of the same process left behind: otherwise a full
    # collection of their garbage lands in this one's events (seen: 160 us instead of 6 us).
    gc.collect()
    t = time.process_time()
    for _ in range(50):
        html = panel.render_turns(s)
        message = json.dumps({"method": "update", "state": {"value": html}})
    per_refresh = (time.process_time() - t) / 50
    reps = 200
    t = time.process_time()
    for k in range(reps):
        words = (Word("next", n * 3000, n * 3000 + 200, 0.5, False),)
        s.apply(Turn(n + k, "next", False, False, 0.0, words))
        s.apply(Turn(n + k, "Next.", True, True, 1.0, words))
    per_event = (time.process_time() - t) / (2 * reps)
    return {"bytes": len(message.encode()), "event_us": per_event * 1e6,
            "refresh_ms": per_refresh * 1e3}


def main() -> None:
    panel = Panel(max_turns_shown=200)
    try:
        print(f"{'turns':>8} {'bytes/refresh':>14} {'CPU/event (us)':>15} {'CPU/refresh (ms)':>17}")
        for n in (10, 1_000, 10_000):
            r = measure(panel, n)
            print(f"{n:>8} {r['bytes']:>14} {r['event_us']:>15.1f} {r['refresh_ms']:>17.2f}")
    finally:
        panel.close()


if __name__ == "__main__":
    main()
