"""One URL parser for every entry point: a scheme names a backend, the rest its plain options.

``memory://``, ``disk:///abs/path`` (or ``disk://relative/path``), ``multidisk:///path``,
``redis://``, ``rediss://``, ``redis+cluster://``, ``valkey://``, ``valkeys://``, ``s3://bucket/prefix``,
``dynamodb://table``, ``mongodb://`` (``mongodb+srv://``, ``?database=`` kvrt's database),
``memcached://host:port``, ``postgresql://`` (``postgres://``, ``?table=`` kvrt's table),
``duckdb:///file`` and ``chdb:///path`` (``?table=``; ``duckdb://`` and ``chdb://``: in memory),
``rocksdb:///path`` (``?sync=true``), ``filetree:///path``, ``simple://``,
``keyring://service`` and ``null://``.
Query parameters set the backend's plain options (``memory://?max_entries_per_collection=500``,
``disk:///var/cache/app?size_limit=1000000``) and the spawn options that are plain values
(``request_timeout``, ``name``, ``default_collection``); a Redis URL passes the rest of its query to
redis-py. A backend's module (and so its driver) is imported only when its scheme is opened, and
a missing driver names the extra that installs it. An error about a URL never shows its
credentials; :func:`redacted` is the URL as kvrt shows it anywhere.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import SplitResult, parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from kvrt.backends.base import Backend

Options = dict[str, str]
_SECRET_PARAMETER = re.compile(r"pass|secret|token|credential", re.IGNORECASE)
_SPAWN_OPTIONS: dict[str, Callable[[str, str], Any]] = {}


def _positive_float(name: str, text: str) -> float:
    try:
        number = float(text)
    except ValueError:
        number = -1.0
    if not 0 < number < float("inf"):
        raise ValueError(f"URL parameter {name!r} must be a positive number of seconds")
    return number


def _positive_int(name: str, text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"URL parameter {name!r} must be a positive whole number")
    return int(text)


def _text(name: str, text: str) -> str:
    if not text:
        raise ValueError(f"URL parameter {name!r} must not be empty")
    return text


_SPAWN_OPTIONS.update(request_timeout=_positive_float, name=_text, default_collection=_text)


def _no_more(scheme: str, options: Options) -> None:
    if options:
        unknown = ", ".join(sorted(options))
        raise ValueError(f"{scheme}:// URLs take no parameter {unknown}")


def _path(url: SplitResult) -> str:
    """Return the directory a ``disk://`` URL names: ``disk:///abs`` is absolute, ``disk://rel/dir`` relative."""
    path = url.netloc + url.path
    if not path:
        raise ValueError(
            f"{url.scheme}:// URLs name a directory: {url.scheme}:///absolute/path or {url.scheme}://relative"
        )
    return path


def _memory(url: SplitResult, options: Options) -> Backend:
    from kvrt.backends.memory import MemoryBackend

    kwargs: dict[str, Any] = {}
    if "max_entries_per_collection" in options:
        kwargs["max_entries_per_collection"] = _positive_int(
            "max_entries_per_collection", options.pop("max_entries_per_collection")
        )
    _no_more("memory", options)
    return MemoryBackend(**kwargs)


def _disk_options(options: Options) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if "size_limit" in options:
        kwargs["size_limit"] = _positive_int("size_limit", options.pop("size_limit"))
    if "eviction_policy" in options:
        kwargs["eviction_policy"] = options.pop("eviction_policy")
        if kwargs["eviction_policy"] not in ("least-recently-stored", "least-recently-used", "least-frequently-used"):
            raise ValueError("URL parameter 'eviction_policy' must be a diskcache eviction policy")
    return kwargs


def _disk(url: SplitResult, options: Options) -> Backend:
    from kvrt.backends.disk import DiskBackend

    kwargs = _disk_options(options)
    _no_more("disk", options)
    return DiskBackend(_path(url), **kwargs)


def _multidisk(url: SplitResult, options: Options) -> Backend:
    from kvrt.backends.multi_disk import MultiDiskBackend

    kwargs = _disk_options(options)
    _no_more("multidisk", options)
    return MultiDiskBackend(_path(url), **kwargs)


def _redis(url: SplitResult, options: Options) -> Backend:
    from kvrt.backends.redis import RedisBackend

    scheme = {"redis+cluster": "redis", "valkey": "redis", "valkeys": "rediss"}.get(url.scheme, url.scheme)
    pool_size = _positive_int("pool_size", options.pop("pool_size")) if "pool_size" in options else 8
    rest = url._replace(scheme=scheme, query=urlencode(options))  # redis-py reads the other parameters
    options.clear()
    return RedisBackend(urlunsplit(rest), cluster=url.scheme == "redis+cluster", pool_size=pool_size)


