"""App factory: the Simulator (everything one running simulator owns) and its routes."""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import string

from aiohttp import web

from tools.metasim.clock import Clock, SystemClock
from tools.metasim.config import SimConfig
from tools.metasim.handlers import SIM, add_routes
from tools.metasim.metrics import Metrics
from tools.metasim.sends import SendPipeline
from tools.metasim.state import FaultRule, Records, World
from tools.metasim.timeline import Timeline
from tools.metasim.webhooks import WebhookDispatcher

_TRACE_ALPHABET = string.ascii_letters + string.digits + "-_"


class Simulator:
    """The world, its records, the webhook machinery and the run-time switches."""

    def __init__(
        self,
        config: SimConfig,
        clock: Clock,
        metrics: Metrics,
        webhook_ssl: ssl.SSLContext | None = None,
    ) -> None:
        self.base_config = config
        self.clock = clock
        self.metrics = metrics
        self.timeline = Timeline(clock)
        self.rng = random.Random(config.seed)
        self.dispatcher = WebhookDispatcher(
            clock=clock,
            timeline=self.timeline,
            rng=self.rng,
            app_secret=config.app_secret.get_secret_value().encode(),
            time_scale=config.time_scale,
            webhooks=config.webhooks,
            outcomes=config.outcomes,
            max_log=config.records.max_webhook_log,
            metrics=metrics,
            ssl_context=webhook_ssl,
        )
        metrics.track_pending(lambda: len(self.timeline))
        self.reset(config.seed)

    def reset(self, seed: int | None) -> None:
        """Back to the config: a new world, empty records, no faults, a re-seeded rng."""
        config = self.config = self.base_config
        self.rng = random.Random(seed)
        self.world = World(config, self.clock.monotonic(), self.rng)
        self.records = Records(config.records.max_sends, config.records.max_violations)
        # Meta's wamids are unique forever: mixing the start time into the salt keeps a restarted
        # simulator from handing out the wamids of its previous run (which a gateway has indexed).
        # The rng stream is untouched, so seeded behaviour stays deterministic.
        salt = self.rng.getrandbits(32) ^ (int(self.clock.wall() * 1000) & 0xFFFFFFFF)
        self.pipeline = SendPipeline(self.world, self.records, wamid_salt=salt)
        self.faults: list[FaultRule] = []
        self.timeline.clear()
        self.dispatcher.reset(
            rng=self.rng,
            time_scale=config.time_scale,
            webhooks=config.webhooks,
            outcomes=config.outcomes,
        )

    def update_config(self, config: SimConfig) -> None:
        """Run-time changes (pricing rules, outcomes) that a reset reverts."""
        self.config = config
        self.world.config = config
        self.world.limits_enabled = config.limits.enabled
        self.dispatcher.outcomes = config.outcomes

    def fbtrace_id(self) -> str:
        return "".join(self.rng.choices(_TRACE_ALPHABET, k=23))

    def real_seconds(self, simulated: float) -> float:
        return simulated * self.config.time_scale


_TIMELINE_TASK = web.AppKey("metasim_timeline_task", asyncio.Task)


def build_app(
    config: SimConfig, clock: Clock | None = None, webhook_ssl: ssl.SSLContext | None = None
) -> web.Application:
    """`webhook_ssl`: how https webhook targets are verified (None: the system trust store)."""
    # Control bodies may carry inbound media as base64 (16 MB video -> ~21 MB); uploads stream.
    app = web.Application(client_max_size=24 * 1024 * 1024)
    app[SIM] = Simulator(config, clock or SystemClock(), Metrics(), webhook_ssl)
    add_routes(app)

    async def start(app: web.Application) -> None:
        await app[SIM].dispatcher.start()
        app[_TIMELINE_TASK] = asyncio.get_running_loop().create_task(app[SIM].timeline.run())

    async def stop(app: web.Application) -> None:
        task = app[_TIMELINE_TASK]
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await app[SIM].dispatcher.close()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    return app
