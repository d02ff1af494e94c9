"""Composition root: settings -> logging -> topics -> faust app -> run its worker until SIGTERM."""

import asyncio
from pathlib import Path

import faust

from services.billing.app import SERVICE, create_app
from services.billing.settings import BillingSettings
from shared.logging import configure_logging
from shared.runtime import wait_for_own_topics
from shared.settings import load_settings


def main() -> None:
    settings = load_settings(BillingSettings)
    configure_logging(SERVICE, settings.log_level)
    # faust subscribes when it starts: the topics must exist by then. billing creates none
    # (its principal may not): the set-up step does, and the broker may still be starting.
    asyncio.run(wait_for_own_topics(settings, SERVICE))
    Path(settings.faust_datadir).mkdir(parents=True, exist_ok=True)  # faust makes only the leaf
    asyncio.set_event_loop(asyncio.new_event_loop())  # asyncio.run left none for faust
    app, _ = create_app(settings)
    worker = faust.Worker(app, loglevel=settings.log_level.lower())
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
