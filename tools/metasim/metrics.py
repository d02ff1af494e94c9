"""The simulator's metrics, declared in one place, on a registry per app instance.

Labels come from closed sets only: outcomes, Meta error codes from the simulator's own table,
webhook results and kinds.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge

from tools.metasim.errors import ERROR_TABLE


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        sends = Counter(
            "metasim_sends_total",
            "Message send requests by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.sends_accepted = sends.labels("accepted")
        self.sends_rejected = sends.labels("rejected")
        self.read_receipts = sends.labels("read_receipt")
        errors = Counter(
            "metasim_graph_errors_total",
            "Graph API errors answered, by Meta error code.",
            ["code"],
            registry=self.registry,
        )
        self._errors = {code: errors.labels(str(code)) for code in ERROR_TABLE}
        media = Counter(
            "metasim_media_operations_total",
            "Media API calls answered successfully, by kind of call.",
            ["kind"],
            registry=self.registry,
        )
        self.media_uploads = media.labels("upload")
        self.media_urls = media.labels("url")
        self.media_downloads = media.labels("download")
        self.media_deletes = media.labels("delete")
        self.inbound = Counter(
            "metasim_inbound_messages_total",
            "Inbound user messages injected.",
            registry=self.registry,
        )
        self.faults = Counter(
            "metasim_faults_injected_total",
            "Injected faults by kind.",
            ["kind"],
            registry=self.registry,
        )
        self.webhook_attempts = Counter(
            "metasim_webhook_attempts_total",
            "Webhook POST attempts by result.",
            ["result"],
            registry=self.registry,
        )
        self.webhook_items = Counter(
            "metasim_webhook_items_total",
            "Webhook items emitted by kind.",
            ["kind"],
            registry=self.registry,
        )
        self._pending = Gauge(
            "metasim_webhook_pending",
            "Scheduled timeline items not yet run.",
            registry=self.registry,
        )

    def error(self, code: int) -> None:
        self._errors[code].inc()

    def track_pending(self, source: Callable[[], float]) -> None:
        self._pending.set_function(source)
