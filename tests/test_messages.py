"""The wire format in one place: every server message encodes and decodes back to the same event."""

from __future__ import annotations

import json
import typing

import pytest

from nbscribe import events, protocol
from nbscribe.errors import describe_code
from nbscribe.events import (
    EVENT_TYPES,
    Begin,
    ErrorEvent,
    SpeakerRevision,
    SpeechStarted,
    Termination,
    Turn,
    WarningEvent,
    Word,
    wire_type,
)
from nbscribe.journal import event_from_dict, event_to_dict
from nbscribe.messages import _CODECS, decode, encode

WORDS = (
    Word("Hello,", 120, 480, 0.91, True, "A"),
    Word("world.", 520, 900, 0.875, True, None),
)

#: One example of each message type, with every optional field set, and one with none set.
EXAMPLES = [
    Begin("b6f1", 1_760_000_000, {"model": "u3-rt-pro", "speaker_labels": True}),
    Begin("b6f1"),
    Turn(3, "Hello, world.", True, True, 1.0, WORDS, "Hello, world.", "A", "en", 0.98),
    Turn(0, "hello", False, words=(Word("hello", 0, 300, 0.5),)),
    SpeechStarted(1234, 0.97),
    SpeechStarted(0),
    SpeakerRevision(((3, "B", WORDS), (4, None, ()))),
    SpeakerRevision(()),
    Termination(12.0, 14.0),
    Termination(),
    WarningEvent(4001, "something to know"),
    WarningEvent(None, ""),
]


def test_one_registry_names_every_event_type():
    assert set(EVENT_TYPES.values()) == set(typing.get_args(events.Event))
    assert set(_CODECS) == set(EVENT_TYPES.values())  # a reader and a writer for each
    assert {type(e) for e in EXAMPLES} | {ErrorEvent} == set(EVENT_TYPES.values())
    assert wire_type(ErrorEvent(1, "x")) == "Error"
    assert wire_type(Turn(0, "", False)) == "Turn"


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: type(e).__name__)
def test_encode_then_decode_gives_the_same_event(event):
    frame = encode(event)
    assert json.loads(frame)["type"] == wire_type(event)
    assert decode(frame) == event


@pytest.mark.parametrize("code", [3007, 1008, None])
def test_an_error_round_trips_with_its_code_explained(code):
    frame = encode(ErrorEvent(code, "Input Duration Violation"))
    wire = json.loads(frame)
    assert wire["type"] == "Error" and wire.get("error_code") == code
    assert decode(frame) == ErrorEvent(code, describe_code(code, "Input Duration Violation"))


def test_the_local_server_turn_shape_is_unchanged():
    # What the local server sent before the encoders existed: a final turn with speaker labels.
    final = Turn(2, "Hi.", True, True, 1.0, (Word("Hi.", 10, 200, 0.5, True, "A"),), "Hi.", "A")
    assert json.loads(encode(final)) == {
        "type": "Turn", "turn_order": 2, "turn_is_formatted": True, "end_of_turn": True,
        "transcript": "Hi.", "end_of_turn_confidence": 1.0, "utterance": "Hi.",
        "speaker_label": "A",
        "words": [{"start": 10, "end": 200, "text": "Hi.", "confidence": 0.5,
                   "word_is_final": True, "speaker": "A"}],
    }
    # in the service's order: a Turn's type comes last, every other message's first
    assert list(json.loads(encode(final))) == [
        "turn_order", "turn_is_formatted", "end_of_turn", "transcript", "end_of_turn_confidence",
        "words", "utterance", "speaker_label", "type"]
    assert list(json.loads(encode(final))["words"][0]) == [
        "start", "end", "text", "confidence", "word_is_final", "speaker"]
    assert all(next(iter(json.loads(encode(e)))) == "type"
               for e in EXAMPLES if not isinstance(e, Turn))
    partial = Turn(2, "hi", False, words=(Word("hi", 10, 200, 0.5),))
    assert json.loads(encode(partial)) == {
        "type": "Turn", "turn_order": 2, "turn_is_formatted": False, "end_of_turn": False,
        "transcript": "hi", "end_of_turn_confidence": 0.0, "utterance": "",
        "words": [{"start": 10, "end": 200, "text": "hi", "confidence": 0.5,
                   "word_is_final": False}],
    }


@pytest.mark.parametrize("event", [*EXAMPLES, ErrorEvent(3007, "x")],
                         ids=lambda e: type(e).__name__)
def test_the_journal_rebuilds_every_event_type(event):
    assert event_from_dict(json.loads(json.dumps(event_to_dict(event)))) == event


def test_control_messages_round_trip():
    assert protocol.decode_control(protocol.encode_terminate()) == ("Terminate", {})
    assert protocol.decode_control(protocol.encode_force_endpoint()) == ("ForceEndpoint", {})
    assert protocol.decode_control(protocol.encode_keep_alive()) == ("KeepAlive", {})
    update = protocol.encode_update(min_turn_silence=300, keyterms_prompt=["a b"], prompt=None)
    assert protocol.decode_control(update) == (
        "UpdateConfiguration", {"min_turn_silence": 300, "keyterms_prompt": ["a b"]})


@pytest.mark.parametrize("frame, error", [
    ("not json", "Invalid JSON: not json"),
    ("[1]", "Invalid Message: [1]"),
    ('{"type": "Turn"}', "Invalid Message Type: Turn"),
    ("{}", "Invalid Message Type: None"),
])
def test_bad_control_messages_say_why(frame, error):
    with pytest.raises(ValueError, match=error.replace("[", r"\[").replace("]", r"\]")):
        protocol.decode_control(frame)
