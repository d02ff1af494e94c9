"""MongoDB access through PyMongo's native asyncio client (motor is deprecated since 2026-05-14).

Code here and in the services uses only what both MongoDB and FerretDB (the local stand-in)
support: no transactions, no TTL indexes, no reliance on conditional updates being atomic.

Every operation has a deadline (`timeoutMS`, PyMongo's client-side operation timeout: server
selection, connection checkout, the round trip and any retry all count against it). Without
it, a database that stops answering mid-operation (a hung server, a lost network) held the
caller forever: `serverSelectionTimeoutMS` only bounds finding a server. A timed-out operation
raises a PyMongoError, which adapters translate into DependencyUnavailable like any outage.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, PyMongoError
from pymongo.monitoring import (
    CommandFailedEvent,
    CommandListener,
    CommandStartedEvent,
    CommandSucceededEvent,
)

from shared.errors import DependencyUnavailable
from shared.group_commit import GroupCommit
from shared.metrics import MONGODB_COMMAND_NAMES, MONGODB_COMMANDS

# The server's code for a write refused by a unique index (in a BulkWriteError's writeErrors).
DUPLICATE_KEY = 11000

# The deadline of one operation unless the caller's settings say otherwise
# (`MONGODB_TIMEOUT_MS`; ingest's request path uses a shorter one).
DEFAULT_TIMEOUT_MS = 10_000


class CommandCounter(CommandListener):
    """Counts every command the driver sends (one per database round trip: an `insert_many`
    of many documents is one `insert`, unless the driver has to split it) into
    `hala_mongodb_commands_total{command}`. Counted when the command starts, so failed and
    timed-out round trips count too; names outside a closed set count as `other`. The
    driver's own monitoring (hello heartbeats on their own connections) is not a command
    event and is not counted. Cost: the driver's event objects, a dictionary lookup and a
    counter increment, ~4 µs of CPU per round trip (0.6 µs of it the count), next to a round
    trip's few hundred."""

    def __init__(self) -> None:
        self._counters = {
            name: MONGODB_COMMANDS.labels(command=name) for name in MONGODB_COMMAND_NAMES
        }
        self._other = self._counters["other"]

    def started(self, event: CommandStartedEvent) -> None:
        self._counters.get(event.command_name, self._other).inc()

    def succeeded(self, event: CommandSucceededEvent) -> None:
        pass

    def failed(self, event: CommandFailedEvent) -> None:
        pass


def make_client(
    url: str, *, timeout_ms: int = DEFAULT_TIMEOUT_MS, **overrides: Any
) -> AsyncMongoClient[dict[str, Any]]:
    """A client with the project's deadlines, counting its commands (`CommandCounter`)."""
    if timeout_ms <= 0:
        raise ValueError("a MongoDB operation timeout must be positive")
    options: dict[str, Any] = {
        "timeoutMS": timeout_ms,
        "serverSelectionTimeoutMS": min(5000, timeout_ms),
        "connectTimeoutMS": min(5000, timeout_ms),
        "tz_aware": True,
        "event_listeners": [CommandCounter()],
    }
    options.update(overrides)
    return AsyncMongoClient(url, **options)


async def mongo_ready(client: AsyncMongoClient[dict[str, Any]]) -> bool:
    try:
        async with asyncio.timeout(2):
            await client.admin.command("ping")
        return True
    except (PyMongoError, TimeoutError, OSError):
        return False


# Lookups in flight at once per `find_by_ids` call on FerretDB (the driver's pool holds 100).
FIND_BY_ID_CONCURRENCY = 16

# Ids per `$in` query of `find_by_ids`. The local FerretDB build pushes at most 1,000 down to
# SQLite and scans the whole collection for more: in a 100,000-message campaign one status
# batch's `$in` of more wamids than that timed out (10 s) on every retry, and the worker stopped.
ID_IN_CHUNK = 500

# Whether a client's server answers `{_id: {$in: [...]}}` from the _id index, by client.
_INDEXES_ID_IN: weakref.WeakKeyDictionary[AsyncMongoClient[Any], bool] = weakref.WeakKeyDictionary()


