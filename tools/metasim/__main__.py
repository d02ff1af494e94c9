"""Composition root: settings -> logging -> config -> app -> run."""

from __future__ import annotations

import argparse
import gc
import logging
import ssl
from pathlib import Path

import structlog
from aiohttp import web

from tools.metasim.app import build_app
from tools.metasim.config import Settings, load_config


def main() -> None:
    settings = Settings()
    parser = argparse.ArgumentParser(prog="python -m tools.metasim", description=__doc__)
    parser.add_argument("--host", default=settings.host)
    parser.add_argument("--port", type=int, default=settings.port)
    parser.add_argument("--config", type=Path, default=settings.config)
    args = parser.parse_args()

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
    )
    config = load_config(args.config)
    if settings.webhook_url:
        config = config.model_copy(
            update={
                "webhooks": config.webhooks.model_copy(
                    update={"callback_url": settings.webhook_url}
                )
            }
        )
    structlog.get_logger("metasim").info(
        "metasim_starting",
        host=args.host,
        port=args.port,
        config=str(args.config),
        webhooks=config.webhooks.enabled,
        limits=config.limits.enabled,
    )
    webhook_ssl = (
        ssl.create_default_context(cafile=str(settings.webhook_ca_file))
        if settings.webhook_ca_file
        else None
    )
    app = build_app(config, webhook_ssl=webhook_ssl)
    # The send path allocates many short-lived objects while the records grow large: move
    # start-up objects out of the collector's view and collect the young generation less often.
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)
    # No per-request access log: it would dominate the send path's cost.
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
