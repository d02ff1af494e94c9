"""Benchmark `status`: the status service's database round trips per message, and its state
writer's records/s, in process on the broker and database the tests use (KAFKA_*, MONGODB_URL).

Two runs, each with its own topic prefix and database (dropped and revoked at the end):

- **round trips**: status's processor and state writer run as in its composition root. For each
  of N messages (over several accounts and WABAs) the script plays ingest (send-requested),
  the sender (status-changed `sent` with the wamid) and then Meta: three webhooks, `sent`,
  `delivered` and `read`, one status each. Once every message is `read`, the database commands
  status sent (`hala_mongodb_commands_total`, counted by the driver's CommandListener as in
  production; the script's own polling uses a client that is not counted) divided by N.
- **state writer rate**: N send-requested and 3 N status-changed events (`sent` with the wamid,
  `delivered`, `read`, as the processor publishes them) are written first; then the state writer
  alone starts, and its rate is the records it applied per second, from the first message
  document to the last `read`.
- **inbound round trips** (`--only inbound`): the processor alone, on N webhooks of users'
  messages (one text each, to the accounts' registered numbers, from N/4 contacts: conversations
  are written again; one in 50 is "STOP", a suppression; one in 10 is delivered twice, as Meta
  retries). Once every message is stored, the processor's database commands divided by N.

    python bench/bench_status.py --messages 2000

The same script runs against an older tree (PYTHONPATH=<that tree>) for a before/after pair.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import msgspec  # noqa: E402
from prometheus_client import REGISTRY  # noqa: E402
from pymongo import AsyncMongoClient  # noqa: E402

from services.status import core  # noqa: E402
from services.status import workers as status_workers  # noqa: E402
from services.status.processor import WebhookProcessor  # noqa: E402
from services.status.publisher import KafkaPublisher  # noqa: E402
from services.status.repository import StatusRepository  # noqa: E402
from services.status.state_writer import StateWriter  # noqa: E402
from shared.clock import SystemClock  # noqa: E402
from shared.collections import (  # noqa: E402
    CONVERSATIONS,
    INBOUND_MESSAGES,
    MESSAGES,
    PARKED_STATUSES,
    PHONE_NUMBERS,
    SUPPRESSIONS,
    WAMID_INDEX,
    ensure_indexes,
)
from shared.kafka import delete_topics, ensure_topics, make_producer, topic_name  # noqa: E402
from shared.messages import (  # noqa: E402
    INBOUND_RECEIVED,
    SEND_REQUESTED,
    STATUS_CHANGED,
    SUPPRESSION_CHANGE_REQUESTED,
    WEBHOOK_RECEIVED,
    SendRequested,
    StatusChanged,
    WebhookReceived,
)
from shared.mongo import make_client  # noqa: E402
from tests.conftest import broker_from_env  # noqa: E402
from tests.unit.status.meta_examples import body, status_item, status_webhook  # noqa: E402

ACCOUNTS = 8
# What status reads, and the topic it publishes to in this profile.
STATUS_TOPICS = (
    SEND_REQUESTED,
    STATUS_CHANGED,
    WEBHOOK_RECEIVED,
    SUPPRESSION_CHANGE_REQUESTED,
    INBOUND_RECEIVED,
)
T0 = 1_750_000_000  # Meta's seconds


def commands_sent() -> float:
    total = 0.0
    for metric in REGISTRY.collect():
        if metric.name == "hala_mongodb_commands":
            total += sum(s.value for s in metric.samples if s.name.endswith("_total"))
    return total


def request(n: int, run: str) -> SendRequested:
    account = f"acc_{n % ACCOUNTS}"
    return SendRequested(
        event_id=f"{run}-{n}:requested",
        message_id=f"msg_{run}_{n}",
        account_id=account,
        portfolio_id="pf_1",
        waba_id=f"waba{n % ACCOUNTS}",
        phone_number_id=f"pn{n % ACCOUNTS}",
        recipient=f"+4479111{n:05d}",
        recipient_region="GB",
        message_type="text",
        content={"body": "hello"},
        category="utility",
        accepted_at=T0 * 1000,
        expires_at=T0 * 1000 + 86_400_000,
    )


def wamid(n: int, run: str) -> str:
    return f"wamid.{run}.{n}"


def change(n: int, run: str, status: str, source: str, at_s: int) -> StatusChanged:
    return StatusChanged(
        event_id=f"{run}-{n}:{status}:{source}",
        message_id=f"msg_{run}_{n}",
        account_id=f"acc_{n % ACCOUNTS}",
        status=status,  # type: ignore[arg-type]
        occurred_at=at_s * 1000,
        source=source,  # type: ignore[arg-type]
        phone_number_id=f"pn{n % ACCOUNTS}",
        recipient_region="GB",
        wamid=wamid(n, run),
    )


def webhook(n: int, run: str, status: str, at_s: int) -> WebhookReceived:
    waba = f"waba{n % ACCOUNTS}"
    payload = status_webhook(
        status_item(wamid(n, run), status, at_s, callback=f"msg_{run}_{n}"),
        phone_number_id=f"pn{n % ACCOUNTS}",
        waba_id=waba,
    )
    return WebhookReceived(
        event_id=core.webhook_event_id(waba, payload),
        received_at=int(time.time() * 1000),
        payload=msgspec.Raw(payload),
    )


def inbound_webhook(n: int, run: str, at_s: int) -> WebhookReceived:
    """One user's text message to one of the accounts' numbers (one in 50 is STOP)."""
    waba, contact = f"waba{n % ACCOUNTS}", f"4479222{(n // 4):05d}"
    payload = body(
        {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": waba,
                    "changes": [
                        {
                            "field": "messages",
                            "value": {
                                "messaging_product": "whatsapp",
                                "metadata": {
                                    "display_phone_number": f"1555000{n % ACCOUNTS}",
                                    "phone_number_id": f"pn{n % ACCOUNTS}",
                                },
                                "contacts": [{"profile": {"name": "Bench"}, "wa_id": contact}],
                                "messages": [
                                    {
                                        "from": contact,
                                        "id": f"wamid.in.{run}.{n}",
                                        "timestamp": str(at_s),
                                        "type": "text",
                                        "text": {"body": "STOP" if n % 50 == 49 else f"hi {n}"},
                                    }
                                ],
                            },
                        }
                    ],
                }
            ],
        }
    )
    return WebhookReceived(
        event_id=core.webhook_event_id(waba, payload),
        received_at=int(time.time() * 1000),
        payload=msgspec.Raw(payload),
    )


def start_processor(world: World) -> asyncio.Task[None]:
    processor = WebhookProcessor(world.repository, world.publisher, SystemClock())
    params = inspect.signature(status_workers.run_processor).parameters
    handle: Any = processor.handle_record if "handle" in params else processor
    return asyncio.create_task(
        status_workers.run_processor(world.service, world.prefix, handle, world.producer)
    )


def start_state_writer(world: World) -> asyncio.Task[None]:
    writer = StateWriter(world.repository, world.publisher, SystemClock())
    params = inspect.signature(status_workers.run_state_writer).parameters
    if "handle" in params:
        coro = status_workers.run_state_writer(
            world.service, world.prefix, writer.handle_record, world.producer, writer.forget_all
        )
    else:
        coro = status_workers.run_state_writer(world.service, world.prefix, writer, world.producer)
    return asyncio.create_task(coro)


class World:
    def __init__(self, broker: Any, url: str) -> None:
        self.broker = broker
        self.unique = "bs" + uuid.uuid4().hex[:8]
        self.prefix = f"{self.unique}."
        self.url = url
        self.service = broker.setup

    async def __aenter__(self) -> World:
        # As the set-up principal (topics without ACLs: a busy shared broker may take long to
        # put ACLs in force, and they are not what is measured here).
        await ensure_topics(self.broker.setup, self.prefix, STATUS_TOPICS)
        self.client = make_client(self.url)  # counted: status's own client
        self.watch = AsyncMongoClient[dict[str, Any]](self.url)  # not counted: the script's
        self.db = self.client[f"it_{self.unique}"]
        self.watched = self.watch[f"it_{self.unique}"]
        await ensure_indexes(
            self.db, MESSAGES, WAMID_INDEX, PARKED_STATUSES, INBOUND_MESSAGES, CONVERSATIONS
        )
        self.producer = make_producer(self.service)
        self.inputs = make_producer(self.broker.setup, linger_ms=20)
        await self.producer.start()
        await self.inputs.start()
        self.repository = StatusRepository(self.db)
        self.publisher = KafkaPublisher(self.producer, self.prefix, 30)
        self.tasks: list[asyncio.Task[None]] = []
        return self

    async def __aexit__(self, *_: object) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.producer.stop()
        await self.inputs.stop()
        await self.client.drop_database(f"it_{self.unique}")
        await self.client.close()
        await self.watch.close()
        await delete_topics(self.broker.setup, lambda name: self.unique in name)

    async def produce(self, topic: Any, events: list[Any]) -> None:
        acks = []
        for event in events:
            key, value = topic.encode(event)
            acks.append(await self.inputs.send(topic_name(topic, self.prefix), value, key=key))
        await asyncio.gather(*acks)

    async def wait(
        self,
        query: dict[str, Any],
        count: int,
        what: str,
        timeout_s: float,
        collection: str = MESSAGES,
    ) -> float:
        deadline = time.monotonic() + timeout_s
        while True:
            for task in self.tasks:
                if task.done():
                    task.result()
            if await self.watched[collection].count_documents(query) >= count:
                return time.monotonic()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not done within {timeout_s} s")
            await asyncio.sleep(0.1)


async def round_trips(broker: Any, url: str, n: int) -> dict[str, Any]:
    run = uuid.uuid4().hex[:6]
    async with World(broker, url) as world:
        world.tasks += [start_processor(world), start_state_writer(world)]
        before = commands_sent()
        started = time.monotonic()
        await world.produce(SEND_REQUESTED, [request(i, run) for i in range(n)])
        await world.produce(
            STATUS_CHANGED, [change(i, run, "sent", "sender", T0) for i in range(n)]
        )
        await world.wait({"wamid": {"$exists": True}}, n, "requests and wamids", 600)
        after_requests = commands_sent()
        for offset, status in enumerate(("sent", "delivered", "read"), start=1):
            await world.produce(
                WEBHOOK_RECEIVED, [webhook(i, run, status, T0 + offset) for i in range(n)]
            )
        await world.wait({"status": "read"}, n, "webhooks", 900)
        total = commands_sent() - before
        return {
            "messages": n,
            "db_round_trips_per_message": round(total / n, 2),
            "of_which_requests_and_sender": round((after_requests - before) / n, 2),
            "of_which_webhooks": round((total - (after_requests - before)) / n, 2),
            "seconds": round(time.monotonic() - started, 1),
        }


async def inbound_round_trips(broker: Any, url: str, n: int) -> dict[str, Any]:
    run = uuid.uuid4().hex[:6]
    async with World(broker, url) as world:
        await world.watched[PHONE_NUMBERS].insert_many(
            [
                {
                    "_id": f"pn{k}",
                    "account_id": f"acc_{k}",
                    "waba_id": f"waba{k}",
                    "display_phone_number": f"1555000{k}",
                }
                for k in range(ACCOUNTS)
            ]
        )
        world.tasks.append(start_processor(world))
        before = commands_sent()
        started = time.monotonic()
        events = [inbound_webhook(i, run, T0 + i) for i in range(n)]
        await world.produce(
            WEBHOOK_RECEIVED, events + [e for i, e in enumerate(events) if i % 10 == 0]
        )
        await world.wait({}, n, "inbound messages", 900, collection=INBOUND_MESSAGES)
        await world.wait({}, n // 50, "suppressions", 120, collection=SUPPRESSIONS)
        total = commands_sent() - before
        result = {
            "messages": n,
            "webhooks": n + len(range(0, n, 10)),
            "db_round_trips_per_inbound_message": round(total / n, 3),
            "seconds": round(time.monotonic() - started, 1),
        }
        # printed at once: dropping the database afterwards may wait on a busy FerretDB
        print(json.dumps({"inbound": result}), flush=True)
        return result


async def writer_rate(broker: Any, url: str, n: int) -> dict[str, Any]:
    run = uuid.uuid4().hex[:6]
    async with World(broker, url) as world:
        await world.produce(SEND_REQUESTED, [request(i, run) for i in range(n)])
        events = [
            change(i, run, status, "webhook", T0 + k)
            for i in range(n)
            for k, status in enumerate(("sent", "delivered", "read"), start=1)
        ]
        await world.produce(STATUS_CHANGED, events)
        before = commands_sent()
        world.tasks.append(start_state_writer(world))
        first = await world.wait({}, 1, "the first document", 120)
        last = await world.wait({"status": "read"}, n, "every message read", 900)
        records = 4 * n
        return {
            "records": records,
            "records_per_s": round(records / max(last - first, 1e-3), 1),
            "db_round_trips_per_record": round((commands_sent() - before) / records, 3),
            "seconds": round(last - first, 2),
        }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--only", choices=("round-trips", "writer", "inbound"), default=None)
    parser.add_argument("--label", default="")
    args = parser.parse_args()
    broker = broker_from_env(dict(os.environ))
    url = os.environ.get("MONGODB_URL", "mongodb://127.0.0.1:17017")
    result: dict[str, Any] = {"label": args.label, "load_average": os.getloadavg()[0]}
    if args.only in (None, "round-trips"):
        result["round_trips"] = await round_trips(broker, url, args.messages)
    if args.only in (None, "writer"):
        result["state_writer"] = await writer_rate(broker, url, args.messages)
    if args.only in (None, "inbound"):
        result["inbound"] = await inbound_round_trips(broker, url, args.messages)
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