async def _indexes_id_in(collection: AsyncCollection[dict[str, Any]]) -> bool | None:
    """MongoDB: yes. FerretDB: what its `explain` of an `_id` `$in` says (`filterPushdown`):
    stock 1.24 scans, the local build's patch (deploy/local/ferretdb/patches) reads the index.
    None when FerretDB cannot tell yet (the collection does not exist): asked again next time."""
    client = collection.database.client
    known = _INDEXES_ID_IN.get(client)
    if known is not None:
        return known
    build = await client.admin.command("buildInfo")
    if "ferretdbVersion" not in build:
        _INDEXES_ID_IN[client] = True
        return True
    plan = await collection.database.command(
        "explain", {"find": collection.name, "filter": {"_id": {"$in": ["probe"]}}}
    )
    if not plan.get("queryPlanner"):
        return None
    _INDEXES_ID_IN[client] = known = bool(plan.get("filterPushdown"))
    return known


async def find_by_ids(
    collection: AsyncCollection[dict[str, Any]],
    ids: Sequence[Any],
    projection: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The documents with these `_id`s (those that exist), in any order.

    MongoDB answers one `$in` query per `ID_IN_CHUNK` ids from the _id index; so does the
    local FerretDB build (its patch pushes a string/ObjectID `_id` `$in` down to SQLite: 51
    ids among 10,000 documents, 4 ms of its CPU, against 15 ms as 50 single lookups). Stock
    FerretDB 1.24 pushes only a lone `_id` equality down and scans the whole collection for an
    `$in` (429 ms for the same 51 ids, growing with the collection), so there the ids are
    looked up one by one: more round trips, each of constant cost. At most
    `FIND_BY_ID_CONCURRENCY` of them are in flight per call: a batch of 500 ids all at once
    took the whole connection pool (100) and, with the database slowed by a scan, left other
    operations waiting past their deadline for a connection (status's worker gave up on
    WaitQueueTimeoutError during a campaign)."""
    if not ids:
        return []
    if await _indexes_id_in(collection):
        found_in: list[dict[str, Any]] = []
        for start in range(0, len(ids), ID_IN_CHUNK):
            chunk = list(ids[start : start + ID_IN_CHUNK])
            found_in += await collection.find({"_id": {"$in": chunk}}, projection).to_list(None)
        return found_in
    pending = iter(ids)
    found: list[dict[str, Any]] = []

    async def lookups() -> None:
        for i in pending:  # shared: each id is taken by one of the lookups
            doc = await collection.find_one({"_id": i}, projection)
            if doc is not None:
                found.append(doc)

    await asyncio.gather(*(lookups() for _ in range(min(FIND_BY_ID_CONCURRENCY, len(ids)))))
    return found


def unavailable(exc: PyMongoError) -> DependencyUnavailable:
    """Translate a driver failure that is not about our data into the transient branch."""
    return DependencyUnavailable(
        f"database unavailable: {type(exc).__name__}", details={"dependency": "mongodb"}
    )


class InsertBatcher:
    """Inserts issued while the previous batch is being written go out together, as one
    unordered insert_many (group commit). Each caller still learns its own result: a duplicate
    key is a normal answer (False), not an error; any other failure is transient. On FerretDB
    a batch of 100 documents costs about what one single insert does."""

    def __init__(
        self,
        collection: AsyncCollection[dict[str, Any]],
        max_batch: int = 200,
        linger_seconds: float = 0.0,
        observe_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._collection = collection
        self._observe_batch = observe_batch
        # linger: fewer, larger writes (the database server shares the machine's cores) for
        # that much latency.
        self._commit: GroupCommit[dict[str, Any], bool] = GroupCommit(
            self._write_batch, max_batch=max_batch, linger_seconds=linger_seconds
        )

    async def insert(self, doc: dict[str, Any]) -> bool:
        """True when inserted, False when a document with that _id exists."""
        return await self._commit.submit(doc)

    async def _write_batch(self, docs: list[dict[str, Any]]) -> list[bool | BaseException]:
        if self._observe_batch is not None:
            self._observe_batch(len(docs))
        outcomes: list[bool | BaseException] = [True] * len(docs)
        try:
            await self._collection.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            for error in exc.details.get("writeErrors", []):
                index = int(error["index"])
                outcomes[index] = False if error.get("code") == DUPLICATE_KEY else unavailable(exc)
        except PyMongoError as exc:
            raise unavailable(exc) from exc
        return outcomes
