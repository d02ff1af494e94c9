"""notify's database round trips per message, counted as the bench counts them
(`hala_mongodb_commands_total`, from the driver's command listener), over a backlog of messages
with four client events each (message.accepted, sent, delivered, read) for one endpoint that
answers 200: the consumer's writes and reads plus the dispatcher's (attempts, delivered marks).
The test's own reads go through a client without the listener, so they are not counted.
"""

from __future__ import annotations

from typing import Any

from pymongo import AsyncMongoClient

from shared.kafka import publish_all
from shared.messages import SEND_REQUESTED, STATUS_CHANGED
from shared.metrics import MONGODB_COMMAND_NAMES, MONGODB_COMMANDS
from tests.integration.notify.conftest import NotifyWorld
from tests.integration.notify.test_delivery import request, status

MESSAGES = 200
STATES = ("sent", "delivered", "read")
# notify's round trips per message after the pipeline (measured 0.2-0.5 on the shared test
# machine; see services/notify/README.md): a bound that catches a per-record write again.
MAX_ROUND_TRIPS_PER_MESSAGE = 1.0


def counts() -> dict[str, float]:
    return {
        name: MONGODB_COMMANDS.labels(command=name)._value.get() for name in MONGODB_COMMAND_NAMES
    }


async def test_notify_spends_under_one_database_round_trip_per_message(
    world: NotifyWorld,
) -> None:
    await world.add_endpoint("we_a", "a", events=("message.*",))
    world.start_notify(endpoint_ttl_s=2.0)  # notify's default endpoint cache
    # warm: the endpoint cache and the consumer group are in place before counting
    await world.publish(SEND_REQUESTED, request("warm"))
    await world.wait_for(lambda: len(world.receivers.at("a")) >= 1, what="the warm-up event")
    quiet: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(world.mongodb_url)
    deliveries = quiet[world.db.name]["deliveries"]

    async def all_delivered() -> bool:
        done = await deliveries.count_documents({"state": "delivered"})
        return done >= 1 + MESSAGES * (1 + len(STATES))

    await world.wait_for(
        lambda: deliveries.count_documents({"state": "delivered"}), what="the warm-up delivered"
    )
    before = counts()
    ids = [f"msg_{i:04d}" for i in range(MESSAGES)]
    await publish_all(world.producer, [(SEND_REQUESTED, request(m)) for m in ids], world.prefix)
    for state in STATES:
        await publish_all(
            world.producer, [(STATUS_CHANGED, status(m, state)) for m in ids], world.prefix
        )
    try:
        await world.wait_for(all_delivered, within=120, what="every event delivered")
        after = counts()
    finally:
        await quiet.close()
    spent = {k: after[k] - before[k] for k in after if after[k] != before[k]}
    per_message = sum(spent.values()) / MESSAGES
    print(f"notify round trips per message: {per_message:.2f} {spent}")
    assert len(world.receivers.at("a")) >= 1 + MESSAGES * (1 + len(STATES))
    assert per_message <= MAX_ROUND_TRIPS_PER_MESSAGE, spent
