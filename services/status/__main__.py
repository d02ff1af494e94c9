"""Composition root: settings -> logging -> connections -> serve until SIGTERM."""

import asyncio

from services.status.settings import StatusSettings
from shared.http import make_ops_app
from shared.logging import configure_logging
from shared.runtime import Connections, serve

SERVICE = "status"


async def main() -> None:
    settings = StatusSettings()
    configure_logging(SERVICE, settings.log_level)

    async def build(conns: Connections):  # type: ignore[no-untyped-def]
        return make_ops_app(SERVICE, conns.readiness_checks()), []

    await serve(settings, SERVICE, build)


if __name__ == "__main__":
    asyncio.run(main())
