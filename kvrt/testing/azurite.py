"""Azurite, Microsoft's Azure Storage emulator, for tests and benches: its table service as a local process.

``azurite-table`` runs as a node process on a free loopback port, in memory (a restart loses
everything), with telemetry off: Azurite otherwise reports to Microsoft's Application Insights, and
a test sends nothing anywhere but loopback. With it off, Azurite 3.35 opens no outbound connection
at all (traced with strace, starting and serving); in memory it writes nothing to its working
directory, so it needs no ``--location`` (which it refuses beside ``--inMemoryPersistence``), and
``--debug`` only where a test reads the requests it received. The account is the emulator's
well-known ``devstoreaccount1``, its key published in Microsoft's documentation; ``AZURITE_ACCOUNTS``
(which would replace it) is kept from the process.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kvrt.testing.servers import ServerProcess, docker_available, missing

AZURITE_INSTALL = "npm install -g azurite@3"
AZURITE_IMAGE = "mcr.microsoft.com/azure-storage/azurite:3.35.0"
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
"""The emulator's published account key: a test fixture, not a secret."""
CONNECTION_STRING_VARIABLE = "KVRT_AZURE_TABLES_CONNECTION_STRING"
_RECEIVED = re.compile(r"TableStorageContextMiddleware: RequestMethod=(\w+) RequestURL=(\S+)")
_ENVIRONMENT_OVERRIDES = ("AZURITE_ACCOUNTS", "AZURITE_DB")  # would replace the well-known account, or its store


def connection_string(host: str, port: int) -> str:
    """Return the connection string of the emulator's account on ``host:port``."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"TableEndpoint=http://{host}:{port}/{ACCOUNT};"
    )


def answers(host: str, port: int) -> bool:
    """Say whether a table service answers on ``host:port`` (an unsigned request is refused, which is an answer)."""
    try:
        connection = http.client.HTTPConnection(host, port, timeout=1)
        try:
            connection.request("GET", f"/{ACCOUNT}/Tables")
            return connection.getresponse().status in (200, 401, 403)
        finally:
            connection.close()
    except OSError:
        return False


def azurite_script() -> str:
    """Return the path of Azurite's table service script; fail or skip if it is not installed."""
    found = shutil.which("azurite-table")
    local = Path.cwd() / "node_modules" / ".bin" / "azurite-table"
    if found is None and local.exists():
        found = str(local)
    if found is None:
        missing("Azurite (azurite-table)", AZURITE_INSTALL)
    return os.path.realpath(found)


