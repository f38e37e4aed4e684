"""What the S3 and DynamoDB backends share: one aiobotocore client a worker owns, and which errors pass.

The client is made in :meth:`AwsClient.open` (its aiohttp pool belongs to the loop it runs on),
with a connection pool sized to the worker's concurrency, and with botocore's own retries off: a
throttled or failed call crashes the round, and the worker's supervisor decides, with its backoff
and the callers' deadlines, as it does for every backend. Credentials come from botocore's
standard chain, or from ``aws_access_key_id`` and the like among the options; they are kept only in
the options handed to botocore, never in a repr, a log line or an error.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

import aiohttp  # the backends import this module inside their own needs_extra
import botocore.exceptions
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from kvrt.errors import StoreSetupError

_T = TypeVar("_T")
_R = TypeVar("_R")

_TRANSIENT_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "SlowDown",
        "TooManyRequestsException",
        "InternalError",
        "InternalServerError",
        "ServiceUnavailable",
        "TransactionInProgressException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
_TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    botocore.exceptions.ConnectionError,  # refused (EndpointConnectionError), connect timeouts, proxies
    botocore.exceptions.HTTPClientError,  # closed or reset mid-call, read timeouts
    aiohttp.ClientError,
    asyncio.TimeoutError,
    OSError,
)


def error_code(error: BaseException) -> str:
    """Return the service's error code of a botocore ``ClientError`` (``""`` for anything else)."""
    if isinstance(error, botocore.exceptions.ClientError):
        return str(error.response.get("Error", {}).get("Code", ""))
    return ""


def is_transient(error: BaseException) -> bool:
    """Throttling, 5xx replies, lost connections and timeouts are transient; a refusal or a bad request is not."""
    if isinstance(error, botocore.exceptions.ClientError):
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        return error_code(error) in _TRANSIENT_CODES or status >= 500
    return isinstance(error, _TRANSIENT_ERRORS)


class AwsClient:
    """One aiobotocore client of ``service``: made by :meth:`open` and closed by :meth:`close`, or the user's own."""

    def __init__(
        self,
        service: str,
        *,
        endpoint_url: str | None,
        region_name: str | None,
        client: Any,
        pool_size: int,
        options: dict[str, Any],
    ) -> None:
        if type(pool_size) is not int or pool_size < 1:
            raise ValueError("pool_size must be a positive number of connections")
        self.service = service
        self.endpoint_url = endpoint_url
        self.region_name = region_name
        self.pool_size = pool_size
        self._given = client
        self._options = options
        self._client: Any = client
        self._context: Any = None

    @property
    def client(self) -> Any:
        """The open client (the user's, or kvrt's between :meth:`open` and :meth:`close`)."""
        if self._client is None:
            raise StoreSetupError(f"the {self.service} backend is not open", backend=self.service)
        return self._client

    async def open(self) -> Any:
        """Make the client, unless the user gave one; return it."""
        if self._client is None:
            options = dict(self._options)
            config = AioConfig(
                max_pool_connections=self.pool_size,
                retries={"total_max_attempts": 1, "mode": "standard"},  # the supervisor retries, not botocore
                connect_timeout=5,
                read_timeout=30,
            )
            if "config" in options:
                config = config.merge(options.pop("config"))
            session: Any = get_session()  # its overloads want a literal service name
            self._context = session.create_client(
                self.service, endpoint_url=self.endpoint_url, region_name=self.region_name, config=config, **options
            )
            self._client = await self._context.__aenter__()
        return self._client

    async def close(self) -> None:
        """Close the client and its pool, if kvrt made it; a client the user gave is left open."""
        context, self._context = self._context, None
        if context is not None:
            self._client = None
            await context.__aexit__(None, None, None)

    def describe(self) -> str:
        """Where the client goes, for a repr: never its credentials."""
        where = f" endpoint_url={self.endpoint_url!r}" if self.endpoint_url else ""
        region = f" region_name={self.region_name!r}" if self.region_name else ""
        return f"{where}{region}"
