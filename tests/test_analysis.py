"""Analysis helpers on hand-made turns, and the routing self-test on PulseAudio null sinks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nbscribe.analysis import find, gaps, speaker_stats, timeline


@pytest.fixture
def turns() -> pd.DataFrame:
    # A: 0-4 s (8 words), B: 5-6 s (2 words), A: 5.5-7.5 s overlapping B (4 words), C: no times
    return pd.DataFrame({
        "turn_order": [0, 1, 2, 3],
        "start": [0.0, 5.0, 5.5, None],
        "end": [4.0, 6.0, 7.5, None],
        "speaker": ["A", "B", "A", "C"],
        "text": ["one two three four five six seven eight", "Hello there.",
                 "the quarterly report, Friday", "lost"],
    })


def test_speaker_stats(turns):
    s = speaker_stats(turns)
    assert list(s.index) == ["A", "B"]  # a turn without times is left out
    assert s.loc["A", "talk_seconds"] == 6.0 and s.loc["A", "words"] == 12
    assert s.loc["A", "words_per_minute"] == pytest.approx(120.0)
    assert s.loc["B", "words_per_minute"] == pytest.approx(120.0)
    assert s.loc["A", "share"] == pytest.approx(6 / 7)
    assert s.loc["A", "turns"] == 2 and s.loc["A", "mean_turn_seconds"] == 3.0


def test_gaps_pauses_and_overlaps(turns):
    g = gaps(turns)
    assert list(g.kind) == ["pause", "overlap"]
    assert list(g.seconds) == [1.0, -0.5]
    assert list(g.handover) == [True, True]
    assert g.loc[1, "after"] == "B" and g.loc[1, "before"] == "A"
    assert len(gaps(turns.iloc[:1])) == 0


def test_find_with_times(turns):
    hits = find(turns, "quarterly report")
    assert list(hits.turn_order) == [2] and hits.iloc[0]["start"] == 5.5
    assert len(find(turns, "three")) == 1 and len(find(turns, "thre")) == 0  # whole words
    assert list(find(turns, r"\bf\w+", regex=True)["match"]) == ["four", "Friday"]
    assert len(find(turns, "HELLO")) == 1 and len(find(turns, "HELLO", case=True)) == 0


def test_missing_columns_are_named():
    with pytest.raises(ValueError, match="end"):
        speaker_stats(pd.DataFrame({"start": [0.0], "text": ["x"]}))


def test_timeline_draws_one_row_per_speaker(turns):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    ax = timeline(turns)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["A", "B"]
    assert len(ax.collections) == 2


def test_analysis_of_a_real_session():
    from nbscribe import Session
    from nbscribe.events import Turn, Word

    s = Session()
    s.apply(Turn(0, "Hi there.", True, True, 1.0, (Word("Hi", 0, 300, 0.9, True, "A"),
                                                    Word("there.", 300, 900, 0.9, True, "A"))))
    s.apply(Turn(1, "Yes.", True, True, 1.0, (Word("Yes.", 1500, 1800, 0.9, True, "B"),)))
    assert list(speaker_stats(s.turns).index) == ["A", "B"]
    assert gaps(s.turns).seconds.round(3).tolist() == [0.6]
    assert np.isclose(find(s.words, "yes").iloc[0]["start"], 1.5)


# -- the routing self-test ----------------------------------------------------------------------


@pytest.mark.loopback
def test_routing_ok_when_the_output_reaches_the_monitor(pulse):
    from nbscribe.routing import check_routing

    report = check_routing("loopback.monitor")  # the default sink is "loopback"
    assert report.ok, report.message
    assert report.correlation > 0.8 and report.message.startswith("OK")
    assert report.delay_ms is not None and 0 <= report.delay_ms < 2000


@pytest.mark.loopback
def test_routing_says_what_to_fix_when_nothing_arrives(pulse):
    from nbscribe.routing import check_routing

    report = check_routing("second.monitor", platform="linux")
    assert not report.ok
    assert "Silence on second.monitor" in report.message
    assert "pactl" in report.message
    mac = check_routing("second.monitor", platform="darwin")
    assert "Multi-Output Device" in mac.message
