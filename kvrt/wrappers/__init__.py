"""The reference's wrappers, by its class names and constructor arguments, over any ``AsyncKeyValue``.

Each wrapper is itself an ``AsyncKeyValue`` and offers exactly the optional segments of what it
wraps, translated through what it does (:mod:`kvrt.wrappers.base`). Stored envelopes
(compression, encryption, prefixes, single collection) are the reference's, readable both ways.
Retry, timeout and fallback are not here: they are runtime policies (``RestartPolicy``,
``request_timeout=``, ``FallbackPolicy``), which the README maps name by name.

Wrappers whose extra is not installed (``FernetEncryptionWrapper`` needs ``kvrt[encryption]``)
still import; making one says what to install.
"""

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
