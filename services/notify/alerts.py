"""Email alerts, pure: which platform events become an email, the key that makes each one
unique (one per low-balance crossing, per template change, per number change, per endpoint
disabling), its words, and the MIME message (plain text and HTML).

No message bodies, users' phone numbers or secrets ever go into an alert.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

from services.notify.core import iso
from shared.messages import (
    AccountHoldChanged,
    LowBalanceAlerted,
    NumberQualityChanged,
    TemplateStatusChanged,
)

ALERT_KINDS = (
    "balance_low",
    "template_status",
    "number_quality",
    "endpoint_disabled",
    "account_hold",
)
# Template changes a business must hear of by mail (every change still goes to endpoints).
EMAILED_TEMPLATE_STATUSES = frozenset({"APPROVED", "REJECTED", "PAUSED", "DISABLED"})


@dataclass(frozen=True)
class Alert:
    key: str
    account_id: str
    kind: str
    subject: str
    lines: tuple[str, ...]  # paragraphs, plain text

    @property
    def text(self) -> str:
        return "\n\n".join(self.lines) + "\n\n-- \nHala Whatsup\n"

    @property
    def html(self) -> str:
        paragraphs = "".join(f"<p>{html.escape(line)}</p>" for line in self.lines)
        return (
            f"<!doctype html><html><body>{paragraphs}"
            '<p style="color:#777">-- Hala Whatsup</p></body></html>'
        )

    def document(self, now: int, message_id: str) -> dict[str, Any]:
        return {
            "_id": self.key,
            "account_id": self.account_id,
            "kind": self.kind,
            "subject": self.subject,
            "text": self.text,
            "html": self.html,
            "state": "pending",
            "attempts": 0,
            "next_at": now,
            "created_at": now,
            "message_id": message_id,
        }


def money(micros: int, currency: str) -> str:
    return f"{micros / 1_000_000:,.2f} {currency}"


def low_balance(event: LowBalanceAlerted, currency: str) -> Alert:
    """One per crossing: billing's event id counts the account's crossings."""
    return Alert(
        key=f"balance_low:{event.event_id}",
        account_id=event.account_id,
        kind="balance_low",
        subject=f"Low balance: {money(event.available, currency)} left",
        lines=(
            f"The available credit of your account {event.account_id} fell to "
            f"{money(event.available, currency)}, below your alert threshold of "
            f"{money(event.threshold, currency)}.",
            "Messages are refused once the credit runs out. Top up to keep sending.",
            f"Time: {iso(event.occurred_at)}",
        ),
    )


def template_status(event: TemplateStatusChanged, account_id: str) -> Alert | None:
    if event.status not in EMAILED_TEMPLATE_STATUSES:
        return None
    status = event.status.lower()
    lines = [
        f'Meta {status} your message template "{event.name}" ({event.language}) of '
        f"WhatsApp Business Account {event.waba_id}."
    ]
    if event.reason and event.reason != "NONE":
        lines.append(f"Reason given by Meta: {event.reason}.")
    if event.status == "REJECTED":
        lines.append(
            "Edit the template and submit it again, or appeal the decision in WhatsApp Manager."
        )
    elif event.status in ("PAUSED", "DISABLED"):
        lines.append("Messages using it are refused until Meta reinstates it.")
    lines.append(f"Time: {iso(event.occurred_at)}")
    return Alert(
        key=f"template:{event.event_id}",
        account_id=account_id,
        kind="template_status",
        subject=f'Template "{event.name}" {status}',
        lines=tuple(lines),
    )


def number_quality(event: NumberQualityChanged, account_id: str) -> Alert:
    what = {
        "FLAGGED": "was flagged for low quality",
        "UNFLAGGED": "is no longer flagged for low quality",
        "UPGRADE": "moved to a higher messaging tier",
        "DOWNGRADE": "moved to a lower messaging tier",
        "THROUGHPUT_UPGRADE": "can now send at a higher throughput",
    }.get(event.event, f"changed ({event.event})")
    lines = [f"Your WhatsApp phone number {event.phone_number_id} {what}."]
    if event.messaging_limit:
        lines.append(f"Messaging limit now: {event.messaging_limit}.")
    if event.messages_per_second:
        lines.append(f"Throughput now: {event.messages_per_second} messages per second.")
    lines.append(f"Time: {iso(event.occurred_at)}")
    return Alert(
        key=f"quality:{event.event_id}",
        account_id=account_id,
        kind="number_quality",
        subject=f"Phone number {event.phone_number_id}: {event.event.lower()}",
        lines=tuple(lines),
    )


RULE_NAMES = {
    "failure_rate": "failure rate",
    "meta_spam": "Meta's spam signal",
    "quality_red": "number quality",
    "volume_spike": "volume spike",
    "new_recipients": "new recipients",
}


def account_hold(event: AccountHoldChanged) -> Alert:
    """One per hold or release (guard's event id)."""
    if event.change == "held":
        rule = RULE_NAMES.get(event.rule or "", event.rule or "a rule")
        lines = (
            f"We held the sending of your account {event.account_id}: our {rule} rule "
            f"fired. {event.reason}.",
            "Messages are refused (403 account_held) and queued ones wait until our team "
            "has reviewed the account and released it; those whose validity ends "
            "meanwhile expire. Contact support to have it reviewed.",
            f"Time: {iso(event.occurred_at)}",
        )
        subject = f"Sending held: {rule}"
    else:
        lines = (
            f"Your account {event.account_id} may send again: the hold was released"
            + (f" ({event.reason})" if event.reason else "")
            + ".",
            *(("Still held by: " + ", ".join(event.rules) + ".",) if event.held else ()),
            f"Time: {iso(event.occurred_at)}",
        )
        subject = "Sending released" if not event.held else "Hold released, another remains"
    return Alert(
        key=f"hold:{event.event_id}",
        account_id=event.account_id,
        kind="account_hold",
        subject=subject,
        lines=tuple(lines),
    )


def endpoint_disabled(
    endpoint_id: str, account_id: str, url: str, reason: str, at: int, failing_since: int | None
) -> Alert:
    why = (
        "it answered 410 Gone"
        if reason == "gone"
        else f"no delivery to it has succeeded since {iso(failing_since or at)}"
    )
    return Alert(
        key=f"endpoint_disabled:{endpoint_id}:{at}",
        account_id=account_id,
        kind="endpoint_disabled",
        subject=f"Webhook endpoint {endpoint_id} disabled",
        lines=(
            f"We disabled your webhook endpoint {endpoint_id} ({url}) because {why}.",
            "Events are no longer sent to it. Fix the endpoint, enable it again "
            "(PATCH /v1/webhook-endpoints/{id} with enabled: true), then replay what it "
            "missed (POST /v1/webhook-endpoints/{id}/replay).",
            f"Time: {iso(at)}",
        ),
    )


def recipients(account: Mapping[str, Any] | None) -> list[str]:
    """The account's email and its alert addresses, each once (case-insensitively)."""
    if not account:
        return []
    found: list[str] = []
    seen: set[str] = set()
    candidates: Iterable[Any] = [account.get("email"), *(account.get("alert_emails") or [])]
    for address in candidates:
        if isinstance(address, str) and "@" in address and address.lower() not in seen:
            seen.add(address.lower())
            found.append(address.strip())
    return found


def build_message(
    doc: Mapping[str, Any], to: Sequence[str], sender: str, date_ms: int
) -> EmailMessage:
    """The MIME message: multipart/alternative, plain text first, then HTML. Its Message-ID is
    the alert's own, the same on every try."""
    message = EmailMessage()
    message["Subject"] = str(doc["subject"])
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Date"] = format_datetime(datetime.fromtimestamp(date_ms / 1000, tz=UTC))
    message["Message-ID"] = str(doc["message_id"])
    message["X-Hala-Alert"] = str(doc.get("kind", ""))
    message.set_content(str(doc["text"]))
    message.add_alternative(str(doc["html"]), subtype="html")
    return message


def email_retry_delay(attempts_made: int, schedule: Sequence[float]) -> float | None:
    index = attempts_made - 1
    return schedule[index] if 0 <= index < len(schedule) else None
