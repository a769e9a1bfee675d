"""A real WebSocket server on loopback that plays a scripted v3 session and records what it gets.

Each connection runs ``script(conn, rec)`` on the server's thread; `Recorded` keeps the request
(path, query, headers), every audio frame with its arrival time, and every text message.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection, serve


@dataclass
class Recorded:
    path: str = ""
    query: dict[str, list[str]] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    audio: list[tuple[float, bytes]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    opened_at: float = 0.0
    closed: threading.Event = field(default_factory=threading.Event)

    @property
    def audio_bytes(self) -> int:
        return sum(len(b) for _, b in self.audio)

    @property
    def control_types(self) -> list[str]:
        out = []
        for t in self.texts:
            try:
                out.append(json.loads(t).get("type"))
            except ValueError:
                out.append(None)
        return out


Script = Callable[[ServerConnection, Recorded], None]


class ScriptedServer:
    """Serve `script` on 127.0.0.1 at a free port, in a background thread."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.sessions: list[Recorded] = []
        self._server = serve(self._handle, "127.0.0.1", 0)
        self.port = self._server.socket.getsockname()[1]
        self.url = f"ws://127.0.0.1:{self.port}/v3/ws"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _handle(self, conn: ServerConnection) -> None:
        req = conn.request
        parts = urllib.parse.urlsplit(req.path)
        rec = Recorded(
            path=parts.path,
            query=urllib.parse.parse_qs(parts.query, keep_blank_values=True),
            headers={k: v for k, v in req.headers.raw_items()},
            opened_at=time.monotonic(),
        )
        self.sessions.append(rec)
        try:
            self.script(conn, rec)
        except ConnectionClosed:
            pass
        finally:
            rec.closed.set()

    def close(self) -> None:
        self._server.shutdown()
        self._thread.join(5)

    def __enter__(self) -> ScriptedServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- building blocks for scripts ------------------------------------------------------------


def begin() -> dict:
    return {"type": "Begin", "id": str(uuid.uuid4()), "expires_at": int(time.time()) + 10800}


def word(text: str, start: int, end: int, final: bool = True, speaker: str | None = None) -> dict:
    w = {"start": start, "end": end, "text": text, "confidence": 0.9, "word_is_final": final}
    if speaker:
        w["speaker"] = speaker
    return w


def turn(order: int, words: list[dict], end_of_turn: bool, formatted: bool, **extra) -> dict:
    text = " ".join(w["text"] for w in words)
    msg = {
        "turn_order": order,
        "turn_is_formatted": formatted,
        "end_of_turn": end_of_turn,
        "transcript": text,
        "end_of_turn_confidence": 1.0 if end_of_turn else 0.0,
        "words": words,
        "utterance": text if end_of_turn else "",
    }
    msg.update(extra)
    msg["type"] = "Turn"
    return msg


def termination(audio_s: int = 1) -> dict:
    return {"type": "Termination", "audio_duration_seconds": audio_s,
            "session_duration_seconds": audio_s}


def send(conn: ServerConnection, msg: dict | str) -> None:
    conn.send(msg if isinstance(msg, str) else json.dumps(msg))


def replay(
    messages: list[dict | str],
    after_audio_bytes: int = 3200,
    on_terminate: list[dict | str] | None = None,
) -> Script:
    """Begin; record audio; after `after_audio_bytes` send `messages`; answer Terminate."""

    def script(conn: ServerConnection, rec: Recorded) -> None:
        send(conn, begin())
        sent = False
        while True:
            data = conn.recv()
            if isinstance(data, bytes):
                rec.audio.append((time.monotonic(), data))
                if not sent and rec.audio_bytes >= after_audio_bytes:
                    sent = True
                    for m in messages:
                        send(conn, m)
                continue
            rec.texts.append(data)
            if json.loads(data).get("type") == "Terminate":
                if not sent:
                    for m in messages:
                        send(conn, m)
                for m in on_terminate or []:
                    send(conn, m)
                send(conn, termination(round(rec.audio_bytes / 32000)))
                conn.close(1000)
                return

    return script


def fail_after(code: int, error: str, after_audio_bytes: int = 0,
               before: list[dict] | None = None, with_begin: bool = True) -> Script:
    """Send an Error frame and close with `code` once `after_audio_bytes` have arrived."""

    def script(conn: ServerConnection, rec: Recorded) -> None:
        if with_begin:
            send(conn, begin())
        for m in before or []:
            send(conn, m)
        while rec.audio_bytes < after_audio_bytes:
            data = conn.recv()
            if isinstance(data, bytes):
                rec.audio.append((time.monotonic(), data))
            else:
                rec.texts.append(data)
        send(conn, {"type": "Error", "error_code": code, "error": error})
        conn.close(code, "See Error message for details")

    return script