def _flag(name: str, text: str) -> bool:
    if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
        raise ValueError(f"URL parameter {name!r} must be true or false")
    return text.lower() in ("true", "1", "yes")


def _aws_options(scheme: str, url: SplitResult, options: Options, create: str) -> dict[str, Any]:
    """Return the options S3 and DynamoDB URLs share: where the service is, the pool, whether to create."""
    if url.username or url.password:
        raise ValueError(f"{scheme}:// URLs take no credentials: botocore's standard chain finds them")
    kwargs: dict[str, Any] = {}
    if "endpoint_url" in options:
        kwargs["endpoint_url"] = _text("endpoint_url", options.pop("endpoint_url"))
    if "region" in options:
        kwargs["region_name"] = _text("region", options.pop("region"))
    if "pool_size" in options:
        kwargs["pool_size"] = _positive_int("pool_size", options.pop("pool_size"))
    if create in options:
        kwargs[create] = _flag(create, options.pop(create))
    _no_more(scheme, options)
    return kwargs


def _s3(url: SplitResult, options: Options) -> Backend:
    from kvrt.backends.s3 import S3Backend

    if not url.netloc:
        raise ValueError("s3:// URLs name a bucket: s3://bucket or s3://bucket/prefix")
    kwargs = _aws_options("s3", url, options, "create_bucket")
    return S3Backend(url.netloc, prefix=url.path.strip("/") or None, **kwargs)


def _dynamodb(url: SplitResult, options: Options) -> Backend:
    from kvrt.backends.dynamodb import DynamoDBBackend

    if not url.netloc or url.path.strip("/"):
        raise ValueError("dynamodb:// URLs name a table: dynamodb://table")
    return DynamoDBBackend(url.netloc, **_aws_options("dynamodb", url, options, "create_table"))


def _mongodb(url: SplitResult, options: Options) -> Backend:
    from kvrt.backends.mongodb import MongoDBBackend

    kwargs: dict[str, Any] = {}
    if "database" in options:
        kwargs["database"] = _text("database", options.pop("database"))
    rest = url._replace(
        query=urlencode(options)
    )  # PyMongo reads the other parameters (and the path: its auth database)
    options.clear()
    return MongoDBBackend(urlunsplit(rest), **kwargs)


def _memcached(url: SplitResult, options: Options) -> Backend:
    from kvrt.backends.memcached import MemcachedBackend

    if url.username or url.password or url.path.strip("/"):
        raise ValueError("memcached:// URLs name a server and nothing else: memcached://host:port")
    kwargs: dict[str, Any] = {}
    if "pool_size" in options:
        kwargs["pool_size"] = _positive_int("pool_size", options.pop("pool_size"))
    for name in ("timeout", "connect_timeout"):
        if name in options:
            kwargs[name] = _positive_float(name, options.pop(name))
    _no_more("memcached", options)
    return MemcachedBackend(url.hostname or "127.0.0.1", url.port or 11211, **kwargs)


def _postgresql(url: SplitResult, options: Options) -> Backend:
    from kvrt.backends.postgresql import PostgreSQLBackend

    kwargs: dict[str, Any] = {}
    if "table" in options:
        kwargs["table"] = _text("table", options.pop("table"))
    if "create_table" in options:
        kwargs["create_table"] = _flag("create_table", options.pop("create_table"))
    if "pool_size" in options:
        kwargs["max_size"] = _positive_int("pool_size", options.pop("pool_size"))
    rest = url._replace(query=urlencode(options))  # asyncpg reads the other parameters (sslmode, ...)
    options.clear()
    return PostgreSQLBackend(urlunsplit(rest), **kwargs)


def _filetree(url: SplitResult, options: Options) -> Backend:
    from kvrt.backends.filetree import FileTreeBackend

    _no_more("filetree", options)
    return FileTreeBackend(_path(url))


def _duckdb(url: SplitResult, options: Options) -> Backend:
    from kvrt.backends.duckdb import DuckDBBackend

    kwargs: dict[str, Any] = {}
    if "table" in options:
        kwargs["table"] = _text("table", options.pop("table"))
    _no_more("duckdb", options)
    return DuckDBBackend((url.netloc + url.path) or None, **kwargs)


