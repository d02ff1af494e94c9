"""Composition root: settings -> logging -> connections -> serve until SIGTERM."""

import asyncio

from services.ingest.app import SERVICE, create_app
from services.ingest.settings import IngestSettings
from shared.logging import configure_logging
from shared.runtime import Connections, serve


async def main() -> None:
    settings = IngestSettings()
    configure_logging(SERVICE, settings.log_level)

    async def build(conns: Connections):  # type: ignore[no-untyped-def]
        return create_app(conns.readiness_checks()), []

    await serve(settings, SERVICE, build)


if __name__ == "__main__":
    asyncio.run(main())
