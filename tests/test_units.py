"""The pure parts, alone: the outbox, the reconnect policy, tokens and the service choice.

No threads, sockets, sound devices or model: each test runs in milliseconds.
"""

from __future__ import annotations

import pytest

from nbscribe.errors import ConfigError, ConnectError, StreamError
from nbscribe.events import Begin
from nbscribe.outbox import Outbox
from nbscribe.policy import ReconnectPolicy, TokenSource
from nbscribe.service import Service


def frame(k: int) -> bytes:
    return k.to_bytes(2, "little") * 800


def fill(box: Outbox, n: int) -> None:
    for _ in range(n):
        box.capture(frame(box.captured))


def send_all(box: Outbox, now: float = 0.0) -> list[int]:
    sent = []
    while (f := box.due(now, paced=False)) is not None:
        sent.append(int.from_bytes(f[:2], "little"))
        box.mark_sent()
    return sent


# -- outbox --------------------------------------------------------------------------------


def test_outbox_replays_what_no_final_covers_after_a_lost_connection():
    box = Outbox(frame_ms=50, buffer_ms=60_000)
    fill(box, 10)
    assert send_all(box) == list(range(10))
    box.confirm(6 * 50)  # a final turn covers frames 0-5
    assert box.unconfirmed_ms == 4 * 50
    assert box.pending_from_ms == 6 * 50
    fill(box, 2)
    box.rewind()  # the connection was lost
    assert box.next_offset_ms() == 6 * 50  # the new server session starts at frame 6
    assert send_all(box) == [6, 7, 8, 9, 10, 11]


def test_outbox_paces_at_real_time_and_catches_up_on_a_backlog():
    box = Outbox(frame_ms=50, buffer_ms=60_000, catchup_rate=1.2)
    fill(box, 3)
    box.new_segment()
    assert box.wait_s(100.0) == 0.0
    assert box.due(100.0) is not None
    box.mark_sent()  # frame 0 at t=100: the session's clock starts
    assert box.due(100.0) is not None  # one frame early: a block of two leaves together
    box.mark_sent()
    assert box.due(100.01) is None  # frame 2 may not leave before 50 ms
    assert box.wait_s(100.01) == pytest.approx(0.04)
    assert box.due(100.0501) is not None
    box.mark_sent()
    fill(box, 40)  # 2 s behind: 1.2x real time
    sent = 0
    while box.due(101.05) is not None:
        box.mark_sent()
        sent += 1
    # after 1.05 s at 1.2x, one frame early: 1.31 s of audio in all, three frames sent already
    assert sent * 50 + 150 == pytest.approx(1.2 * 1050 + 50, abs=50)
    assert box.wait_s(101.05) > 0


def test_outbox_drops_the_oldest_beyond_its_buffer_into_one_gap():
    box = Outbox(frame_ms=50, buffer_ms=500)
    fill(box, 30)  # no connection for 1.5 s with a 0.5 s buffer
    assert box.take_gaps() == []  # still growing
    assert box.take_gaps(close=True) == [(0.0, 1.0)]
    assert box.take_gaps(close=True) == []
    assert box.next_offset_ms() == 1000  # the next session starts after the gap
    assert send_all(box) == list(range(20, 30))
    fill(box, 10)  # 10 frames wait: the buffer is full
    box.capture(frame(40), connected=True)  # with a connection, a backlog is never dropped
    assert box.unsent_ms == 550
    box.capture(frame(41))  # without one, it is trimmed to the buffer again
    assert box.unsent_ms == 500


def test_outbox_keeps_at_most_replay_ms_unconfirmed():
    box = Outbox(frame_ms=50, buffer_ms=60_000, replay_ms=1000)
    fill(box, 100)
    send_all(box)
    assert box.unconfirmed_ms == 1000


# -- policy --------------------------------------------------------------------------------


