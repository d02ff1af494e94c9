"""A minimal faust-streaming worker for test_faust.py: appends every value it consumes from
PROBE_TOPIC to PROBE_OUTPUT, one line each. Run as `python -m tests.integration.faust_probe`.
It connects like billing does: KAFKA_* settings, faust credentials from them."""

import os
from pathlib import Path

import faust

from services.billing.app import broker_credentials
from shared.settings import ServiceSettings

kafka = ServiceSettings().kafka
app = faust.App(
    os.environ["PROBE_APP_ID"],
    broker=f"kafka://{kafka.bootstrap_servers}",
    broker_credentials=broker_credentials(kafka),
    store="memory://",
    processing_guarantee="at_least_once",
    web_enabled=False,
    topic_allow_declare=False,
    consumer_auto_offset_reset="earliest",
    datadir=os.environ["PROBE_DATADIR"],  # not the working directory
)
topic = app.topic(os.environ["PROBE_TOPIC"], value_type=bytes, value_serializer="raw")
output = Path(os.environ["PROBE_OUTPUT"])


@app.agent(topic)
async def record(stream):  # type: ignore[no-untyped-def]
    async for value in stream:
        with output.open("ab") as f:
            f.write(value + b"\n")


if __name__ == "__main__":
    faust.Worker(app, loglevel="warning").execute_from_commandline()
