"""A memcached server for tests and benches: a local process on a free loopback port, or a container."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

from kvrt.testing.servers import ServerProcess, container_class, docker_available, missing

MEMCACHED_INSTALL = "apt-get install -y --no-install-recommends memcached"


def send(host: str, port: int, line: bytes) -> bytes:
    """Send one command line to memcached and return the start of its reply."""
    with socket.create_connection((host, port), timeout=2) as connection:
        connection.sendall(line + b"\r\n")
        return connection.recv(65536)


class MemcachedTarget:
    """A running memcached server: where it is, and how to empty it."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port

    def flush(self) -> None:
        """Remove every item the server holds."""
        if not send(self.host, self.port, b"flush_all").startswith(b"OK"):
            raise RuntimeError("memcached did not flush")


class MemcachedServer(ServerProcess):
    """memcached on a free loopback port, with ``megabytes`` of memory and items of at most ``item_size`` bytes.

    ``verbose`` makes it log every command it receives (``-vv``), with the connection it came on:
    what the batching tests count.
    """

    what = "memcached"

    def __init__(
        self, *, port: int | None = None, megabytes: int = 64, item_size: int | None = None, verbose: bool = False
    ) -> None:
        handle, log = tempfile.mkstemp(prefix="kvrt-memcached-", suffix=".log")
        os.close(handle)
        super().__init__(Path(log), port)
        self.megabytes = megabytes
        self.item_size = item_size
        self.verbose = verbose

    def command(self) -> list[str]:
        """Run memcached on loopback TCP only (no UDP); it sends nothing anywhere."""
        binary = shutil.which("memcached")
        if binary is None:
            missing("memcached", MEMCACHED_INSTALL)
        command = [binary, "-l", "127.0.0.1", "-p", str(self.port), "-U", "0", "-m", str(self.megabytes)]
        command += ["-u", "root"] if os.geteuid() == 0 else []  # memcached refuses to run as root without it
        command += ["-I", str(self.item_size)] if self.item_size else []
        return [*command, "-vv"] if self.verbose else command

    def answers(self) -> bool:
        """Say whether the server answers ``version`` now."""
        try:
            return send("127.0.0.1", self.port, b"version").startswith(b"VERSION")
        except OSError:
            return False

    def received(self) -> list[tuple[str, str]]:
        """Return what a ``verbose`` server received so far: the connection and the command line of each."""
        seen = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("<") and " " in line:
                connection, command = line[1:].split(" ", 1)
                if connection.isdigit():
                    seen.append((connection, command))
        return seen

    def stop(self) -> None:
        """Stop the server, and remove its log."""
        super().stop()
        self.log.unlink(missing_ok=True)


@contextlib.contextmanager
def memcached_target() -> Iterator[MemcachedTarget]:
    """Run memcached for the duration of the block: in a container where Docker listens, else a local process."""
    if docker_available():
        with container_class("memcached", "MemcachedContainer")("memcached:1.6") as container:
            yield MemcachedTarget(container.get_container_host_ip(), int(container.get_exposed_port(11211)))
        return
    server = MemcachedServer()
    server.start()
    try:
        yield MemcachedTarget("127.0.0.1", server.port)
    finally:
        server.stop()
