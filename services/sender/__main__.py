"""Composition root: settings -> logging -> connections -> serve until SIGTERM."""

import asyncio

from services.sender.metrics import SERVICE
from services.sender.repository import SenderRepository
from services.sender.retention import sweep_tier_usage_forever
from services.sender.settings import SenderSettings
from services.sender.worker import create_worker
from shared.clock import SystemClock
from shared.collections import SENDS, TIER_USAGE, ensure_indexes
from shared.logging import configure_logging
from shared.runtime import Connections, Parts, serve
from shared.secrets import TokenVault
from shared.settings import load_settings


async def main() -> None:
    settings = load_settings(SenderSettings)
    configure_logging(SERVICE, settings.log_level)
    if not settings.token_keys.get_secret_value():
        raise SystemExit("HALA_TOKEN_KEYS is not set: the sender cannot decrypt access tokens")

    async def build(conns: Connections) -> Parts:
        await ensure_indexes(conns.db, SENDS, TIER_USAGE)
        clock = SystemClock()
        worker, meta = create_worker(settings, conns.db, conns.producer, clock)
        tier_usage = SenderRepository(conns.db, TokenVault(settings.token_keys))

        async def run_worker() -> None:
            try:
                await worker.run()
            finally:
                await meta.close()

        retention = sweep_tier_usage_forever(
            tier_usage,
            clock,
            int(settings.tier_usage_retention_hours * 3_600_000),
            settings.tier_usage_sweep_interval_seconds,
        )
        return Parts(checks=conns.readiness_checks(), workers=[run_worker(), retention])

    await serve(settings, SERVICE, build)


if __name__ == "__main__":
    asyncio.run(main())
