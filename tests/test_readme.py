"""The README's commands run as written: the quickstart prints what it says, the main job works on a plain install.

The test suite itself runs with the ``[dev]`` extras, which bring trio, redis-py and more; a core
import that only an extra provides would pass everything else and fail every new user. So the
fresh-install tests build a new venv from a copy of the tree, run the README's main-job command
there exactly as written, and check what a user without extras sees: a working ``import kvrt``,
and one clear error naming the extra for each optional driver.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kvrt.testing.memcached import MemcachedTarget

ROOT = Path(__file__).parent.parent
README = ROOT / "README.md"


def _blocks(language: str) -> list[str]:
    """Return the README's fenced code blocks of ``language`` ("" for blocks without one)."""
    blocks: list[str] = []
    lines: list[str] = []
    inside = wanted = False
    for line in README.read_text().splitlines(keepends=True):
        if line.startswith("```"):
            if inside and wanted:
                blocks.append("".join(lines))
            inside, wanted, lines = not inside, line[3:].strip() == language, []
        elif inside:
            lines.append(line)
    return blocks


def test_quickstart_prints_what_the_readme_says() -> None:
    quickstart = next(block for block in _blocks("python") if "anyio.run(main)" in block)
    printed = next(block for block in _blocks("") if "'name': 'Alice'" in block)
    result = subprocess.run([sys.executable, "-c", quickstart], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout == printed


def bash_blocks() -> list[str]:
    """Return the README's shell commands, in order: the main job first, then the test command."""
    return _blocks("bash")


def test_readme_test_command_is_what_ci_runs() -> None:
    command = next(block for block in bash_blocks() if "pytest" in block).strip()
    ci = (README.parent / ".ci" / "run").read_text().splitlines()
    assert command in ci


OPTIONAL = {
    "kvrt.backends.redis": "redis",
    "kvrt.backends.redis_connections": "redis",
    "kvrt.backends.s3": "s3",
    "kvrt.backends.dynamodb": "dynamodb",
    "kvrt.backends.mongodb": "mongodb",
    "kvrt.backends.postgresql": "postgresql",
    "kvrt.backends.duckdb": "duckdb",
    "kvrt.backends.rocksdb": "rocksdb",
    "kvrt.backends.chdb": "chdb",
    "kvrt.backends.keyring": "keyring",
    "kvrt.metrics": "metrics",
}
"""Backend modules whose driver comes with an extra, and that extra."""


@dataclass(frozen=True)
class FreshInstall:
    tree: Path
    python: Path
    env: dict[str, str]
    main_job: subprocess.CompletedProcess[str]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run the venv's python with ``args``, outside the source tree (so only the installed kvrt is seen)."""
        return subprocess.run(
            [str(self.python), *args],
            cwd=self.tree.parent,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FreshInstall]:
    where = tmp_path_factory.mktemp("fresh")
    tree = where / "kvrt"
    shutil.copytree(
        ROOT,
        tree,
        symlinks=True,
        ignore=shutil.ignore_patterns(".git", "build", "*.egg-info", "__pycache__", ".*_cache", ".venv", "venv"),
    )
    venv = where / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = {name: value for name, value in os.environ.items() if not name.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env |= {"PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", "VIRTUAL_ENV": str(venv)}
    command = bash_blocks()[0].strip()  # the README's first command: install with no extras, run the demo
    assert "pip install ." in command, command
    assert "kvrt demo" in command, command
    main_job = subprocess.run(
        ["bash", "-c", command], cwd=tree, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    yield FreshInstall(tree, venv / "bin" / "python", env, main_job)
    shutil.rmtree(where, ignore_errors=True)


def test_readme_main_job_runs_after_a_plain_install(fresh: FreshInstall) -> None:
    result = fresh.main_job
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "kvrt demo:" in result.stdout
    assert "reopened" in result.stdout.splitlines()[-1]
    assert "Traceback" not in result.stderr


def test_no_extra_is_installed(fresh: FreshInstall) -> None:
    """The checks below mean something only if the venv really lacks the extras' packages."""
    extras = (
        "trio",
        "redis",
        "cryptography",
        "pydantic",
        "aiobotocore",
        "botocore",
        "pymongo",
        "bson",
        "aiomcache",
        "asyncpg",
        "duckdb",
        "rocksdict",
        "chdb",
        "keyring",
        "prometheus_client",
        "matplotlib",
    )
    result = fresh.run("-c", f"import importlib.util as u; print([m for m in {extras!r} if u.find_spec(m)])")
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


def test_import_kvrt_after_a_plain_install(fresh: FreshInstall) -> None:
    embedded = ("memory", "disk", "multi_disk", "simple", "filetree")
    result = fresh.run("-c", "import kvrt; " + "; ".join(f"import kvrt.backends.{name}" for name in embedded))
    assert result.returncode == 0, result.stderr


def test_wrappers_work_after_a_plain_install_and_the_rest_name_their_extra(fresh: FreshInstall) -> None:
    script = """
import asyncio, kvrt
from kvrt.errors import MissingExtraError
from kvrt.wrappers import CompressionWrapper, FernetEncryptionWrapper, PrefixKeysWrapper
from kvrt.adapters import PydanticAdapter, RaiseOnMissingAdapter
import kvrt.backends.pykv

async def main():
    store = PrefixKeysWrapper(key_value=CompressionWrapper(key_value=kvrt.open("memory://")), prefix="p")
    await store.put("k", {"v": "x" * 2000})
    assert await RaiseOnMissingAdapter(key_value=store).get("k", raise_on_missing=True) == {"v": "x" * 2000}
    assert await store.keys() == ["k"]
    for make, extra in ((lambda: FernetEncryptionWrapper(key_value=store, source_material="m", salt="s"), "encryption"),
                        (lambda: PydanticAdapter(key_value=store, pydantic_model=dict), "pydantic")):
        try:
            make()
        except MissingExtraError as error:
            assert f"pip install 'kvrt[{extra}]'" in str(error), error
        else:
            raise AssertionError(extra)
    print("ok")

asyncio.run(main())
"""
    result = fresh.run("-c", script)
    assert result.stdout.strip() == "ok", result.stderr


def test_handles_and_errors_work_without_the_reference(fresh: FreshInstall) -> None:
    script = """
import sys, kvrt, kvrt.sync
from kvrt.errors import InvalidTTLError
cache = kvrt.sync.open("memory://")
cache.put("k", {"v": 1})
assert cache.get("k") == {"v": 1}
try:
    cache.put("k", {"v": 1}, ttl=-1)
except InvalidTTLError:
    pass
assert "key_value" not in sys.modules
print("ok")
"""
    result = fresh.run("-c", script)
    assert result.stdout.strip() == "ok", result.stderr


def test_memcached_needs_no_extra(fresh: FreshInstall, memcached_server: MemcachedTarget) -> None:
    """kvrt speaks memcached's protocol itself: a plain install reaches a real server."""
    script = f"""
import kvrt.sync
cache = kvrt.sync.open("memcached://{memcached_server.host}:{memcached_server.port}")
cache.put("fresh-install", {{"v": 1}})
assert cache.get("fresh-install") == {{"v": 1}}
print("ok")
"""
    result = fresh.run("-c", script)
    assert result.stdout.strip() == "ok", result.stderr


@pytest.mark.parametrize(("module", "extra"), OPTIONAL.items())
def test_a_missing_driver_names_its_extra(fresh: FreshInstall, module: str, extra: str) -> None:
    result = fresh.run("-c", f"import {module}")
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("kvrt.errors.MissingExtraError: "), result.stderr
    assert f"pip install 'kvrt[{extra}]'" in last
    assert "ModuleNotFoundError" not in result.stderr  # the driver's own error is not shown as well


@pytest.mark.parametrize(
    ("url", "extra"),
    [
        ("redis://localhost", "redis"),
        ("valkey://localhost", "redis"),
        ("mongodb://localhost", "mongodb"),
        ("postgresql://localhost", "postgresql"),
    ],
)
def test_a_url_whose_driver_is_missing_names_its_extra(fresh: FreshInstall, url: str, extra: str) -> None:
    result = fresh.run("-c", f"import kvrt; kvrt.open({url!r})")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("kvrt.errors.MissingExtraError: "), result.stderr
    assert f"pip install 'kvrt[{extra}]'" in result.stderr


def test_demo_under_trio_without_trio_says_what_to_install(fresh: FreshInstall) -> None:
    result = fresh.run("-m", "kvrt", "demo", "--loop", "trio", "--seconds", "0.5")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip() == "kvrt: --loop trio needs trio: pip install 'kvrt[trio]'"


def test_store_commands_work_after_a_plain_install(fresh: FreshInstall, tmp_path: Path) -> None:
    url = f"disk://{tmp_path}"
    put = fresh.run("-m", "kvrt", "put", url, "alice", '{"name": "Alice"}', "-c", "users")
    assert put.returncode == 0, put.stderr
    got = fresh.run("-m", "kvrt", "get", url, "alice", "-c", "users")
    assert (got.returncode, got.stdout.strip()) == (0, '{"name":"Alice"}'), got.stderr
    trio = fresh.run("-m", "kvrt", "get", url, "alice", "--loop", "trio")
    assert trio.returncode == 2
    assert trio.stderr.strip().endswith("pip install 'kvrt[trio]'"), trio.stderr