def _chdb(url: SplitResult, options: Options) -> Backend:
    from kvrt.backends.chdb import ChDBBackend

    kwargs: dict[str, Any] = {}
    if "table" in options:
        kwargs["table"] = _text("table", options.pop("table"))
    _no_more("chdb", options)
    return ChDBBackend((url.netloc + url.path) or None, **kwargs)


def _rocksdb(url: SplitResult, options: Options) -> Backend:
    from kvrt.backends.rocksdb import RocksDBBackend

    kwargs: dict[str, Any] = {}
    if "sync" in options:
        kwargs["sync"] = _flag("sync", options.pop("sync"))
    _no_more("rocksdb", options)
    return RocksDBBackend(_path(url), **kwargs)


def _simple(url: SplitResult, options: Options) -> Backend:
    from kvrt.backends.simple import SimpleBackend

    kwargs: dict[str, Any] = {}
    if "max_entries" in options:
        kwargs["max_entries"] = _positive_int("max_entries", options.pop("max_entries"))
    _no_more("simple", options)
    return SimpleBackend(**kwargs)


def _keyring(url: SplitResult, options: Options) -> Backend:
    from kvrt.backends.keyring import DEFAULT_SERVICE, KeyringBackend

    _no_more("keyring", options)
    return KeyringBackend(unquote(url.netloc + url.path) or DEFAULT_SERVICE)


def _null(url: SplitResult, options: Options) -> Backend:
    from kvrt.backends.null import NullBackend

    _no_more("null", options)
    return NullBackend()


SCHEMES: dict[str, Callable[[SplitResult, Options], Backend]] = {
    "memory": _memory,
    "disk": _disk,
    "multidisk": _multidisk,
    "redis": _redis,
    "rediss": _redis,
    "redis+cluster": _redis,
    "valkey": _redis,
    "valkeys": _redis,
    "s3": _s3,
    "dynamodb": _dynamodb,
    "mongodb": _mongodb,
    "mongodb+srv": _mongodb,
    "memcached": _memcached,
    "postgresql": _postgresql,
    "postgres": _postgresql,
    "filetree": _filetree,
    "duckdb": _duckdb,
    "chdb": _chdb,
    "rocksdb": _rocksdb,
    "simple": _simple,
    "keyring": _keyring,
    "null": _null,
}
"""Every scheme kvrt opens, and what makes its backend; later backends add theirs with :func:`register`."""


def register(scheme: str, factory: Callable[[SplitResult, Options], Backend]) -> None:
    """Make ``scheme://`` URLs open the backend ``factory`` builds (it pops the query options it takes)."""
    SCHEMES[scheme] = factory


def parse_url(url: str) -> tuple[Backend, dict[str, Any]]:
    """Return the backend ``url`` names and the spawn options its query gives.

    Raises ``ValueError`` for an unknown scheme (listing the known ones) or a bad parameter, and
    :class:`~kvrt.errors.MissingExtraError` where the scheme's driver is not installed.
    """
    if not isinstance(url, str):
        raise TypeError(f"a URL must be a str, not {type(url).__name__}")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ValueError("not a URL kvrt can read") from None
    factory = SCHEMES.get(parts.scheme.lower())
    if factory is None:
        known = ", ".join(f"{scheme}://" for scheme in SCHEMES)
        shown = f"{parts.scheme}://" if parts.scheme else "no scheme"
        raise ValueError(f"kvrt cannot open {shown} URLs; known schemes: {known}")
    parts = parts._replace(scheme=parts.scheme.lower())
    options: Options = dict(parse_qsl(parts.query, keep_blank_values=True))
    spawn = {name: _SPAWN_OPTIONS[name](name, options.pop(name)) for name in list(options) if name in _SPAWN_OPTIONS}
    return factory(parts._replace(query=""), options), spawn


def redacted(url: str) -> str:
    """``url`` with any password (in its user part or its query) replaced by ``***``: how kvrt shows a URL anywhere.

    A URL with no password is returned as given (rebuilding it would drop an empty ``//``).
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unreadable URL>"
    changed = False
    if parts.query and _SECRET_PARAMETER.search(parts.query):  # asyncpg and PyMongo take ?password= too
        query = [(name, "***" if _SECRET_PARAMETER.search(name) else value) for name, value in parse_qsl(parts.query)]
        parts = parts._replace(query=urlencode(query, safe="*"))
        changed = True
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if at and ":" in userinfo:
        user = userinfo.split(":", 1)[0]
        parts = parts._replace(netloc=f"{user}:***@{hosts}")  # hosts as given: a MongoDB URL may list several
        changed = True
    return urlunsplit(parts) if changed else url
