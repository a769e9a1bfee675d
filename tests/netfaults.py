"""A TCP proxy on loopback that can make a live connection go silent, as a dead network does.

`BlackholeProxy.blackhole(i)` stops forwarding connection i in both directions without closing
either side: bytes sent into it vanish, nothing comes back, not even a pong, and no FIN or RST
tells anyone. Later connections pass through untouched.
"""

from __future__ import annotations

import select
import socket
import threading


class BlackholeProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port = self._listener.getsockname()[1]
        self.url = f"ws://127.0.0.1:{self.port}/v3/ws"
        self._stop = threading.Event()
        self._holes: set[int] = set()
        self._sockets: list[socket.socket] = []
        self.connections = 0
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def blackhole(self, index: int = 0) -> None:
        """Stop forwarding connection `index` (both ways), leaving its sockets open."""
        self._holes.add(index)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            upstream = socket.create_connection(self.upstream)
            self._sockets += [client, upstream]
            index = self.connections
            self.connections += 1
            t = threading.Thread(target=self._pump, args=(index, client, upstream), daemon=True)
            t.start()
            self._threads.append(t)

    def _pump(self, index: int, a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        while not self._stop.is_set():
            if index in self._holes:
                self._stop.wait(0.05)  # hold everything: read nothing, send nothing
                continue
            ready, _, _ = select.select(list(peers), [], [], 0.05)
            for sock in ready:
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    for s in peers:
                        s.close()
                    return
                peers[sock].sendall(data)

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(5)
        for s in [*self._sockets, self._listener]:
            s.close()

    def __enter__(self) -> BlackholeProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
