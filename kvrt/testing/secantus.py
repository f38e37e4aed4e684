"""Run SecantusDB (a MongoDB wire-protocol server, not mongod) for kvrt's tests: ``python -m kvrt.testing.secantus``.

Its own command line ignores the TTL sweeper's period; this one sets it, so that tests of the
server's native expiry need not wait the default minute.
"""

from __future__ import annotations

import argparse
import signal
import threading
from types import FrameType


def main(argv: list[str] | None = None) -> None:
    """Serve on ``--host``/``--port`` from ``--storage-path`` until SIGTERM or SIGINT."""
    from secantus.server import SecantusDBServer

    parser = argparse.ArgumentParser(prog="python -m kvrt.testing.secantus")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--storage-path", required=True)
    parser.add_argument("--ttl-sweep-seconds", type=float, default=60.0)
    parser.add_argument("--sync-on-commit", action="store_true")
    parser.add_argument("--auth", action="store_true", help="require a login (SCRAM-SHA-256)")
    args = parser.parse_args(argv)
    server = SecantusDBServer(
        host=args.host,
        port=args.port,
        storage_path=args.storage_path,
        enable_test_commands=False,
        ttl_sweep_seconds=args.ttl_sweep_seconds,
        sync_on_commit=args.sync_on_commit,
        require_auth=args.auth,
    )
    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.start()
    stopping.wait()
    server.stop()


if __name__ == "__main__":
    main()
