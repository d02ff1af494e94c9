"""Email alerts: an outbox like the deliveries'. An alert is inserted into `email_alerts` under
its unique key (a second insert of the same crossing or change is refused, so it is never
mailed twice), then sent over SMTP by this worker; a transient failure is retried on a
schedule, a permanent one (refused by the server, no recipient) is recorded as failed.

SMTP is at-least-once at its edge: a crash between the server accepting a mail and our write
of `sent` sends it again on restart, with the same Message-ID (receivers may drop the copy).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Protocol

import aiosmtplib

from services.notify import alerts, metrics
from services.notify.repository import Doc, NotifyStore
from shared.clock import Clock
from shared.errors import DependencyUnavailable, PermanentError, TransientError
from shared.logging import get_logger

log = get_logger(__name__)


class MailServer(Protocol):
    async def send(self, message: EmailMessage, recipients: Sequence[str]) -> list[str]:
        """Send; the recipients the server refused. Raises TransientError (try again later)
        or PermanentError (never)."""
        ...


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    username: str = ""
    password: str = ""
    starttls: bool = False
    timeout_seconds: float = 30.0


class SmtpServer:
    """aiosmtplib, one connection per mail (alerts are rare), STARTTLS as configured (never
    its opportunistic default), a deadline on the whole exchange."""

    def __init__(self, config: SmtpConfig) -> None:
        self._config = config

    async def send(self, message: EmailMessage, recipients: Sequence[str]) -> list[str]:
        c = self._config
        try:
            async with asyncio.timeout(c.timeout_seconds):
                errors, _ = await aiosmtplib.send(
                    message,
                    recipients=list(recipients),
                    hostname=c.host,
                    port=c.port,
                    username=c.username or None,
                    password=c.password or None,
                    start_tls=c.starttls,
                    use_tls=False,
                    timeout=c.timeout_seconds,
                )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            raise PermanentError(f"every recipient refused: {exc}", code="smtp_refused") from exc
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise PermanentError(
                f"smtp authentication failed: {exc.code}", code="smtp_auth"
            ) from exc
        except aiosmtplib.SMTPResponseException as exc:
            if 400 <= exc.code < 500:
                raise DependencyUnavailable(f"smtp {exc.code}: {exc.message}") from exc
            raise PermanentError(f"smtp {exc.code}: {exc.message}", code="smtp_refused") from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise DependencyUnavailable(
                f"smtp unavailable: {type(exc).__name__}", details={"dependency": "smtp"}
            ) from exc
        return sorted(errors)


class Mailer:
    def __init__(
        self,
        store: NotifyStore,
        server: MailServer,
        clock: Clock,
        sender: str,
        retry_schedule: Sequence[float],
        poll_interval: float = 5.0,
        domain: str = "hala.localhost",
    ) -> None:
        self._store = store
        self._server = server
        self._clock = clock
        self._sender = sender
        self._retry = tuple(retry_schedule)
        self._poll_interval = poll_interval
        self._domain = domain
        self._wake = asyncio.Event()
        self._sending: set[str] = set()

    async def raise_alert(self, alert: alerts.Alert) -> bool:
        """Record the alert (once per key) and wake the sender. False: already raised."""
        now = self._clock.now_ms()
        inserted = await self._store.insert_alert(
            alert.document(now, make_msgid(domain=self._domain))
        )
        if inserted:
            self._wake.set()
        return inserted

    async def send_due(self) -> int:
        sent = 0
        for doc in await self._store.due_alerts(self._clock.now_ms(), 100):
            if doc["_id"] in self._sending:
                continue
            self._sending.add(doc["_id"])
            try:
                sent += await self._send(doc)
            finally:
                self._sending.discard(doc["_id"])
        return sent

    async def _send(self, doc: Doc) -> int:
        kind = str(doc.get("kind", ""))
        kind_label = kind if kind in alerts.ALERT_KINDS else "other"
        to = alerts.recipients(await self._store.account(str(doc["account_id"])))
        now = self._clock.now_ms()
        if not to:
            await self._store.update_alert(
                doc["_id"], {"state": "failed", "error": "no recipient", "done_at": now}
            )
            metrics.EMAILS.labels(kind_label, "no_recipient").inc()
            log.warning("alert_not_sent", outcome="no_recipient", kind=kind)
            return 0
        attempts = int(doc.get("attempts", 0)) + 1
        message = alerts.build_message(doc, to, self._sender, now)
        try:
            refused = await self._server.send(message, to)
        except TransientError as exc:
            delay = alerts.email_retry_delay(attempts, self._retry)
            state = "pending" if delay is not None else "failed"
            await self._store.update_alert(
                doc["_id"],
                {
                    "state": state,
                    "attempts": attempts,
                    "error": exc.message,
                    "next_at": now + round(delay * 1000) if delay is not None else None,
                },
            )
            metrics.EMAILS.labels(kind_label, "retried" if delay is not None else "failed").inc()
            log.warning(
                "alert_send_failed", outcome=state, kind=kind, attempt=attempts, error=exc.message
            )
            return 0
        except PermanentError as exc:
            await self._store.update_alert(
                doc["_id"],
                {"state": "failed", "attempts": attempts, "error": exc.message, "done_at": now},
            )
            metrics.EMAILS.labels(kind_label, "failed").inc()
            log.warning("alert_send_failed", outcome="failed", kind=kind, error=exc.message)
            return 0
        await self._store.update_alert(
            doc["_id"],
            {
                "state": "sent",
                "attempts": attempts,
                "sent_at": self._clock.now_ms(),
                "recipients": [r for r in to if r not in refused],
                "refused": refused,
                "next_at": None,
            },
        )
        metrics.EMAILS.labels(kind_label, "sent").inc()
        log.info("alert_sent", outcome="sent", kind=kind, recipients=len(to) - len(refused))
        return 1

    async def run_forever(self) -> None:
        while True:
            self._wake.clear()  # before reading: an alert raised meanwhile wakes the next round
            try:
                await self.send_due()
            except TransientError as exc:
                log.warning("alert_poll_failed", error=str(exc))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_interval):
                    await self._wake.wait()
