"""One JSON file per entry, a directory per collection: py-key-value's ``FileTreeStore`` layout.

An entry of ``key`` in ``collection`` is the file ``{directory}/{collection}/{key}.json`` holding its
document, and a collection kvrt creates gets the reference's metadata file next to its directory,
``{directory}/{collection}-info.json``; so either library reads the other's tree. A name the tree
cannot hold as it is (``.``, ``..``, one with ``/`` or NUL, one past the file system's 255 bytes once
``.json`` or ``-info.json`` is added, a collection ending in ``-info.json``, one starting with ``%%``,
and on Windows its reserved device names and characters) is stored under a hashed stand-in (see
:mod:`kvrt.backends.names`); the real name is in the document (and in the metadata file). Nothing a
name holds can reach outside the directory.

Writes are atomic and durable: each document goes to a temporary file in its collection's
directory, every file of the batch is fsynced, renamed over its entry, and the directory is fsynced
once, before the batch is acknowledged. A reader never sees half a file, and a killed process
leaves only temporary files (``.kvrt-{pid}-*.tmp``, never read as entries), which culling removes
once their writer is gone. All of it blocks, so it runs on the backend's thread lane, one hop per
batch (the fsyncs of a batch's files overlap on a few threads of the backend's own); between a
batch's files the lane yields its CPU, so an event loop woken on that CPU runs within a file's time
(:func:`kvrt.lanes.yield_cpu`).

Culling reads every file's expiry, so a pass runs only once something is due: the soonest expiry
the last pass saw or a write made since, the first after opening, and at least hourly.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import math
import os
import re
import secrets
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TypeVar

from kvrt.backends.base import Backend, Capabilities
from kvrt.backends.documents import expiry_of, header, is_live
from kvrt.backends.names import hashed, is_hashed
from kvrt.errors import PathSecurityError, StoreSetupError
from kvrt.lanes import ThreadLane, yield_cpu
from kvrt.log import logger as _log

_T = TypeVar("_T")

ENTRY_SUFFIX: Final = ".json"
INFO_SUFFIX: Final = "-info.json"
NAME_MAX: Final = 255
"""Bytes in one file name: the common bound (ext4, XFS, APFS, NTFS), so a tree can move between them."""
WINDOWS: Final = os.name == "nt"
STALE_TEMPORARY: Final = 600.0
"""Seconds after which a temporary file whose writer may still run is taken as left by a crash."""

QUIET_CULL: Final = 3600.0
"""The longest culling waits for a pass once one found nothing due: for what other writers stored."""
SYNCERS: Final = 8
"""Threads (the lane's and seven more) that fsync the files of one batch at once: ext4 on a virtual
disk takes a batch of 64 in about 0.6 of the time of fsyncing them one after the other (8 to 16
threads measured the same)."""

_TEMPORARY = re.compile(r"\.kvrt-(\d+)-[0-9a-f]+-\d+\.tmp")
_READ = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
_WRITE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_WINDOWS_FORBIDDEN = re.compile(r'[<>:"/\\|?*\x00-\x1f]')
_WINDOWS_DEVICES = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"{port}{digit}" for port in ("COM", "LPT") for digit in [*"0123456789", "\u00b9", "\u00b2", "\u00b3"]]
)
_HASHED_LENGTH: Final = len(hashed(""))


def windows_unsafe(name: str) -> bool:
    """Say whether Windows refuses ``name`` as a file name (a reserved device, a forbidden character)."""
    if _WINDOWS_FORBIDDEN.search(name) or name.endswith((".", " ")):
        return True
    return name.split(".", 1)[0].rstrip(" ").upper() in _WINDOWS_DEVICES


def plain(name: str, suffix: str, room: int = NAME_MAX, *, windows: bool = WINDOWS) -> bool:
    """Say whether ``name`` is stored as it is, as the reference stores it: one safe name that fits ``room`` bytes."""
    if not name or name in (".", "..") or "/" in name or "\x00" in name or is_hashed(name):
        return False
    try:
        length = len(name.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate: no file name holds it as UTF-8
        return False
    if length + len(suffix) > room:
        return False
    if suffix == INFO_SUFFIX and name.endswith(INFO_SUFFIX):  # its directory would be another's metadata file
        return False
    return not (windows and windows_unsafe(name))


def entry_file(key: str, room: int = NAME_MAX, *, windows: bool = WINDOWS) -> str:
    """Return the file name of ``key``'s entry in its collection's directory."""
    return (key if plain(key, ENTRY_SUFFIX, room, windows=windows) else hashed(key)) + ENTRY_SUFFIX


def collection_directory(collection: str, room: int = NAME_MAX, *, windows: bool = WINDOWS) -> str:
    """Return the directory name of ``collection``, inside the backend's directory."""
    return collection if plain(collection, INFO_SUFFIX, room, windows=windows) else hashed(collection)


def _room(root: str) -> int:
    """Return the bytes a name may take under ``root``: the file system's bound, and the path's."""
    reported = -1
    path_max = 260 if WINDOWS else 4096
    if not WINDOWS:
        try:
            reported = os.pathconf(root, "PC_NAME_MAX")
            path_max = os.pathconf(root, "PC_PATH_MAX")
        except (OSError, ValueError):
            pass
    name_max = min(NAME_MAX, reported) if reported > 0 else NAME_MAX
    # A collection's directory and an entry's file both fit after the root, with separators and NUL.
    return min(name_max, (path_max - len(os.fsencode(root)) - 3) // 2)


def _read(path: str) -> tuple[bytes, os.stat_result] | None:
    """Return a regular file's bytes and status, or ``None`` if there is none (or it is a link, a directory)."""
    try:
        fd = os.open(path, _READ | _CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP or os.path.isdir(path):  # a symbolic link (O_NOFOLLOW), a directory
            return None
        raise
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):  # a directory, a FIFO (O_NONBLOCK: the open did not wait)
            return None
        size = status.st_size
        data = os.read(fd, size + 1)
        if len(data) > size:  # grew since (another tool writing in place): read to the end
            chunks = [data]
            while chunk := os.read(fd, 1 << 16):
                chunks.append(chunk)
            data = b"".join(chunks)
        return data, status
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_directory(path: str) -> None:
    """Make the names just made or removed in ``path`` durable (Windows has no directory handle to sync)."""
    if WINDOWS:
        return
    fd = os.open(path, os.O_RDONLY | _CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_each(descriptors: list[int]) -> None:
    for fd in descriptors:
        os.fsync(fd)


def _unlink(path: str) -> bool:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def _writer_gone(pid: int) -> bool:
    """Say whether no process ``pid`` runs (on this host); where that cannot be told, that it may still run."""
    if WINDOWS or pid == os.getpid():  # os.kill would end the process on Windows; ours is running
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # another user's process: running
        return False
    return False


class FileTreeBackend(Backend):
    """Entries as JSON files in ``directory`` (created if missing), one subdirectory per collection.

    The layout is py-key-value's ``FileTreeStore``'s with its default (pass-through) names, so
    either library reads and writes the other's tree. Every acknowledged write has been fsynced.
    Expired entries are never returned, and are culled in the background.
    """

    name = "filetree"
    capabilities = Capabilities(
        native_ttl=False,  # files do not expire: the runtime culls
        max_batch=1024,
        keys=True,
        collections=True,
        destroy=True,
        destroy_collection=True,
        cull=True,
    )

    def __init__(self, directory: str | Path) -> None:
        if not isinstance(directory, str | Path) or not str(directory):
            raise TypeError("give FileTreeBackend a directory (a str or a Path)")
        self.directory = Path(directory)
        self._root: str | None = None
        self._room = NAME_MAX
        self._lane = ThreadLane(f"kvrt {self.name} lane")
        self._syncers: ThreadPoolExecutor | None = None
        self._ready: set[str] = set()  # collection directories known to exist, as real directories
        self._token = secrets.token_hex(4)
        self._serial = itertools.count()
        self._cull_root: Iterator[os.DirEntry[str]] | None = None
        self._cull_files: Iterator[os.DirEntry[str]] | None = None
        self._next_cull = 0.0  # when a pass is next due (epoch seconds)
        self._pass_soonest = math.inf  # the soonest expiry of a live entry the current pass saw
        self._due_by_writes = math.inf  # the soonest expiry written since the current pass began

    async def _run(self, call: Callable[..., _T], *args: Any) -> _T:
        """Run a blocking call on this backend's thread lane, in order, off the event loop."""
        return await self._lane.run(call, *args)

    @property
    def root(self) -> str:
        """The resolved directory (only between :meth:`open` and :meth:`close`)."""
        return self.opened(self._root)

    async def open(self) -> None:
        """Create the directory, and learn how long names in it may be."""
        await self._run(self._open)

    def _open(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreSetupError(f"cannot create the directory: {exc}", backend=self.name) from None
        root = os.path.realpath(self.directory)
        room = _room(root)
        if room < _HASHED_LENGTH + len(INFO_SUFFIX):
            raise StoreSetupError(
                "the directory's path is too long to leave room for entries' names", backend=self.name
            )
        self._root, self._room = root, room
        self._ready.clear()
        self._next_cull = 0.0  # a first pass, for what a writer killed before this open left
        if self._syncers is None:
            self._syncers = ThreadPoolExecutor(SYNCERS - 1, thread_name_prefix=f"kvrt {self.name} fsync")

    async def close(self) -> None:
        """Drop the cull's place, end the fsync threads and the thread lane (joining them all)."""
        try:
            await self._run(self._close)
        finally:
            self._root = None
            await self._lane.aclose()

    def _close(self) -> None:
        self._end_cull()
        syncers, self._syncers = self._syncers, None
        if syncers is not None:
            syncers.shutdown(wait=True)

    def _fsync_all(self, descriptors: list[int]) -> None:
        """Fsync every file, several at once (the file system commits them together), a share per thread.

        One job per thread rather than per file: each job is a few hand-offs of the GIL, which the
        event loop's thread then waits behind.
        """
        shares = [descriptors[start::SYNCERS] for start in range(min(SYNCERS, len(descriptors)))]
        if len(shares) <= 1 or self._syncers is None:
            _fsync_each(descriptors)
            return
        others = [self._syncers.submit(_fsync_each, share) for share in shares[1:]]
        try:
            _fsync_each(shares[0])  # the lane's own share
        finally:  # every fsync has returned, failed or not, before a descriptor is closed
            done, _ = wait(others)
        for future in done:
            future.result()

    # Names and directories.

    def _directory_of(self, collection: str) -> str:
        return os.path.join(self.root, collection_directory(collection, self._room))

    def _entry_path(self, directory: str, key: str) -> str:
        return os.path.join(directory, entry_file(key, self._room))

    def _temporary(self, directory: str) -> tuple[str, int]:
        """Create a fresh temporary file in ``directory``; return its path and open descriptor."""
        while True:
            path = os.path.join(directory, f".kvrt-{os.getpid()}-{self._token}-{next(self._serial)}.tmp")
            try:
                return path, os.open(path, _WRITE | _CLOEXEC, 0o600)  # the mode mkstemp gives the reference's files
            except FileExistsError:
                continue

    def _existing(self, directory: str) -> bool:
        """Say whether a collection's directory exists; refuse one that is a link or not a directory."""
        if directory in self._ready:
            return True
        try:
            status = os.lstat(directory)
        except FileNotFoundError:
            return False
        name = os.path.basename(directory)
        if stat.S_ISLNK(status.st_mode):
            raise PathSecurityError(f"a collection's directory is a symbolic link: {name!r}", backend=self.name)
        if not stat.S_ISDIR(status.st_mode):
            raise StoreSetupError(f"a collection's place in the tree is not a directory: {name!r}", backend=self.name)
        self._ready.add(directory)
        return True

    def _prepare(self, collection: str) -> str:
        """Return the directory of ``collection``, creating it (and the reference's metadata file) if missing."""
        directory = self._directory_of(collection)
        if self._existing(directory):
            return directory
        try:
            os.mkdir(directory)
        except FileExistsError:
            if self._existing(directory):  # made by another writer meanwhile
                return directory
        self._write_info(collection, directory)
        _fsync_directory(self.root)
        self._ready.add(directory)
        return directory

    def _write_info(self, collection: str, directory: str) -> None:
        """Write the reference's metadata file of a new collection (it reads its data directory there)."""
        info = os.path.join(self.root, os.path.basename(directory) + INFO_SUFFIX)
        if os.path.lexists(info):
            return
        text = json.dumps(
            {
                "collection": collection,
                "created_at": datetime.now(UTC).isoformat(),
                "directory": directory,
                "version": 1,
            },
            sort_keys=True,
        )
        self._replace(self.root, [(info, text.encode())])  # json.dumps escapes all but ASCII

    def _replace(self, directory: str, files: list[tuple[str, bytes]]) -> None:
        """Write every file atomically: temporary files, each fsynced, renamed over their targets."""
        temporaries: list[str] = []
        renamed = 0
        try:
            descriptors: list[int] = []
            try:
                for _, data in files:
                    path, fd = self._temporary(directory)
                    temporaries.append(path)
                    descriptors.append(fd)
                    _write_all(fd, data)
                    yield_cpu()
                self._fsync_all(descriptors)
            finally:
                for fd in descriptors:
                    os.close(fd)
            for (target, _), temporary in zip(files, temporaries, strict=True):
                os.replace(temporary, target)
                renamed += 1
                yield_cpu()
        except BaseException:
            for temporary in temporaries[renamed:]:
                _unlink(temporary)
            raise

    # Entries.

    async def get_many(self, collection: str, keys: Sequence[str]) -> list[bytes | str | None]:
        """Read every key's file in one hop to the lane."""
        return await self._run(self._get_many, collection, keys)

    def _get_many(self, collection: str, keys: Sequence[str]) -> list[bytes | str | None]:
        directory = self._directory_of(collection)
        if not self._existing(directory):
            return [None] * len(keys)
        now = time.time()
        found: list[bytes | str | None] = []
        for key in keys:
            read = _read(self._entry_path(directory, key))
            found.append(read[0] if read is not None and is_live(read[0], now) else None)
            yield_cpu()
        return found

    async def put_many(
        self,
        collection: str,
        keys: Sequence[str],
        entries: Sequence[bytes],
        expires_at: Sequence[float | None],
    ) -> None:
        """Write every entry atomically and durably, with one sync of the directory for the batch."""
        await self._run(self._put_many, collection, keys, entries, expires_at)

    def _put_many(
        self, collection: str, keys: Sequence[str], entries: Sequence[bytes], expires_at: Sequence[float | None]
    ) -> None:
        soonest = min((expiry for expiry in expires_at if expiry is not None), default=math.inf)
        self._next_cull = min(self._next_cull, soonest)  # on the lane: in order with the cull's steps
        self._due_by_writes = min(self._due_by_writes, soonest)
        latest = dict(zip(keys, entries, strict=True))  # a later put of a key wins: write only that one
        directory = self._prepare(collection)
        try:
            self._write_entries(directory, latest)
        except FileNotFoundError:
            if os.path.isdir(directory):
                raise
            self._ready.discard(directory)  # removed meanwhile (another process destroyed it): make it again
            directory = self._prepare(collection)
            self._write_entries(directory, latest)

    def _write_entries(self, directory: str, entries: dict[str, bytes]) -> None:
        try:
            self._replace(directory, [(self._entry_path(directory, key), entry) for key, entry in entries.items()])
        finally:  # what was renamed is made durable even when a later file failed
            with contextlib.suppress(FileNotFoundError):  # removed meanwhile: the caller makes it again
                _fsync_directory(directory)

    async def delete_many(self, collection: str, keys: Sequence[str]) -> list[bool]:
        """Remove every key's file; an expired entry does not count as removed."""
        return await self._run(self._delete_many, collection, keys)

    def _delete_many(self, collection: str, keys: Sequence[str]) -> list[bool]:
        directory = self._directory_of(collection)
        if not self._existing(directory):
            return [False] * len(keys)
        now = time.time()
        removed: list[bool] = []
        unlinked = False
        for key in keys:
            path = self._entry_path(directory, key)
            read = _read(path)
            gone = read is not None and _unlink(path)
            yield_cpu()
            unlinked = unlinked or gone
            removed.append(gone and read is not None and is_live(read[0], now))
        if unlinked:
            _fsync_directory(directory)
        return removed

    # Listing.

    def _in_layout(self, entry: os.DirEntry[str]) -> bool:
        """Say whether a file in a collection's directory is named as kvrt and the reference name entries."""
        name = entry.name
        if not name.endswith(ENTRY_SUFFIX) or not entry.is_file(follow_symlinks=False):
            return False
        stem = name[: -len(ENTRY_SUFFIX)]
        return is_hashed(stem) or plain(stem, ENTRY_SUFFIX, self._room)

    def _entry(self, entry: os.DirEntry[str]) -> tuple[str, bytes, os.stat_result] | None:
        """Return the key a file in a collection's directory holds, its document and status, if it is an entry."""
        if not self._in_layout(entry):
            return None
        read = _read(entry.path)
        if read is None:
            return None
        stem = entry.name[: -len(ENTRY_SUFFIX)]
        if not is_hashed(stem):
            return stem, *read
        key = header(read[0]).key
        if key is None or entry_file(key, self._room) != entry.name:
            return None  # not a stand-in kvrt wrote, or one whose name is lost
        return key, *read

    def _live_keys(self, directory: str, limit: int | None) -> list[str]:
        now = time.time()
        names: list[str] = []
        if limit == 0:
            return names
        try:
            listing = os.scandir(directory)
        except (FileNotFoundError, NotADirectoryError):
            return names
        with listing:
            for entry in listing:
                found = self._entry(entry)
                if found is not None and is_live(found[1], now):
                    names.append(found[0])
                    if limit is not None and len(names) >= limit:
                        break
        return names

    async def keys(self, collection: str, limit: int | None) -> list[str]:
        """Return the live keys of ``collection`` (a scan of its directory, reading each file's expiry)."""
        return await self._run(self._keys, collection, limit)

    def _keys(self, collection: str, limit: int | None) -> list[str]:
        directory = self._directory_of(collection)
        return self._live_keys(directory, limit) if self._existing(directory) else []

    def _collection_of(self, entry: os.DirEntry[str]) -> str | None:
        """Return the collection a directory in the tree holds, if it is a collection's directory in kvrt's layout."""
        if not entry.is_dir(follow_symlinks=False):
            return None
        name = entry.name
        if not is_hashed(name):
            return name if plain(name, INFO_SUFFIX, self._room) else None
        candidates: list[str | None] = []
        info = _read(os.path.join(self.root, name + INFO_SUFFIX))
        if info is not None:
            candidates.append(header(info[0]).collection)
        else:  # no metadata file (made by another process that crashed): the documents name it too
            with contextlib.suppress(FileNotFoundError), os.scandir(entry.path) as listing:
                for inner in listing:
                    if inner.name.endswith(ENTRY_SUFFIX) and (read := _read(inner.path)) is not None:
                        candidates.append(header(read[0]).collection)
                        break
        for collection in candidates:
            if collection is not None and collection_directory(collection, self._room) == name:
                return collection
        return None

    def _tree(self) -> Iterator[tuple[str, str]]:
        """Yield each collection's name and directory in the tree."""
        with os.scandir(self.root) as listing:
            for entry in listing:
                collection = self._collection_of(entry)
                if collection is not None:
                    yield collection, entry.path

    async def collections(self, limit: int | None) -> list[str]:
        """Return the collections that hold a live entry (a scan of the tree, stopping at each one's first)."""
        return await self._run(self._collections, limit)

    def _collections(self, limit: int | None) -> list[str]:
        names: list[str] = []
        if limit == 0:
            return names
        for collection, directory in self._tree():
            if self._live_keys(directory, 1):
                names.append(collection)
                if limit is not None and len(names) >= limit:
                    break
        return names

    # Removal.

    async def destroy(self) -> bool:
        """Remove every entry in kvrt's layout, and the directories and metadata files that leaves empty."""
        return await self._run(self._destroy)

    def _destroy(self) -> bool:
        live = False
        for _, directory in list(self._tree()):
            live = self._clear(directory) or live
        return live

    async def destroy_collection(self, collection: str) -> bool:
        """Remove every entry of ``collection`` (and its directory and metadata file, once empty)."""
        return await self._run(self._destroy_collection, collection)

    def _destroy_collection(self, collection: str) -> bool:
        directory = self._directory_of(collection)
        return self._existing(directory) and self._clear(directory)

    def _clear(self, directory: str) -> bool:
        """Remove a collection's entries (and stale temporary files); ``True`` if a live entry was among them."""
        self._ready.discard(directory)
        now = time.time()
        live = False
        try:
            listing = os.scandir(directory)
        except FileNotFoundError:  # removed meanwhile, by another process
            return False
        with listing:
            for entry in listing:
                if self._stale_temporary(entry):
                    _unlink(entry.path)
                elif self._in_layout(entry):
                    if not live:  # one live entry answers the question: the rest go unread
                        read = _read(entry.path)
                        live = read is not None and is_live(read[0], now)
                    _unlink(entry.path)
        try:
            os.rmdir(directory)
        except FileNotFoundError:
            return live
        except OSError:  # something else is in it (another tool's files, a writer's temporary file)
            _fsync_directory(directory)
            return live
        _unlink(directory + INFO_SUFFIX)
        _fsync_directory(self.root)
        return live

    def _stale_temporary(self, entry: os.DirEntry[str]) -> bool:
        """Say whether ``entry`` is a temporary file of kvrt's whose write will never finish."""
        match = _TEMPORARY.fullmatch(entry.name)
        if match is None or not entry.is_file(follow_symlinks=False):
            return False
        if _writer_gone(int(match.group(1))):
            return True
        try:
            return time.time() - entry.stat(follow_symlinks=False).st_mtime > STALE_TEMPORARY
        except FileNotFoundError:
            return False

    # Culling.

    async def cull(self, budget: int) -> tuple[int, bool]:
        """Look at about ``budget`` files, from where the last step stopped, and remove the expired entries.

        A pass reads every file, so one runs only once something is due: the soonest expiry the
        last pass saw, or one written since; the first after :meth:`open` (for what a killed writer
        left), and at least hourly for what other writers stored.
        """
        return await self._run(self._cull, budget)

    def _cull(self, budget: int) -> tuple[int, bool]:
        now = time.time()
        if self._cull_root is None:
            if now < self._next_cull:
                return 0, True
            self._due_by_writes = self._pass_soonest = math.inf
            self._cull_root = os.scandir(self.root)
        removed = temporaries = 0
        done = False
        for _ in range(max(budget, 1)):
            yield_cpu()
            if self._cull_files is None:  # between directories: the next one in the tree
                entry = next(self._cull_root, None)
                if entry is None:
                    done = True
                    break
                if self._stale_temporary(entry):
                    temporaries += _unlink(entry.path)
                elif self._collection_of(entry) is not None:
                    with contextlib.suppress(FileNotFoundError, NotADirectoryError):  # removed meanwhile
                        self._cull_files = os.scandir(entry.path)
                continue
            entry = next(self._cull_files, None)
            if entry is None:
                self._cull_files = None
            elif self._stale_temporary(entry):
                temporaries += _unlink(entry.path)
            else:
                removed += self._cull_entry(entry, now)
        if temporaries:
            _log.info("filetree.temporary_files_removed", backend=self.name, count=temporaries)
        if done:
            self._end_cull()
            self._next_cull = min(self._pass_soonest, self._due_by_writes, now + QUIET_CULL)
        return removed, done

    def _cull_entry(self, entry: os.DirEntry[str], now: float) -> bool:
        """Remove ``entry`` if it is an expired entry nobody replaced since it was read; note a live one's expiry."""
        found = self._entry(entry)
        if found is None or b'"expires_at"' not in found[1]:
            return False
        expiry = expiry_of(header(found[1]))
        if expiry is None:
            return False
        if expiry > now:
            self._pass_soonest = min(self._pass_soonest, expiry)
            return False
        try:
            current = os.lstat(entry.path)
        except FileNotFoundError:
            return False
        if (current.st_ino, current.st_mtime_ns) != (found[2].st_ino, found[2].st_mtime_ns):
            return False  # replaced since it was read: the fresh write stays
        return _unlink(entry.path)

    def _end_cull(self) -> None:
        for listing in (self._cull_files, self._cull_root):
            if listing is not None:
                listing.close()  # type: ignore[attr-defined]
        self._cull_files = self._cull_root = None
