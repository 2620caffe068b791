"""A TCP forwarder on 127.0.0.1 that a test can cut off from its upstream, as a network partition does.

It forwards bytes both ways without looking at them (TLS passes through: the client still verifies
the server it reaches behind the proxy). :meth:`TcpProxy.partition` blackholes traffic: new
connections are accepted but never connected upstream, and whatever either side sends on any
connection is read and dropped, never delivered. :meth:`TcpProxy.heal` ends the partition: new
connections are forwarded again, and the connections that lost bytes during the partition are closed
(their streams are broken, as a connection whose peer timed out is).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType

POLL_SECONDS = 0.1
CHUNK_BYTES = 65536


class _Connection:
    """One client connection and, unless it was accepted during a partition, its upstream socket."""

    def __init__(self, client: socket.socket, upstream: socket.socket | None) -> None:
        self.client = client
        self.upstream = upstream
        self.broken = upstream is None  # lost bytes to a partition: closed when the partition heals
        self.closed = threading.Event()

    def close(self) -> None:
        self.closed.set()
        for sock in (self.client, self.upstream):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()


class TcpProxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self._listener: socket.socket | None = None
        self._partitioned = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._connections: list[_Connection] = []
        self._threads: list[threading.Thread] = []
        self.port = 0
        self.dropped_bytes = 0
        """Bytes either side sent during partitions (read and dropped, never delivered)."""
        self.forwarded_bytes = 0
        """Bytes delivered, both ways."""

    @property
    def partitioned(self) -> bool:
        return self._partitioned.is_set()

    def start(self) -> TcpProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        listener.settimeout(POLL_SECONDS)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._spawn(self._accept)
        return self

    def partition(self) -> None:
        self._partitioned.set()

    def heal(self) -> None:
        with self._lock:
            broken = [c for c in self._connections if c.broken]
            self._connections = [c for c in self._connections if not c.broken]
            self._partitioned.clear()
        for connection in broken:
            connection.close()

    def stop(self) -> None:
        self._stopping.set()
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()
        for thread in self._threads:
            thread.join(5)
        self._threads.clear()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(POLL_SECONDS)
            upstream = None
            if not self.partitioned:
                try:
                    upstream = socket.create_connection(self.upstream, timeout=5)
                except OSError:
                    client.close()
                    continue
                upstream.settimeout(POLL_SECONDS)
            connection = _Connection(client, upstream)
            with self._lock:
                self._connections.append(connection)
            self._spawn(self._pump, connection, True)
            if upstream is not None:
                self._spawn(self._pump, connection, False)

    def _pump(self, connection: _Connection, from_client: bool) -> None:
        source = connection.client if from_client else connection.upstream
        target = connection.upstream if from_client else connection.client
        assert source is not None
        while not connection.closed.is_set() and not self._stopping.is_set():
            try:
                data = source.recv(CHUNK_BYTES)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            if self.partitioned or target is None:
                connection.broken = True
                with self._lock:
                    self.dropped_bytes += len(data)
                continue
            try:
                target.sendall(data)
            except OSError:
                break
            with self._lock:
                self.forwarded_bytes += len(data)
        if not connection.broken or self._stopping.is_set():
            connection.close()  # a broken one stays open (and silent) until the partition heals
