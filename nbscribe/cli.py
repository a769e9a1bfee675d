"""The command line: ``nbscribe devices``, ``nbscribe transcribe``, ``nbscribe serve``."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import TextIO

from ._version import __version__
from .errors import NbscribeError
from .events import ErrorEvent, Event, SpeakerRevision, Turn

__all__ = ["main"]

logger = logging.getLogger("nbscribe")


class TurnPrinter:
    """Print partials in place (on a terminal) and each final turn on its own line."""

    def __init__(self, out: TextIO, live: bool, names: dict[str, str] | None = None) -> None:
        self.out = out
        self.live = live
        self.names = names or {}
        self.revised = 0  # turns whose speaker the service changed after printing them
        self._partial_shown = False
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self._lock:
            if isinstance(event, SpeakerRevision):
                self.revised += len(event.revisions)
            elif isinstance(event, Turn):
                if event.end_of_turn:
                    self._final(event)
                elif self.live and event.transcript:
                    width = shutil.get_terminal_size((100, 20)).columns - 1
                    text = event.transcript[-width:]
                    self.out.write("\r\033[K" + text)
                    self.out.flush()
                    self._partial_shown = True
            elif isinstance(event, ErrorEvent):
                self._clear()

    def _clear(self) -> None:
        if self._partial_shown:
            self.out.write("\r\033[K")
            self._partial_shown = False

    def _final(self, turn: Turn) -> None:
        self._clear()
        start = turn.words[0].start / 1000 if turn.words else 0.0
        label = turn.speaker_label
        who = f"{self.names.get(label, label)}: " if label else ""
        self.out.write(f"[{int(start // 60):02d}:{start % 60:05.2f}] {who}{turn.transcript}\n")
        self.out.flush()


def _add_service_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("service")
    g.add_argument("--url", help="a v3 streaming server (default: AssemblyAI if a key is set, "
                   "else the local server)")
    g.add_argument("--api-key", help="AssemblyAI key (default: $ASSEMBLYAI_API_KEY)")
    g.add_argument("--token", help="a temporary AssemblyAI token instead of a key")
    g.add_argument("--local", action="store_true",
                   help="use the offline local Whisper server even if a key is set")
    g.add_argument("--speech-model", default="u3-rt-pro", help="model (default: u3-rt-pro)")
    g.add_argument("--keyterms", nargs="+", metavar="TERM", help="words to recognise better")
    g.add_argument("--speaker-labels", action="store_true", help="label speakers A, B, ...")
    g.add_argument("--speaker-names", nargs="+", metavar="LABEL=NAME", type=_speaker_name,
                   help="name labelled speakers in the output and files, e.g. A=Nagg B=Nell "
                   "(implies --speaker-labels)")
    g.add_argument("--min-turn-silence", type=int, metavar="MS")
    g.add_argument("--max-turn-silence", type=int, metavar="MS")
    g.add_argument("--format-turns", action="store_true",
                   help="punctuate turns (Universal models; Pro models always do)")


def _speaker_name(text: str) -> tuple[str, str]:
    label, sep, name = text.partition("=")
    if not sep or not label.strip() or not name.strip():
        raise argparse.ArgumentTypeError(f"expected LABEL=NAME (like A=Nagg), got {text!r}")
    return label.strip(), name.strip()


def _params_from(args: argparse.Namespace) -> dict[str, object]:
    params: dict[str, object] = {"speech_model": args.speech_model}
    if args.keyterms:
        params["keyterms_prompt"] = args.keyterms
    if args.speaker_labels or args.speaker_names:
        params["speaker_labels"] = True
    if args.format_turns:
        params["format_turns"] = True
    if args.min_turn_silence is not None:
        params["min_turn_silence"] = args.min_turn_silence
    if args.max_turn_silence is not None:
        params["max_turn_silence"] = args.max_turn_silence
    return params


def _cmd_devices(args: argparse.Namespace) -> int:
    from .devices import list_devices, loopback_setup_hint

    devices = list_devices()
    if not devices:
        print("No audio inputs found.", loopback_setup_hint())
        return 1
    for d in devices:
        print(("* " if d.is_loopback else "  ") + str(d))
    if not any(d.is_loopback for d in devices):
        print("\nNo loopback device found. " + loopback_setup_hint())
    else:
        print("\n* = loopback (system audio); pass its name to --device")
    return 0


def _cmd_transcribe(args: argparse.Namespace) -> int:
    from .sources import DeviceSource, FileSource
    from .transcriber import Transcriber

    if args.device and len(args.device) > 1:
        return _transcribe_many(args)
    if args.file:
        source = FileSource(args.file, realtime=not args.fast, block_ms=args.frame_ms)
    else:
        source = DeviceSource(args.device[0], sample_rate=args.sample_rate,
                              channels=args.channels)
    tr = Transcriber(
        source,
        url=args.url,
        api_key=args.api_key,
        token=args.token,
        local=True if args.local else None,
        out_dir=args.out,
        frame_ms=args.frame_ms,
        **_params_from(args),
    )
    names = dict(args.speaker_names or ())
    tr.session.name_speakers(names)
    printer = TurnPrinter(sys.stdout, live=sys.stdout.isatty(), names=names)
    tr.on(printer)
    if tr.uses_local_server:
        print("nbscribe: no API key set; transcribing offline with the local Whisper server "
              "(set ASSEMBLYAI_API_KEY to use AssemblyAI).", file=sys.stderr)
    interrupted = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: interrupted.set())
    try:
        tr.start()
        print(f"nbscribe: transcribing {source.description} with {tr.service_name}; "
              "Ctrl+C stops.", file=sys.stderr)
        deadline = time.monotonic() + args.duration if args.duration else None
        while not tr.wait(0.25):
            if interrupted.is_set() or (deadline and time.monotonic() >= deadline):
                break
        session = tr.stop()
    finally:
        signal.signal(signal.SIGINT, previous)
        tr.stop()
    note = session.continuity()
    if note:
        print(f"nbscribe: {note}", file=sys.stderr)
    if printer.revised:
        print(f"nbscribe: the service relabelled the speakers of {printer.revised} turn(s) "
              "once it had heard the whole session; the files have the new labels",
              file=sys.stderr)
    if args.out:
        print(f"nbscribe: {len(session)} turns, {session.audio_seconds:.1f} s of audio; "
              f"wrote {os.path.normpath(args.out)}/ (audio.wav, turns.csv, words.csv, "
              "session.json, "
              "transcript.srt, transcript.vtt)", file=sys.stderr)
    tr.raise_for_error()
    return 0


def _transcribe_many(args: argparse.Namespace) -> int:
    from .multi import MultiTranscriber
    from .sources import DeviceSource

    if len(args.device) > 2:
        raise NbscribeError("give --device at most twice: your microphone, then the loopback")
    names = ("you", "others")
    sources = {n: DeviceSource(d, sample_rate=args.sample_rate, channels=args.channels)
               for n, d in zip(names, args.device, strict=True)}
    multi = MultiTranscriber(sources, url=args.url, api_key=args.api_key, token=args.token,
                             local=True if args.local else None, out_dir=args.out,
                             frame_ms=args.frame_ms, cancel_echo=not args.no_echo_cancel,
                             include_echo=args.keep_echo, **_params_from(args))
    multi.session.name_speakers(dict(args.speaker_names or ()))
    lock = threading.Lock()

    def show(name: str, event: Event) -> None:
        if isinstance(event, Turn) and event.end_of_turn:
            start = event.words[0].start / 1000 if event.words else 0.0
            if name in multi.echo_of and not args.keep_echo:
                last = multi.session.latest(20)  # echo already left out of it
                if not any(r.source == name and r.turn.turn_order == event.turn_order
                           for r in last):
                    return  # it repeats the other side: not printed (see session.echoes)
            with lock:
                print(f"[{name:>6} {int(start // 60):02d}:{start % 60:05.2f}] {event.transcript}",
                      flush=True)

    multi.on_source(show)
    interrupted = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: interrupted.set())
    try:
        multi.start()
        print("nbscribe: transcribing " + " and ".join(
            f"{n} ({s.description})" for n, s in sources.items()) + "; Ctrl+C stops.",
            file=sys.stderr)
        deadline = time.monotonic() + args.duration if args.duration else None
        while not interrupted.is_set() and not (deadline and time.monotonic() >= deadline):
            if multi.wait(0.25):
                break
    finally:
        signal.signal(signal.SIGINT, previous)
        session = multi.stop()
    for name, part in session.sessions.items():
        note = part.continuity()
        if note:
            print(f"nbscribe: {name}: {note}", file=sys.stderr)
    echoes = session.echoes
    if len(echoes) and not args.keep_echo:
        print(f"nbscribe: {len(echoes)} turn(s) of 'you' repeated what 'others' said (the call "
              "heard through the speakers) and were left out; --keep-echo keeps them, and "
              "you/events.jsonl has them", file=sys.stderr)
    if args.out:  # MultiTranscriber.stop saved it there
        print(f"nbscribe: {len(session)} turns; wrote {os.path.normpath(args.out)}/ "
              "(turns.csv, words.csv with a source column; one folder per source)",
              file=sys.stderr)
    errors = multi.errors
    if errors:
        raise next(iter(errors.values()))
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from .server.app import ServerConfig, serve_forever

    config = ServerConfig(
        host=args.host,
        port=args.port,
        api_key=args.api_key or os.environ.get("NBSCRIBE_SERVER_KEY") or None,
        model=args.model,
        device=args.compute_device,
        max_rate=None if args.allow_fast else args.max_rate,
        max_sessions=args.max_sessions,
        ping_interval=args.ping_interval or None,
        ping_timeout=args.ping_timeout or None,
    )
    serve_forever(config)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``nbscribe`` command."""
    parser = argparse.ArgumentParser(
        prog="nbscribe",
        description="Live transcription of system audio, a microphone or a file.",
    )
    parser.add_argument("--version", action="version", version=f"nbscribe {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("devices", help="list audio inputs; loopback devices are marked")
    p.set_defaults(func=_cmd_devices)

    p = sub.add_parser("transcribe", help="transcribe a device or a file live")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--file", metavar="PATH", help="an audio file (WAV, FLAC, OGG, MP3 ...)")
    src.add_argument("--device", metavar="NAME", action="append",
                     help="an input device name, part of one, or an index (see `nbscribe "
                     "devices`); give it twice, microphone first, to transcribe 'you' and "
                     "'others' (system audio) as two sources on one timeline")
    p.add_argument("--out", metavar="DIR", help="write audio.wav, turns.csv, words.csv, "
                   "session.json, transcript.srt, transcript.vtt and the event journal "
                   "(events.jsonl) here")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    p.add_argument("--fast", action="store_true", help="send a file faster than real time "
                   "(only servers that allow it, such as the local server)")
    p.add_argument("--frame-ms", type=int, default=50, help="audio per message, 50-1000 ms")
    p.add_argument("--sample-rate", "--samplerate", dest="sample_rate", type=int,
                   help="open the device at this rate")
    p.add_argument("--channels", type=int, help="open the device with this many channels")
    echo = p.add_argument_group("two devices: the call heard by the microphone (speakers, not "
                                "headphones)")
    echo.add_argument("--no-echo-cancel", action="store_true",
                      help="do not remove the call's sound from the microphone")
    echo.add_argument("--keep-echo", action="store_true",
                      help="keep microphone turns that repeat what the call said")
    _add_service_args(p)
    p.set_defaults(func=_cmd_transcribe)

    p = sub.add_parser("serve", help="run the local AssemblyAI-compatible server (offline)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--api-key", help="require this key or a token minted with it "
                   "(default: $NBSCRIBE_SERVER_KEY; required for a non-loopback --host)")
    p.add_argument("--model", help="a faster-whisper model folder or name (default: the "
                   "bundled tiny.en)")
    p.add_argument("--compute-device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--max-rate", type=float, default=1.5,
                   help="refuse audio faster than this multiple of real time (3007)")
    p.add_argument("--allow-fast", action="store_true", help="accept audio at any speed")
    p.add_argument("--max-sessions", type=int, default=8)
    p.add_argument("--ping-interval", type=float, default=5.0, metavar="S",
                   help="ping each client every S seconds (0: never)")
    p.add_argument("--ping-timeout", type=float, default=10.0, metavar="S",
                   help="end a session whose client has not answered a ping within S seconds "
                   "(0: keep pinging, never end)")
    p.set_defaults(func=_cmd_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``nbscribe`` command; return its exit status."""
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except NbscribeError as exc:
        print(f"nbscribe: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
