"""Composition root: settings -> logging -> faust app -> run its worker until SIGTERM."""

import faust

from services.billing.app import SERVICE, create_app
from services.billing.settings import BillingSettings
from shared.logging import configure_logging


def main() -> None:
    settings = BillingSettings()
    configure_logging(SERVICE, settings.log_level)
    app, _ = create_app(settings)
    worker = faust.Worker(app, loglevel=settings.log_level.lower())
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
