"""Adapters over a memory handle and a Redis handle (real server), asyncio and trio; the stacks frameworks build."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import BaseModel

from kvrt.adapters import BaseModelAdapter, DataclassAdapter, PydanticAdapter, RaiseOnMissingAdapter
from kvrt.errors import DeserializationError, MissingKeyError, SerializationError
from kvrt.testing.conformance import ListingStore, assert_ttl
from kvrt.wrappers import LimitSizeWrapper, SingleCollectionWrapper, StatisticsWrapper

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).parent.parent


class User(BaseModel):
    name: str
    email: str


@dataclass
class Point:
    x: int
    y: int


async def test_pydantic_models_round_trip_as_plain_objects(store: ListingStore) -> None:
    users = PydanticAdapter[User](key_value=store, pydantic_model=User, default_collection="users")
    jane = User(name="Jane", email="j@example.com")
    await users.put("u1", jane, ttl=100)
    assert await store.get("u1", collection="users") == {"name": "Jane", "email": "j@example.com"}
    found: User | None = await users.get("u1")
    assert found == jane
    assert_ttl(await users.ttl("u1"), jane, 100)
    await users.put_many(["u2", "u3"], [jane, jane])
    assert await users.get_many(["u2", "nobody"]) == [jane, None]
    fallback = User(name="?", email="?")
    assert await users.get("nobody", default=fallback) is fallback
    assert await users.delete_many(["u1", "u2", "u3"]) == 3


async def test_types_that_are_not_objects_are_wrapped_in_items(store: ListingStore) -> None:
    lists = PydanticAdapter[list[User]](key_value=store, pydantic_model=list[User])
    jane = User(name="Jane", email="j@example.com")
    await lists.put("team", [jane])
    assert await store.get("team") == {"items": [{"name": "Jane", "email": "j@example.com"}]}
    assert await lists.get("team") == [jane]
    numbers = PydanticAdapter[int](key_value=store, pydantic_model=int)
    await numbers.put("n", 7)
    assert await store.get("n") == {"items": 7}
    assert await numbers.get("n") == 7


async def test_data_that_no_longer_validates_reads_as_missing_or_raises(store: ListingStore) -> None:
    await store.put("old", {"name": "Jane"})  # written before ``email`` was required
    lenient = PydanticAdapter[User](key_value=store, pydantic_model=User)
    assert await lenient.get("old") is None
    assert await lenient.ttl("old") == (None, None)
    strict = PydanticAdapter[User](key_value=store, pydantic_model=User, raise_on_validation_error=True)
    with pytest.raises(DeserializationError, match="email"):
        await strict.get("old")
    await store.put("unwrapped", {"not": "items"})
    with pytest.raises(DeserializationError, match="items"):
        await PydanticAdapter[list[int]](key_value=store, pydantic_model=list[int], raise_on_validation_error=True).get(
            "unwrapped"
        )


async def test_a_value_json_cannot_hold_is_refused_and_nothing_is_written(store: ListingStore) -> None:
    floats = PydanticAdapter[dict[str, float]](key_value=store, pydantic_model=dict[str, float])
    await floats.put("k", {"v": 1.0})
    with pytest.raises(SerializationError):
        await floats.put("k", {"v": float("nan")})
    assert await floats.get("k") == {"v": 1.0}


async def test_dataclass_and_base_model_adapters(store: ListingStore) -> None:
    points = DataclassAdapter[Point](key_value=store, dataclass_type=Point)
    await points.put("p", Point(1, 2))
    assert await store.get("p") == {"x": 1, "y": 2}
    assert await points.get("p") == Point(1, 2)
    many = DataclassAdapter[list[Point]](key_value=store, dataclass_type=list[Point])
    await many.put("ps", [Point(3, 4)])
    assert await store.get("ps") == {"items": [{"x": 3, "y": 4}]}
    models = BaseModelAdapter[User](key_value=store, pydantic_model=User)
    await models.put("u", User(name="A", email="a@x"))
    assert await models.get("u") == User(name="A", email="a@x")
    with pytest.raises(TypeError, match="dataclass"):
        DataclassAdapter(key_value=store, dataclass_type=User)
    with pytest.raises(TypeError, match="BaseModel"):
        BaseModelAdapter(key_value=store, pydantic_model=Point)
    with pytest.raises(TypeError, match="list"):
        BaseModelAdapter(key_value=store, pydantic_model=tuple[User, ...])


async def test_raise_on_missing_raises_only_when_asked(store: ListingStore) -> None:
    adapter = RaiseOnMissingAdapter(key_value=store)
    await adapter.put("k", {"v": 1})
    assert await adapter.get("gone") is None
    assert await adapter.get("k", raise_on_missing=True) == {"v": 1}
    with pytest.raises(MissingKeyError) as missing:
        await adapter.get("gone", collection="c", raise_on_missing=True)
    assert missing.value.key == "gone"
    assert missing.value.collection == "c"
    with pytest.raises(MissingKeyError):
        await adapter.get_many(["k", "gone"], raise_on_missing=True)
    with pytest.raises(MissingKeyError):
        await adapter.ttl("gone", raise_on_missing=True)
    with pytest.raises(MissingKeyError):
        await adapter.ttl_many(["gone"], raise_on_missing=True)
    assert await adapter.delete("k") is True


async def test_the_reference_readme_stack(store: ListingStore) -> None:
    single = SingleCollectionWrapper(key_value=store, single_collection="users", default_collection="one-collection")
    statistics = StatisticsWrapper(key_value=single)
    users = PydanticAdapter(key_value=statistics, pydantic_model=User)
    await users.put(key="u1", value=User(name="Jane", email="j@example.com"), collection="ignored")
    assert await users.get(key="u1", collection="ignored") == User(name="Jane", email="j@example.com")
    assert statistics.statistics.get_collection("ignored").get.hit == 1
    assert await store.keys("users") == ["ignored__u1"]
    assert await statistics.keys("ignored") == ["u1"]  # type: ignore[attr-defined]  # offered at run time


async def test_the_fastmcp_response_cache_stack(store: ListingStore) -> None:
    limited = LimitSizeWrapper(key_value=store, max_size=200, raise_on_too_large=False)
    statistics = StatisticsWrapper(key_value=limited)
    responses = PydanticAdapter[User](key_value=statistics, pydantic_model=User, default_collection="responses")
    await responses.put("small", User(name="Jane", email="j@example.com"), ttl=60)
    await responses.put("huge", User(name="J" * 500, email="j@example.com"), ttl=60)
    assert await responses.get("small") == User(name="Jane", email="j@example.com")
    assert await responses.get("huge") is None  # too large to cache: skipped, not an error
    counts = statistics.statistics.get_collection("responses")
    assert (counts.put.count, counts.get.hit, counts.get.miss) == (2, 1, 1)  # the skipped put counted above the limit
    assert await store.keys("responses") == ["small"]


def test_an_adapter_is_typed_by_its_model(tmp_path: Path) -> None:
    snippet = tmp_path / "typed_adapter.py"
    snippet.write_text(
        "from pydantic import BaseModel\n"
        "import kvrt\n"
        "from kvrt.adapters import PydanticAdapter\n"
        "from kvrt.backends.memory import MemoryBackend\n\n"
        "class User(BaseModel):\n    name: str\n\n"
        "async def main() -> None:\n"
        "    users = PydanticAdapter[User](key_value=kvrt.open(MemoryBackend()), pydantic_model=User)\n"
        "    user = await users.get('u')\n"
        "    reveal_type(user)\n"
        "    await users.put('u', 'not a user')\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(snippet)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert 'Revealed type is "typed_adapter.User | None"' in result.stdout, result.stdout
    assert 'Argument 2 to "put" of "BasePydanticAdapter" has incompatible type "str"' in result.stdout, result.stdout
