"""The file-tree backend: conformance, names that must not escape, atomic writes, budgeted culling."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from kvrt import Runtime
from kvrt.backends import filetree
from kvrt.backends.filetree import (
    INFO_SUFFIX,
    FileTreeBackend,
    collection_directory,
    entry_file,
    plain,
)
from kvrt.backends.names import hashed
from kvrt.entry import Stamp, encode_entry, encode_value, stamp
from kvrt.errors import DeserializationError, KeyValueStoreError, PathSecurityError, StoreSetupError
from kvrt.handle import AttachedFullHandle
from kvrt.testing import ConformanceSuite
from kvrt.testing.conformance import sleep_past

HOSTILE = {
    "dot dot": "..",
    "dot": ".",
    "slash": "/",
    "traversal": "../../etc/passwd",
    "absolute": "/etc/passwd",
    "nul": "a\x00b",
    "long": "x" * 1000,
    "long multibyte": "é" * 128,  # 256 bytes of UTF-8 in 128 characters
    "hashed look-alike": "%%" + "0" * 64,
    "windows device": "CON",
    "metadata look-alike": "users-info.json",
    "backslash": "..\\..\\windows",
    "newline": "a\nb",
}


async def spawn(runtime: Runtime, backend: FileTreeBackend, name: str = "filetree") -> AttachedFullHandle:
    """Spawn ``backend``: a handle with every segment, typed so even where the runtime's overloads omit this backend."""
    store = await runtime.spawn(backend, name=name)
    assert isinstance(store, AttachedFullHandle)
    return store


class TestFileTreeConformance(ConformanceSuite):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> FileTreeBackend:
        return FileTreeBackend(tmp_path / "tree")


