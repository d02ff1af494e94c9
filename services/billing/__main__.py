"""Composition root: settings -> logging -> topics -> faust app -> run its worker until SIGTERM."""

import asyncio
from pathlib import Path

import faust

from services.billing.app import SERVICE, create_app
from services.billing.settings import BillingSettings
from shared.kafka import ensure_topics
from shared.logging import configure_logging, get_logger

log = get_logger(SERVICE)


async def _ensure_topics(settings: BillingSettings, deadline_s: float = 60.0) -> None:
    """faust subscribes when it starts: the topics must exist by then (the broker may still be
    starting, so keep trying for a while)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    while True:
        try:
            await ensure_topics(settings.kafka_bootstrap_servers, settings.topic_prefix)
            return
        except Exception as exc:
            if loop.time() > deadline:
                raise
            log.warning("kafka_not_ready_retrying", error=repr(exc))
            await asyncio.sleep(1)


def main() -> None:
    settings = BillingSettings()
    configure_logging(SERVICE, settings.log_level)
    asyncio.run(_ensure_topics(settings))
    Path(settings.faust_datadir).mkdir(parents=True, exist_ok=True)  # faust makes only the leaf
    asyncio.set_event_loop(asyncio.new_event_loop())  # asyncio.run left none for faust
    app, _ = create_app(settings)
    worker = faust.Worker(app, loglevel=settings.log_level.lower())
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
