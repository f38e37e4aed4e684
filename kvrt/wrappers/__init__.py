"""The reference's wrappers, by its class names and constructor arguments, over any ``AsyncKeyValue``.

Each wrapper is itself an ``AsyncKeyValue`` and offers exactly the optional segments of what it
wraps, translated through what it does (:mod:`kvrt.wrappers.base`). Stored envelopes
(compression, encryption, prefixes, single collection) are the reference's, readable both ways.
Retry, timeout and fallback are not here: they are runtime policies (``RestartPolicy``,
``request_timeout=``, ``FallbackPolicy``), which the README maps name by name.

Wrappers whose extra is not installed (``FernetEncryptionWrapper`` needs ``kvrt[encryption]``)
still import; making one says what to install.
"""

from typing import NoReturn

from kvrt.wrappers.base import BaseWrapper
from kvrt.wrappers.compression import CompressionWrapper
from kvrt.wrappers.default_value import DefaultValueWrapper
from kvrt.wrappers.encryption import BaseEncryptionWrapper, FernetEncryptionWrapper
from kvrt.wrappers.limit_size import LimitSizeWrapper
from kvrt.wrappers.logging import LoggingWrapper
from kvrt.wrappers.passthrough_cache import PassthroughCacheWrapper
from kvrt.wrappers.prefix import PrefixCollectionsWrapper, PrefixKeysWrapper
from kvrt.wrappers.read_only import ReadOnlyWrapper
from kvrt.wrappers.routing import CollectionRoutingWrapper, RoutingWrapper
from kvrt.wrappers.single_collection import SingleCollectionWrapper
from kvrt.wrappers.statistics import StatisticsWrapper
from kvrt.wrappers.ttl_clamp import TTLClampWrapper

__all__ = [
    "BaseEncryptionWrapper",
    "BaseWrapper",
    "CollectionRoutingWrapper",
    "CompressionWrapper",
    "DefaultValueWrapper",
    "FernetEncryptionWrapper",
    "LimitSizeWrapper",
    "LoggingWrapper",
    "PassthroughCacheWrapper",
    "PrefixCollectionsWrapper",
    "PrefixKeysWrapper",
    "ReadOnlyWrapper",
    "RoutingWrapper",
    "SingleCollectionWrapper",
    "StatisticsWrapper",
    "TTLClampWrapper",
]

_POLICIES = {
    "RetryWrapper": "retries are the restart policy: runtime.spawn(backend, restart=RestartPolicy(attempts=5))",
    "TimeoutWrapper": "a deadline is a spawn option: runtime.spawn(backend, request_timeout=0.5)",
    "FallbackWrapper": "a fallback is a spawn option: runtime.spawn(backend, fallback=FallbackPolicy(other))",
}


def __getattr__(name: str) -> NoReturn:
    """Say where the reference's retry, timeout and fallback wrappers went, for code moving from it."""
    if name in _POLICIES:
        raise ImportError(f"kvrt has no {name}: {_POLICIES[name]} (README: Wrappers and adapters)", name=name)
    raise AttributeError(f"module 'kvrt.wrappers' has no attribute {name!r}")