def _files(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*") if path.is_file())


def _document(key: str, collection: str, value: dict[str, Any], when: Stamp | None = None) -> bytes:
    return encode_entry(key, collection, encode_value(value), when or stamp(None))


# Names.


def test_plain_names_are_the_references_file_names() -> None:
    assert entry_file("user-1") == "user-1.json"
    assert entry_file("ünï 名前 🎉 *?[a-z] {}") == "ünï 名前 🎉 *?[a-z] {}.json"
    assert collection_directory("users") == "users"
    assert collection_directory("a b.c") == "a b.c"
    assert entry_file("k" * 250) == "k" * 250 + ".json", "255 bytes with the suffix: as it is"
    assert entry_file("k" * 251) == hashed("k" * 251) + ".json"
    assert collection_directory("c" * 245) == "c" * 245, "room for -info.json next to it"
    assert collection_directory("c" * 246) == hashed("c" * 246)


PLAIN_ON_POSIX = {"CON", "..\\..\\windows", "a\nb"}
"""Names a POSIX file system holds as they are (the reference writes them so): only Windows refuses them."""


@pytest.mark.parametrize("name", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_name_that_is_not_one_safe_file_name_is_hashed(name: str) -> None:
    as_key = name in PLAIN_ON_POSIX or name == "users-info.json"  # a key's file ends in .json anyway
    assert entry_file(name, windows=False) == (name if as_key else hashed(name)) + ".json"
    assert collection_directory(name, windows=False) == (name if name in PLAIN_ON_POSIX else hashed(name))
    assert entry_file(name, windows=True) == (name if name == "users-info.json" else hashed(name)) + ".json"


def test_windows_names_are_hashed_on_windows_only() -> None:
    for name in ["CON", "con", "Nul.txt", "COM1", "lpt9.log", "COM\u00b9", "a:b", "a<b", "a|b", "a?b", "end.", "end "]:
        assert not plain(name, ".json", windows=True), name
        assert plain(name, ".json", windows=False), name
    for name in ["CONSOLE", "COM10", "nul-ish", "a.b"]:
        assert plain(name, ".json", windows=True), name


def test_names_fit_the_room_the_path_leaves() -> None:
    assert plain("k" * 95, ".json", room=100)
    assert not plain("k" * 96, ".json", room=100)
    assert entry_file("k" * 96, room=100) == hashed("k" * 96) + ".json"


def test_a_directory_is_required() -> None:
    with pytest.raises(TypeError):
        FileTreeBackend("")
    with pytest.raises(TypeError):
        FileTreeBackend(None)  # type: ignore[arg-type]


# Layout and safety.


def _check_contained(parent: Path, root: Path) -> None:
    """Everything is inside ``root``, as collection/entry at most, and nothing beside it in ``parent``."""
    assert [path.name for path in parent.iterdir()] == [root.name], "nothing beside the tree"
    assert not Path("/etc/passwd.json").exists()
    for path in root.rglob("*"):
        assert path.resolve().is_relative_to(root.resolve())
        relative = path.relative_to(root).parts
        assert len(relative) <= 2, f"{path} is deeper than collection/entry"
        assert all(len(part.encode()) <= 255 for part in relative)
        if path.is_file():
            assert path.name.endswith(".json"), "no temporary file left"


@pytest.mark.anyio
async def test_entries_and_metadata_are_laid_out_as_the_reference_lays_them(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    async with Runtime() as runtime:
        store = await spawn(runtime, FileTreeBackend(root))
        await store.put("u1", {"name": "Alice"}, collection="users", ttl=60)
        await store.put("u2", {"name": "Bob"}, collection="users")
    assert _files(root) == [root / "users" / "u1.json", root / "users" / "u2.json", root / "users-info.json"]
    document = json.loads((root / "users" / "u1.json").read_text())
    assert (document["key"], document["collection"], document["value"]) == ("u1", "users", {"name": "Alice"})
    info = json.loads((root / "users-info.json").read_text())
    assert set(info) == {"collection", "created_at", "directory", "version"}
    assert (info["collection"], info["directory"], info["version"]) == ("users", str(root.resolve() / "users"), 1)
    assert (root / "users-info.json").read_text() == json.dumps(info, sort_keys=True)
    assert oct((root / "users" / "u1.json").stat().st_mode & 0o777) == "0o600", "as mkstemp makes the reference's"


@pytest.mark.anyio
async def test_hostile_names_write_nothing_outside_and_round_trip(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    names = list(HOSTILE.values())
    async with Runtime() as runtime:
        store = await spawn(runtime, FileTreeBackend(root))
        for index, name in enumerate(names):
            await store.put(name, {"i": index}, collection="plain")
            await store.put("k", {"i": index}, collection=name)
            await store.put(name, {"both": index}, collection=name)

    _check_contained(tmp_path, root)

    async with Runtime() as runtime:  # a fresh backend finds every name on disk
        store = await spawn(runtime, FileTreeBackend(root))
        assert sorted(await store.keys("plain")) == sorted(names)
        assert sorted(await store.collections()) == sorted(["plain", *names])
        for index, name in enumerate(names):
            assert await store.get(name, collection="plain") == {"i": index}
            assert sorted(await store.keys(name)) == sorted({"k", name})
            assert await store.get(name, collection=name) == {"both": index}
        assert await store.destroy_collection("../../etc/passwd") is True
        assert await store.get("k", collection="../../etc/passwd") is None
        assert await store.destroy() is True
    assert list(root.iterdir()) == [], "destroy leaves no directory or metadata file of kvrt's"


@pytest.mark.anyio
async def test_symbolic_links_in_the_tree_are_not_followed(tmp_path: Path) -> None:
    root, outside = tmp_path / "tree", tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.json"
    secret.write_bytes(_document("secret", "c", {"leaked": True}))
    async with Runtime() as runtime:
        store = await spawn(runtime, FileTreeBackend(root))
        await store.put("k", {"v": 1}, collection="c")
        (root / "c" / "link.json").symlink_to(secret)
        (root / "escape").symlink_to(outside, target_is_directory=True)
        assert await store.get("link", collection="c") is None, "a linked file is not read"
        assert await store.keys("c") == ["k"]
        await store.put("link", {"v": 2}, collection="c")
        assert await store.get("link", collection="c") == {"v": 2}
        assert not (root / "c" / "link.json").is_symlink(), "the link itself was replaced"
        with pytest.raises(PathSecurityError):
            await store.put("secret", {"v": 3}, collection="escape")
        with pytest.raises(PathSecurityError):
            await store.get("secret", collection="escape")
        assert await store.collections() == ["c"]
    assert json.loads(secret.read_text())["value"] == {"leaked": True}, "the outside file is untouched"
    assert sorted(path.name for path in outside.iterdir()) == ["secret.json"]


@pytest.mark.anyio
async def test_a_collection_whose_place_is_a_file_is_refused_and_nothing_is_lost(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    root.mkdir()
    (root / "notes").write_text("not kvrt's")
    async with Runtime() as runtime:
        store = await spawn(runtime, FileTreeBackend(root))
        await store.put("k", {"v": 1}, collection="kept")
        with pytest.raises(KeyValueStoreError, match="not a directory"):
            await store.put("k", {"v": 1}, collection="notes")
        assert await store.get("k", collection="kept") == {"v": 1}
        assert await store.collections() == ["kept"]
        assert await store.destroy() is True
    assert (root / "notes").read_text() == "not kvrt's"


@pytest.mark.anyio
async def test_destroy_leaves_what_is_not_kvrts(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    async with Runtime() as runtime:
        store = await spawn(runtime, FileTreeBackend(root))
        await store.put_many(["a", "b"], [{"v": 1}, {"v": 2}], collection="c")
        (root / "c" / "README.txt").write_text("mine")
        (root / "c" / "..json").write_text("not an entry's name")
        assert await store.keys("c") in (["a", "b"], ["b", "a"])
        assert await store.destroy_collection("c") is True
        assert await store.destroy_collection("c") is False
        assert await store.keys("c") == []
    assert sorted(path.name for path in (root / "c").iterdir()) == ["..json", "README.txt"]
    assert (root / f"c{INFO_SUFFIX}").exists(), "the directory is not empty: its metadata file stays"


@pytest.mark.anyio
async def test_a_collection_removed_by_another_process_is_made_again(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    async with Runtime() as runtime:
        first = await spawn(runtime, FileTreeBackend(root), "first")
        second = await spawn(runtime, FileTreeBackend(root), "second")
        await first.put("k", {"v": 1}, collection="c")
        assert await second.destroy_collection("c") is True
        assert not (root / "c").exists()
        await first.put("k", {"v": 2}, collection="c")
        assert await second.get("k", collection="c") == {"v": 2}
        assert (root / f"c{INFO_SUFFIX}").exists()


# Atomicity.


@pytest.mark.anyio
async def test_a_reader_racing_writers_never_sees_a_partial_document(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    big = "x" * 400_000
    seen: set[int] = set()
    async with Runtime() as runtime:
        writer = await spawn(runtime, FileTreeBackend(root), "writer")
        reader = await spawn(runtime, FileTreeBackend(root), "reader")  # a lane (thread) of its own
        await writer.put("k", {"n": -1, "pad": big})
        done = anyio.Event()

        async def write() -> None:
            for n in range(40):
                await writer.put_many(["k", f"other-{n}"], [{"n": n, "pad": big}, {"n": n}])
            done.set()

        async def read() -> None:
            while not done.is_set():
                try:
                    value = await reader.get("k")
                except DeserializationError:
                    pytest.fail("the reader saw a partly written document")
                assert value is not None
                assert value["pad"] == big, "the reader saw a partly written document"
                seen.add(value["n"])

        async with anyio.create_task_group() as group:
            group.start_soon(read)
            group.start_soon(write)
    assert len(seen) >= 3, f"the reader and the writers did not overlap (saw versions {sorted(seen)})"


@pytest.mark.anyio
async def test_temporary_files_are_never_entries_and_are_removed_once_stale(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    async with Runtime() as runtime:
        store = await spawn(runtime, FileTreeBackend(root))
        await store.put("k", {"v": 1}, collection="c")
        planted = _document("k", "c", {"v": "half"})
        gone_writer = root / "c" / ".kvrt-99999999-00ab-0.tmp"  # no such process
        fresh_own = root / "c" / f".kvrt-{os.getpid()}-00ab-1.tmp"  # a write of a backend in this process, maybe
        old_own = root / "c" / f".kvrt-{os.getpid()}-00ab-2.tmp"
        at_root = root / ".kvrt-99999999-00ab-3.tmp"
        references = root / "c" / "tmpq1w2e3r4.tmp"
        for path in (gone_writer, fresh_own, old_own, at_root, references):
            path.write_bytes(planted)
        long_ago = time.time() - 3600
        os.utime(old_own, (long_ago, long_ago))
        crashed = FileTreeBackend(root)  # a write cut short: the temporary file the backend itself makes
        await crashed.open()
        try:
            cut_short, fd = crashed._temporary(str(root / "c"))
            os.write(fd, planted[:20])
            os.close(fd)
        finally:
            await crashed.close()
        assert await store.keys("c") == ["k"]
        assert await store.get("k", collection="c") == {"v": 1}
        reopened = FileTreeBackend(root)  # the first pass after an open is due at once
        await reopened.open()
        try:
            while not (await reopened.cull(16))[1]:
                pass
        finally:
            await reopened.close()
        left = sorted(path.name for path in (root / "c").iterdir())
        assert left == sorted(["k.json", fresh_own.name, references.name, Path(cut_short).name])
        assert not at_root.exists()
        assert await store.get("k", collection="c") == {"v": 1}


# Culling.


@pytest.mark.anyio
async def test_cull_goes_in_budgeted_steps_with_a_cursor(tmp_path: Path) -> None:
    backend = FileTreeBackend(tmp_path / "tree")
    await backend.open()
    try:
        short = stamp(0.3)
        assert short.expires_epoch is not None
        for collection in ("a", "b", "c"):
            keys = [f"e{i}" for i in range(100)]
            documents = [_document(key, collection, {"i": i}, short) for i, key in enumerate(keys)]
            await backend.put_many(collection, keys, documents, [short.expires_epoch] * len(keys))
            live = [f"live{i}" for i in range(20)]
            await backend.put_many(collection, live, [_document(key, collection, {}) for key in live], [None] * 20)
        await sleep_past(short.expires_epoch)
        found = await backend.get_many("a", ["e0", "live0"])
        assert found[0] is None, "the backend itself filters an expired entry on read"
        assert found[1] is not None
        assert json.loads(found[1])["key"] == "live0"
        assert await backend.delete_many("a", ["e1"]) == [False], "an expired entry is not counted as removed"
        steps: list[tuple[int, bool]] = []
        while not (steps and steps[-1][1]):
            steps.append(await backend.cull(50))
            assert len(steps) < 100, "culling never finished"
        assert all(removed <= 50 for removed, _ in steps), steps
        assert len(steps) >= 6, f"a step looks at about its budget of files: {steps}"
        assert sum(removed for removed, _ in steps) == 299
        for collection in ("a", "b", "c"):
            assert sorted(await backend.keys(collection, None)) == sorted(f"live{i}" for i in range(20))
            assert len(os.listdir(tmp_path / "tree" / collection)) == 20, "expired files removed from disk"
        assert await backend.cull(1000) == (0, True), "nothing is due: no pass"
    finally:
        await backend.close()


@pytest.mark.anyio
async def test_cull_leaves_entries_that_did_not_expire(tmp_path: Path) -> None:
    async with Runtime() as runtime:
        store = await spawn(runtime, FileTreeBackend(tmp_path / "tree"))
        await store.put_many(["short", "long"], [{"v": 1}, {"v": 2}], ttl=0.2)
        await store.put("long", {"v": 3}, ttl=100)
        await store.put("forever", {"v": 4})
        await sleep_past(time.time() + 0.2)
        await store.cull()
        assert sorted(await store.keys()) == ["forever", "long"]
        assert sorted(path.name for path in (tmp_path / "tree" / "default_collection").iterdir()) == [
            "forever.json",
            "long.json",
        ]


@pytest.mark.anyio
async def test_a_pass_runs_once_something_is_due(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    other = FileTreeBackend(root)  # another writer: its expiries reach the culling backend only through a pass
    backend = FileTreeBackend(root)
    await other.open()
    await backend.open()

    async def put(writer: FileTreeBackend, key: str, ttl: float) -> float:
        when = stamp(ttl)
        assert when.expires_epoch is not None
        await writer.put_many("c", [key], [_document(key, "c", {}, when)], [when.expires_epoch])
        return when.expires_epoch

    try:
        assert await backend.cull(100) == (0, True), "the first pass after open"
        await sleep_past(await put(other, "foreign", 0.1))
        assert await backend.cull(100) == (0, True)
        assert (root / "c" / "foreign.json").exists(), "nothing it knows of is due: no pass, the tree is not read"
        await sleep_past(await put(backend, "mine", 0.1))
        assert await backend.cull(100) == (2, True), "what it wrote is due: a pass, which removes both"
        later = await put(other, "later", 0.8)
        await sleep_past(await put(backend, "mine again", 0.1))
        assert await backend.cull(100) == (1, True), "a pass, which sees 'later' live"
        await sleep_past(later)
        assert await backend.cull(100) == (1, True), "what the last pass saw is due: a pass"
        assert os.listdir(root / "c") == []
    finally:
        await backend.close()
        await other.close()


@pytest.mark.anyio
async def test_a_directory_that_cannot_be_made_is_a_setup_error(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("a file")
    async with Runtime() as runtime:
        with pytest.raises(StoreSetupError, match="cannot create the directory"):
            await spawn(runtime, FileTreeBackend(tmp_path / "taken"))


@pytest.mark.anyio
async def test_a_batch_yields_the_lanes_cpu_between_its_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Between a batch's files the lane lets a thread waiting for its CPU run: the event loop's above all."""
    threads: list[str] = []
    monkeypatch.setattr(filetree, "yield_cpu", lambda: threads.append(threading.current_thread().name))
    backend = FileTreeBackend(tmp_path / "tree")
    await backend.open()
    try:
        await backend.put_many("c", ["first"], [_document("first", "c", {})], [None])  # and the metadata file
        threads.clear()
        keys = [f"k{i}" for i in range(10)]
        await backend.put_many("c", keys, [_document(key, "c", {}) for key in keys], [None] * len(keys))
        assert len(threads) == 2 * len(keys), "once after each file is written, once after each is renamed"
        assert set(threads) == {backend._lane.name}, "only the lane's own thread yields"
        for batch in (backend.get_many("c", keys), backend.delete_many("c", keys)):
            threads.clear()
            assert len(await batch) == len(keys)
            assert len(threads) == len(keys), "once after each file read or removed"
    finally:
        await backend.close()
