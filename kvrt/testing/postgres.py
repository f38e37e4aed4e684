"""PostgreSQL for tests and benches: a server of the user's, a container where Docker runs, or a local process.

The local server is the machine's own PostgreSQL binaries (Debian's are in
``/usr/lib/postgresql/<version>/bin``), a fresh cluster in a temporary directory, listening on a
free loopback port with trust authentication and no Unix socket. As root, it runs as the
``postgres`` user (PostgreSQL refuses root), and its directory belongs to that user.

The process started is the postmaster itself, so :meth:`PostgresServer.kill` is a real SIGKILL of
the server. Its backends outlive it for a moment (and keep its shared memory, which a new server
on the same directory refuses to start beside), so ``kill`` ends them too before it returns.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kvrt.testing.servers import ServerProcess, container_class, docker_available, missing

POSTGRES_INSTALL = "apt-get install -y --no-install-recommends postgresql"
_DEBIAN = Path("/usr/lib/postgresql")


def postgres_bin() -> Path:
    """Return the directory of the PostgreSQL server binaries; fail (under CI) or skip where there are none."""
    found = shutil.which("postgres")
    if found is not None:
        return Path(found).resolve().parent
    versions = sorted(
        (path for path in _DEBIAN.glob("*/bin") if (path / "postgres").exists()),
        key=lambda path: int(path.parent.name) if path.parent.name.isdigit() else 0,
    )
    if not versions:
        missing("PostgreSQL", POSTGRES_INSTALL)
    return versions[-1]


def _server_user() -> tuple[int, int] | None:
    """Return the uid and gid the server runs as: ``postgres``'s when we are root, else ``None`` (ourselves)."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        missing("the postgres user (PostgreSQL refuses to run as root)", POSTGRES_INSTALL)
    return entry.pw_uid, entry.pw_gid


