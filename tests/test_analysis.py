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


# -- summary -------------------------------------------------------------------------------------


def call_turns() -> pd.DataFrame:
    """A hand-made call with known answers (times in seconds)."""
    rows = [  # speaker, start, end, text
        ("Ann", 0.0, 4.0, "Hi Bob. Can you send me the report by Friday?"),
        ("Bob", 4.5, 6.0, "Sure, I'll send it tomorrow."),
        ("Ann", 6.0, 10.0, "Great. We agreed to ship the new version on March 3rd."),
        ("Ann", 10.5, 12.0, "Any questions?"),
        ("Bob", 11.5, 14.5, "No. The weather is nice."),  # begins before Ann has finished
        ("Bob", 15.0, 16.0, "Really nice."),
    ]
    return pd.DataFrame(rows, columns=["speaker", "start", "end", "text"])


def test_summary_of_a_call_with_known_answers():
    from nbscribe.analysis import summary

    s = summary(call_turns())
    p = s.people
    assert list(p.index) == ["Ann", "Bob"]  # by talk time
    assert p.loc["Ann", "talk_seconds"] == pytest.approx(9.5)
    assert p.loc["Bob", "talk_seconds"] == pytest.approx(5.5)
    assert p["share"].sum() == pytest.approx(1.0)
    assert p.loc["Ann", "share"] == pytest.approx(9.5 / 15)
    assert list(p["turns"]) == [3, 3] and list(p["words"]) == [23, 12]
    assert p.loc["Bob", "words_per_minute"] == pytest.approx(12 / (5.5 / 60))
    assert list(p["questions"]) == [2, 0]
    assert list(p["interruptions"]) == [0, 1]  # Bob began at 11.5, Ann ended at 12.0
    # Bob took over after 0.5 s (at 4.5); Ann after 0.0 s (at 6.0); the interruption is not a
    # response time
    assert p.loc["Bob", "response_seconds"] == pytest.approx(0.5)
    assert p.loc["Ann", "response_seconds"] == pytest.approx(0.0)
    # Ann's longest stretch: 6.0-12.0; Bob's: 11.5-16.0
    assert p.loc["Ann", "longest_monologue_seconds"] == pytest.approx(6.0)
    assert p.loc["Bob", "longest_monologue_seconds"] == pytest.approx(4.5)
    a = s.actions
    assert list(zip(a.speaker, a.kind, a.when, strict=True)) == [
        ("Ann", "request", "by Friday"),
        ("Bob", "commitment", "tomorrow"),
        ("Ann", "decision", "on March 3rd"),
    ]
    assert a.text.iloc[0] == "Can you send me the report by Friday?"
    assert a.start.tolist() == [0.0, 4.5, 6.0]
    assert "Who talked how" in s._repr_html_()


def test_summary_by_source_and_of_nothing():
    from nbscribe.analysis import summary

    turns = call_turns().rename(columns={"speaker": "source"})
    assert summary(turns).people.index.name == "source"
    empty = summary(call_turns().iloc[:0])
    assert empty.people.empty and empty.actions.empty
    with pytest.raises(ValueError, match="no column 'who'"):
        summary(call_turns(), by="who")