class AzuriteServer(ServerProcess):
    """Azurite's table service on a free loopback port, in memory, telemetry off.

    The process is node itself (the script is run by node, not through a shell or npm's wrapper),
    so :meth:`kill` leaves no orphan holding the port. ``debug_log`` makes Azurite write its
    debug log there: every request it received, what the batching tests count.
    """

    what = "Azurite"

    def __init__(self, *, port: int | None = None, debug_log: Path | None = None) -> None:
        handle, log = tempfile.mkstemp(prefix="kvrt-azurite-", suffix=".log")
        os.close(handle)
        super().__init__(Path(log), port)
        self.debug_log = debug_log

    @property
    def connection_string(self) -> str:
        """The connection string of the emulator's account on this server."""
        return connection_string("127.0.0.1", self.port)

    def command(self) -> list[str]:
        """Run the table service: loopback only, in memory, no telemetry, no access log on stdout."""
        script = azurite_script()
        node = shutil.which("node")
        runner = [node, script] if node is not None and script.endswith(".js") else [script]
        environment = [part for name in _ENVIRONMENT_OVERRIDES if name in os.environ for part in ("-u", name)]
        command = ["env", *environment, *runner] if environment else runner  # env execs node: same process
        command += ["--tableHost", "127.0.0.1", "--tablePort", str(self.port)]
        command += ["--inMemoryPersistence", "--disableTelemetry", "--silent"]
        return [*command, "--debug", str(self.debug_log)] if self.debug_log is not None else command

    def answers(self) -> bool:
        """Say whether the table service answers now."""
        return answers("127.0.0.1", self.port)

    def received(self) -> list[tuple[str, str]]:
        """Return what a server with a ``debug_log`` received so far: the method and URL of each request.

        Azurite writes its log as it goes, so a request just answered may not be there yet: send a
        :meth:`mark` and wait until it shows up before counting what came before it.
        """
        if self.debug_log is None or not self.debug_log.exists():
            return []
        text = self.debug_log.read_text(errors="replace")
        return [(match[1], match[2]) for match in _RECEIVED.finditer(text)]

    def mark(self) -> str:
        """Send the server a request of no account's (refused, but logged) and return the URL it logs it by."""
        marker = uuid.uuid4().hex
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            connection.request("GET", f"/{ACCOUNT}/Tables?mark={marker}")
            connection.getresponse().read()
        finally:
            connection.close()
        return marker

    def received_before(self, marker: str, within: float = 10.0) -> list[tuple[str, str]]:
        """Return what the server received before the request :meth:`mark` sent, once its log holds it."""
        deadline = time.monotonic() + within
        while True:
            received = self.received()
            for index, (_, url) in enumerate(received):
                if url.endswith(f"mark={marker}"):
                    return received[:index]
            if time.monotonic() > deadline:
                raise RuntimeError(f"Azurite's debug log did not show the mark within {within:g} s")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop the server, and remove its log."""
        super().stop()
        self.log.unlink(missing_ok=True)


class AzureTablesTarget:
    """A running table service: its connection string, and what it is (Azurite, or an account of yours)."""

    def __init__(self, connection_string: str, kind: str) -> None:
        self.connection_string = connection_string
        self.kind = kind

    @staticmethod
    def fresh_table() -> str:
        """Return a table name no test used yet."""
        return f"kvrt{uuid.uuid4().hex[:16]}"

    def service(self) -> Any:
        """Return a blocking ``TableServiceClient`` of the service, to see and tidy what it holds."""
        from azure.data.tables import TableServiceClient

        return TableServiceClient.from_connection_string(self.connection_string)

    def delete_table(self, name: str) -> None:
        """Delete the table ``name`` (there or not)."""
        with self.service() as service:
            service.delete_table(name)


@contextlib.contextmanager
def azure_tables_target() -> Iterator[AzureTablesTarget]:
    """Give the tests a table service for the duration of the block.

    Your account where ``KVRT_AZURE_TABLES_CONNECTION_STRING`` gives its connection string (tests
    make tables of their own there, and delete them); else Azurite in a container where a Docker
    engine listens; else Azurite as a local process.
    """
    given = os.environ.get(CONNECTION_STRING_VARIABLE)
    if given:
        yield AzureTablesTarget(given, "Azure")
        return
    if docker_available():
        with _container() as (host, port):
            yield AzureTablesTarget(connection_string(host, port), "Azurite")
        return
    server = AzuriteServer()
    server.start()
    try:
        yield AzureTablesTarget(server.connection_string, "Azurite")
    finally:
        server.stop()


@contextlib.contextmanager
def _container() -> Iterator[tuple[str, int]]:
    """Run Azurite's table service alone in a container (telemetry off), and wait until it answers."""
    from testcontainers.core.container import DockerContainer

    command = "azurite-table --tableHost 0.0.0.0 --inMemoryPersistence --disableTelemetry --silent"
    with DockerContainer(AZURITE_IMAGE).with_command(command).with_exposed_ports(10002) as container:
        host, port = container.get_container_host_ip(), int(container.get_exposed_port(10002))
        deadline = time.monotonic() + 60
        while not answers(host, port):
            if time.monotonic() > deadline:
                raise RuntimeError("Azurite's container did not answer within 60 s")
            time.sleep(0.1)
        yield host, port