class PostgresServer(ServerProcess):
    """One PostgreSQL server on a free loopback port, its cluster in ``directory`` (made at the first start).

    ``fsync=False`` (the default) skips flushes to disk. A SIGKILL of the server, not of the
    machine, loses nothing by it: every commit has written its WAL to the kernel before it is
    acknowledged (``synchronous_commit`` is on, and set so here), and the kernel's page cache
    outlives the process. ``settings`` are more ``-c`` options.
    """

    what = "PostgreSQL"

    def __init__(
        self, directory: Path, *, port: int | None = None, fsync: bool = False, settings: dict[str, str] | None = None
    ) -> None:
        super().__init__(directory / "server.log", port)
        self.directory = directory
        self.data = directory / "data"
        self.fsync = fsync
        self.settings = settings or {}
        self.bin = postgres_bin()
        self.owner = _server_user()

    @property
    def url(self) -> str:
        """The ``postgresql://`` URL of the ``postgres`` database, as the ``postgres`` superuser (trusted)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run_as_owner(self) -> dict[str, Any]:
        if self.owner is None:
            return {}
        return {"user": self.owner[0], "group": self.owner[1], "extra_groups": []}

    def initialise(self) -> None:
        """Make the cluster, unless the directory holds one already (a restart keeps its data)."""
        if (self.data / "PG_VERSION").exists():
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.owner is not None:
            os.chown(self.directory, *self.owner)
        command = [str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust"]
        command += ["--encoding=UTF8", "--no-locale", "--no-sync"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False, **self._run_as_owner())
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{done.stdout[-1000:]}{done.stderr[-2000:]}")

    def command(self) -> list[str]:
        """Run the postmaster on :attr:`port`, loopback only, with no Unix socket."""
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": "",
            "fsync": "on" if self.fsync else "off",
            "synchronous_commit": "on",  # an acknowledged commit's WAL is with the kernel: a SIGKILL keeps it
            "max_connections": "200",
            **self.settings,
        }
        command = [str(self.bin / "postgres"), "-D", str(self.data)]
        for name, value in settings.items():
            command += ["-c", f"{name}={value}"]
        return command

    def answers(self) -> bool:
        """Say whether the server accepts connections now (not while it starts or recovers)."""
        probe = [str(self.bin / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port), "-t", "1"]
        return subprocess.run(probe, capture_output=True, timeout=10, check=False).returncode == 0

    def start(self, timeout: float = 60.0) -> None:
        """Make the cluster if needed, start the postmaster as its owner, and wait until it accepts connections."""
        self.initialise()
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:  # the process keeps its own descriptor
            self.process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: kill() finds its backends by it
                **self._run_as_owner(),
            )
        deadline = time.monotonic() + timeout
        while not self.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                output = self.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{self.what} did not start on port {self.port}:\n{output}")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL the postmaster, then its backends (which would linger and hold its shared memory)."""
        process = self.process
        if process is None:
            return
        process.send_signal(signal.SIGKILL)
        process.wait()
        self.process = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                return
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop the server with a fast shutdown (SIGINT: clients are cut off, nothing is lost), SIGKILL after 10 s."""
        process = self.process
        if process is None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
        self.process = None


def run_sql(url: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    """Run one statement on a fresh connection and return its rows: a blocking call, usable from any loop or none.

    It runs on an asyncio loop in a thread of its own, so tests under trio (or inside an asyncio
    test's loop) can look at the server directly.
    """
    import asyncpg

    result: list[dict[str, Any]] = []
    failure: list[BaseException] = []

    async def run() -> None:
        connection = await asyncpg.connect(url)
        try:
            result.extend(dict(row) for row in await connection.fetch(sql, *args))
        finally:
            await connection.close()

    def thread() -> None:
        try:
            asyncio.run(run())
        except BaseException as exc:
            failure.append(exc)

    runner = threading.Thread(target=thread, name="kvrt run_sql")
    runner.start()
    runner.join()
    if failure:
        raise failure[0]
    return result


class PostgresTarget:
    """A running PostgreSQL server: where clients go, what it is, and a way to look at it from a test."""

    def __init__(self, url: str, kind: str, server: PostgresServer | None = None) -> None:
        self.url = url
        self.kind = kind
        self.server = server

    def sql(self, statement: str, *args: Any) -> list[dict[str, Any]]:
        """Run ``statement`` on the server, blocking; return its rows."""
        return run_sql(self.url, statement, *args)

    def fresh_table(self) -> str:
        """Return a table name nobody has used (the backend makes the table)."""
        return f"kvrt_{uuid.uuid4().hex[:12]}"

    def drop(self, table: str) -> None:
        """Drop ``table``, if it is there."""
        self.sql(f'DROP TABLE IF EXISTS "{table}"')

    def statements(self, table: str) -> collections.Counter[str]:
        """Count the statements on ``table`` the server has run, by their first word (``SELECT``, ``INSERT``, ...).

        The server's own count (``pg_stat_statements``): what it received, whatever the client
        thinks it sent. The local server loads it; on a server without it a test that needs it fails
        under ``CI=true`` and is skipped elsewhere, saying so.
        """
        (loaded,) = self.sql("SELECT current_setting('shared_preload_libraries') AS names")
        if "pg_stat_statements" not in loaded["names"]:
            missing("pg_stat_statements on this server", "shared_preload_libraries = 'pg_stat_statements'")
        try:
            self.sql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            rows = self.sql("SELECT query, calls FROM pg_stat_statements WHERE query LIKE $1", f'%"{table}"%')
        except Exception as exc:  # not ours to install on this server
            missing(f"pg_stat_statements on this server ({type(exc).__name__})", "CREATE EXTENSION pg_stat_statements")
        counts: collections.Counter[str] = collections.Counter()
        for row in rows:
            counts[row["query"].split(None, 1)[0].upper()] += row["calls"]
        return counts


@contextlib.contextmanager
def local_postgres(**options: Any) -> Iterator[PostgresServer]:
    """Run a fresh local server for the duration of the block, and remove its cluster after."""
    directory = Path(tempfile.mkdtemp(prefix="kvrt-postgres-"))  # under /tmp: the postgres user can reach it
    try:
        server = PostgresServer(directory, **options)
        server.start()
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def postgres_target() -> Iterator[PostgresTarget]:
    """Give the tests a PostgreSQL server for the duration of the block.

    The server ``KVRT_POSTGRESQL_URL`` points at, where it is set (tests make and drop tables of
    their own in it); else PostgreSQL 16 in a container where a Docker engine listens; else the
    machine's PostgreSQL as a local process.
    """
    url = os.environ.get("KVRT_POSTGRESQL_URL")
    if url:
        yield PostgresTarget(url, "a server of yours")
        return
    if docker_available():
        image = container_class("postgres", "PostgresContainer")("postgres:16", driver=None)
        with image.with_command("postgres -c shared_preload_libraries=pg_stat_statements") as container:
            yield PostgresTarget(container.get_connection_url(), "PostgreSQL 16 in a container")
        return
    with local_postgres(settings={"shared_preload_libraries": "pg_stat_statements"}) as server:
        yield PostgresTarget(server.url, "a local PostgreSQL", server)