def test_backoff_doubles_to_its_cap_and_resets_on_success():
    policy = ReconnectPolicy(first_delay=0.5, max_delay=4.0)
    assert [policy.failed(0.0) for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert not policy.may_attempt(3.9) and policy.may_attempt(4.0)
    policy.connected()
    assert policy.failed(10.0) == 0.5


@pytest.mark.parametrize(("code", "retry"), [(None, True), (1006, True), (1011, True),
                                             (3005, True), (1008, False), (3006, False),
                                             (3007, False)])
def test_which_errors_are_retried(code, retry):
    assert ReconnectPolicy().retryable(StreamError("x", code)) is retry
    assert ReconnectPolicy(enabled=False).retryable(StreamError("x", code)) is False


def test_rollover_is_due_a_set_time_before_expiry():
    policy = ReconnectPolicy(rollover_seconds=60)
    begin = Begin(id="s", expires_at=1000, configuration={})
    assert not policy.rollover_due(begin, 939.0)
    assert policy.rollover_due(begin, 941.0)
    assert not policy.rollover_due(Begin(id="s", expires_at=None, configuration={}), 1e12)


def test_a_token_factory_gives_each_connection_its_own(caplog):
    tokens = iter(["a", "b"])
    source = TokenSource(lambda: next(tokens))
    assert [source.next(), source.next()] == ["a", "b"]
    fixed = TokenSource("t")
    assert fixed.next() == "t" and fixed.next() == "t"
    assert "single-use" in caplog.text  # the second use of one token is warned about


# -- service -------------------------------------------------------------------------------


def test_the_service_is_decided_once(monkeypatch):
    monkeypatch.delenv("ASSEMBLYAI_API_KEY", raising=False)
    assert Service().local
    assert not Service(api_key="k").local
    assert not Service(token=lambda: "t").local
    assert not Service("ws://127.0.0.1:9/v3/ws").local
    with pytest.raises(ConfigError, match="no API key"):
        Service(local=False)
    with pytest.raises(ConfigError, match="url="):
        Service("ws://x", local=True)


def test_a_key_from_the_environment_never_reaches_the_local_server(monkeypatch):
    monkeypatch.setenv("ASSEMBLYAI_API_KEY", "secret-key")
    remote = Service()
    assert not remote.local and remote.credentials() == ("secret-key", None)
    local = Service(local=True)
    assert local.credentials() == (None, None)
    assert "secret-key" not in repr(local) + repr(remote)
    with pytest.raises(ConfigError, match="start"):
        _ = local.url  # not started: no URL yet


def test_connect_errors_keep_their_code():
    assert ConnectError("x", 1011).code == 1011


def test_the_dataframe_cache_is_named_like_the_columns():
    from nbscribe.session import TURN_COLUMNS, WORD_COLUMNS, TurnRow, WordColumns

    assert tuple(TURN_COLUMNS) == TurnRow._fields
    assert tuple(WORD_COLUMNS) == WordColumns._fields


def test_liveness_pings_a_quiet_peer_and_declares_a_silent_one_dead():
    from nbscribe.policy import Liveness

    alive = Liveness(ping_interval=2.0, timeout=6.0, now=0.0)
    assert alive.tick == 0.5
    assert not alive.ping_due(1.9)
    assert alive.ping_due(2.0) and not alive.ping_due(3.0)  # one ping per interval
    assert alive.ping_due(4.0)
    alive.heard(4.1)  # the pong
    assert not alive.dead(10.0) and alive.dead(10.2)
    off = Liveness(0, 0, now=0.0)
    assert off.tick is None and not off.dead(1e9) and not off.ping_due(1e9)


def test_continuity_says_what_broke_and_whether_audio_was_lost():
    from nbscribe.session import Session

    s = Session()
    assert s.continuity() == ""
    s.interruptions.append({"at": 11.1, "reason": "silent", "resent_from": 5.0,
                            "resent_seconds": 6.0})
    assert s.continuity() == ("1 connection lost and replaced (noticed at 11.1 s); 6.0 s of "
                              "audio sent again, from 5.0 s on; no audio was lost")
    s.gaps.append((20.0, 23.5))
    assert s.continuity().endswith("3.5 s of audio never reached a server in 1 gap(s) "
                                   "(still in audio.wav): see session.gaps")
