"""A TCP proxy in front of the server that can lose an answer: armed, it
forwards the client's request, lets the server handle it (and commit), and
cuts the connection when the answer starts coming back, so the client
never hears it. gRPC answers a call with a HEADERS frame on the call's
stream once the handler has finished, so that is where it cuts."""

from __future__ import annotations

import contextlib
import socket
import threading

from tests.support.tcp_proxy import TcpProxy

_FRAME_HEADER = 9  # HTTP/2: length (3 bytes), type, flags, stream id (4 bytes)
_HEADERS = 0x1


class AnswerLosingProxy(TcpProxy):
    def __init__(self, target_host: str, target_port: int) -> None:
        super().__init__(target_host, target_port)
        self._armed = threading.Event()
        self.lost = threading.Event()
        """Set once an answer was dropped."""

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def lose_next_answer(self) -> None:
        self.lost.clear()
        self._armed.set()

    def _pump_back(self, upstream: socket.socket, client: socket.socket) -> None:
        pending = b""
        try:
            while data := upstream.recv(65536):
                pending += data
                ready = 0
                while len(pending) - ready >= _FRAME_HEADER:
                    head = pending[ready : ready + _FRAME_HEADER]
                    size = _FRAME_HEADER + int.from_bytes(head[:3])
                    if len(pending) - ready < size:
                        break
                    stream = int.from_bytes(head[5:9]) & 0x7FFF_FFFF
                    if head[3] == _HEADERS and stream and self._armed.is_set():
                        self._armed.clear()
                        client.sendall(pending[:ready])
                        self.lost.set()
                        return
                    ready += size
                client.sendall(pending[:ready])
                pending = pending[ready:]
        except OSError:
            pass
        finally:
            for sock in (upstream, client):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
