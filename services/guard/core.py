"""guard's decisions, pure: each account's sliding windows, the fraud and spam rules over them,
and what a hold or a release changes. No await, no clock, no I/O: event times, `now` and the
rules' settings come in as arguments.

Windows are counts per minute (and sends per hour for the 7-day baseline), keyed by the
minute (hour) of the event's own time, so a replay after a restart rebuilds exactly the same
windows and a rule fires with the same evidence and the same event id. An account's "now" is
the latest event time it has seen. A rule judges only evidence that is recent by the wall
clock (`wall_now - window`): a guard that starts on a week of history does not hold accounts
for last week.

The rules (each with its threshold, window and minimum volume; defaults in settings.py,
per-account overrides in `accounts.guard_rules`):

- failure_rate: failed ÷ finished (delivered + failed, failures Meta reported: the status has
  Meta's error) over the window, once at least `minimum` finished;
- meta_spam: Meta's 131048 (spam rate limit) failures in the window reach `threshold`;
- quality_red: `threshold` of the account's numbers flagged (quality RED) by Meta within the
  window (from status's number states; see worker.py);
- volume_spike: sends in the window reach `minimum` and exceed `threshold` × what the account
  sent in the same length of time on average over the 7 days before the window (judged once
  the account has a day of history: a brand-new account is the next rule's);
- new_recipients: at least `minimum` sends in the window, and the share of them to recipients
  the account never sent to before reaches `threshold`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from shared.messages import HOLD_RULES, AccountHoldChanged, SendRequested, StatusChanged

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
BASELINE_HOURS = 7 * 24
# The volume rule judges an account once it has this much history before the window.
BASELINE_MIN_HOURS = 24
SPAM_RATE_LIMIT = 131048
FLAGGED = "FLAGGED"  # Meta's phone_number_quality_update event for a low (RED) quality rating


@dataclass(frozen=True)
class Rule:
    """One rule's limits: `threshold` (a share, a count or a multiple: see the module's
    docstring), `window_seconds`, and `minimum` volume before it judges."""

    threshold: float
    window_seconds: int
    minimum: int = 0

    @property
    def window_ms(self) -> int:
        return self.window_seconds * 1000


@dataclass(frozen=True)
class Rules:
    failure_rate: Rule = Rule(0.5, 900, 50)
    meta_spam: Rule = Rule(1, 3600)
    quality_red: Rule = Rule(1, 86_400)
    volume_spike: Rule = Rule(5.0, 3600, 500)
    new_recipients: Rule = Rule(0.9, 3600, 200)

    def get(self, name: str) -> Rule:
        rule: Rule = getattr(self, name)
        return rule

    def with_overrides(self, overrides: Mapping[str, Any] | None) -> Rules:
        """An account's overrides (`accounts.guard_rules`: {rule: {threshold, window_seconds,
        minimum}}) over these; unknown rules, fields and unusable values are ignored."""
        if not isinstance(overrides, Mapping):
            return self
        changed: dict[str, Rule] = {}
        for name, fields in overrides.items():
            if name not in HOLD_RULES or not isinstance(fields, Mapping):
                continue
            rule = self.get(name)
            threshold = _number(fields.get("threshold"), rule.threshold, minimum=0.0)
            window = int(_number(fields.get("window_seconds"), rule.window_seconds, minimum=60.0))
            least = int(_number(fields.get("minimum"), rule.minimum, minimum=0.0))
            changed[name] = Rule(threshold, min(window, BASELINE_HOURS * 3600), least)
        return replace(self, **changed)

    @property
    def longest_minute_window_ms(self) -> int:
        """How much of the per-minute counters the rules read (quality_red has none)."""
        return max(self.get(name).window_ms for name in _JUDGES)


def _number(value: Any, default: float, minimum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        return default
    return float(value)


# --- windows --------------------------------------------------------------------------------

# Counters kept per minute: sends, sends to new recipients, finished, failed (Meta's error),
# 131048 failures.
COUNTERS = ("sent", "new", "finished", "failed", "spam")


@dataclass
class Account:
    """One account's windows (what `guard_states` keeps)."""

    account_id: str
    minutes: dict[str, dict[int, int]] = field(
        default_factory=lambda: {name: {} for name in COUNTERS}
    )
    hours: dict[int, int] = field(default_factory=dict)  # sends per hour (baseline)
    first_at: int | None = None  # the first send seen: how much history the baseline has
    latest_at: int = 0  # the account's "now": the latest event time seen
    fired: dict[str, int] = field(default_factory=dict)  # rule -> at, since the last release
    released_at: int = 0
    applied: dict[str, int] = field(default_factory=dict)  # "topic:partition" -> next offset

    def count(self, name: str, end_ms: int, window_ms: int) -> int:
        """The counter's total over the window ending at `end_ms` (whole minutes)."""
        first = (end_ms - window_ms) // MINUTE_MS + 1
        last = end_ms // MINUTE_MS
        return sum(n for minute, n in self.minutes[name].items() if first <= minute <= last)

    def _add(self, name: str, at: int, n: int = 1) -> None:
        minute = at // MINUTE_MS
        self.minutes[name][minute] = self.minutes[name].get(minute, 0) + n
        self.latest_at = max(self.latest_at, at)

    def prune(self, keep_minutes_ms: int) -> None:
        """Forget what no window reaches any more."""
        oldest_minute = (self.latest_at - keep_minutes_ms) // MINUTE_MS
        for buckets in self.minutes.values():
            for minute in [m for m in buckets if m < oldest_minute]:
                del buckets[minute]
        oldest_hour = (self.latest_at - (BASELINE_HOURS + 2) * HOUR_MS) // HOUR_MS
        for hour in [h for h in self.hours if h < oldest_hour]:
            del self.hours[hour]

    # --- what happened ------------------------------------------------------------------

    def seen(self, position: str, offset: int) -> bool:
        """Whether this record (topic:partition, offset) was applied already (a replay after
        a restart, or a rebalance)."""
        return self.applied.get(position, 0) > offset

    def mark(self, position: str, offset: int) -> None:
        self.applied[position] = max(self.applied.get(position, 0), offset + 1)

    def sent(self, event: SendRequested, new_recipient: bool) -> None:
        at = event.accepted_at
        self._add("sent", at)
        if new_recipient:
            self._add("new", at)
        hour = at // HOUR_MS
        self.hours[hour] = self.hours.get(hour, 0) + 1
        self.first_at = at if self.first_at is None else min(self.first_at, at)

    def status(self, event: StatusChanged) -> None:
        """A message's outcome: delivered (or read without a delivery seen) finishes it, a
        failure Meta reported (with its error) finishes it failed. Our own refusals and
        expiries (no Meta error) are not the recipients' doing and are not counted."""
        at = event.occurred_at
        if event.status == "delivered":
            self._add("finished", at)
        elif event.status == "failed" and event.error is not None:
            self._add("finished", at)
            self._add("failed", at)
            if event.error.code == SPAM_RATE_LIMIT:
                self._add("spam", at)
        else:
            self.latest_at = max(self.latest_at, at)

    def release(self, at: int) -> None:
        """An operator released the account: the rules start afresh (the baseline stays)."""
        self.minutes = {name: {} for name in COUNTERS}
        self.fired = {}
        self.released_at = max(self.released_at, at)


# --- the rules ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fired:
    """A rule that holds the account: when (`at`, from its evidence's times, always after the
    last release), why, and the figures it saw."""

    account_id: str
    rule: str
    at: int
    reason: str
    observed: dict[str, float]

    @property
    def event_id(self) -> str:
        return f"hold:{self.account_id}:{self.rule}:{self.at}"


def _pct(share: float) -> str:
    return f"{share * 100:.0f}%"


def _span(seconds: int) -> str:
    if seconds % 86_400 == 0:
        days = seconds // 86_400
        return "24 hours" if days == 1 else f"{days} days"
    if seconds % 3600 == 0:
        hours = seconds // 3600
        return "hour" if hours == 1 else f"{hours} hours"
    return f"{seconds // 60} minutes"


def evaluate(account: Account, rules: Rules, wall_now: int) -> list[Fired]:
    """The rules that fire now and have not fired since the last release."""
    fired: list[Fired] = []
    end = account.latest_at
    for name, judge in _JUDGES.items():
        if name in account.fired:
            continue
        rule = rules.get(name)
        if wall_now - end > rule.window_ms:
            continue  # old evidence (a guard reading history): not a reason to hold now
        found = judge(account, rule, end)
        if found is not None:
            reason, observed = found
            at = max(end, account.released_at + 1)
            fired.append(
                Fired(
                    account.account_id,
                    name,
                    at,
                    reason,
                    {
                        **observed,
                        "threshold": rule.threshold,
                        "window_seconds": rule.window_seconds,
                    },
                )
            )
    return fired


def _failure_rate(account: Account, rule: Rule, end: int) -> tuple[str, dict[str, float]] | None:
    finished = account.count("finished", end, rule.window_ms)
    failed = account.count("failed", end, rule.window_ms)
    if finished < max(rule.minimum, 1):
        return None
    rate = failed / finished
    if rate < rule.threshold:
        return None
    return (
        f"{_pct(rate)} of the {finished} messages that finished in the last "
        f"{_span(rule.window_seconds)} failed (threshold {_pct(rule.threshold)})",
        {"failed": failed, "finished": finished, "rate": round(rate, 4)},
    )


def _meta_spam(account: Account, rule: Rule, end: int) -> tuple[str, dict[str, float]] | None:
    spam = account.count("spam", end, rule.window_ms)
    if spam < max(rule.threshold, 1):
        return None
    return (
        f"Meta refused {spam} message{'s' if spam != 1 else ''} with 131048 (spam rate "
        f"limit) in the last {_span(rule.window_seconds)} (threshold "
        f"{rule.threshold:g})",
        {"spam_refusals": spam},
    )


def _volume_spike(account: Account, rule: Rule, end: int) -> tuple[str, dict[str, float]] | None:
    sent = account.count("sent", end, rule.window_ms)
    if sent < max(rule.minimum, 1) or account.first_at is None:
        return None
    window_start = end - rule.window_ms
    history_start = max(account.first_at, window_start - BASELINE_HOURS * HOUR_MS)
    history_hours = (window_start - history_start) // HOUR_MS
    if history_hours < BASELINE_MIN_HOURS:
        return None
    first_hour = window_start // HOUR_MS - history_hours
    before = sum(
        n for hour, n in account.hours.items() if first_hour <= hour < window_start // HOUR_MS
    )
    expected = before / history_hours * rule.window_seconds / 3600
    if sent <= rule.threshold * expected:
        return None
    multiple = sent / expected if expected else float("inf")
    shown = f"{multiple:.1f}×" if expected else "far above"
    return (
        f"{sent} messages in the last {_span(rule.window_seconds)}, {shown} the account's "
        f"usual {expected:.0f} (its average over the {history_hours} hours before; "
        f"threshold {rule.threshold:g}×)",
        {
            "sent": sent,
            "expected": round(expected, 2),
            "multiple": round(multiple, 2) if expected else -1.0,
        },
    )


def _new_recipients(account: Account, rule: Rule, end: int) -> tuple[str, dict[str, float]] | None:
    sent = account.count("sent", end, rule.window_ms)
    if sent < max(rule.minimum, 1):
        return None
    new = account.count("new", end, rule.window_ms)
    share = new / sent
    if share < rule.threshold:
        return None
    return (
        f"{_pct(share)} of the {sent} messages of the last {_span(rule.window_seconds)} "
        f"went to recipients never messaged before (threshold {_pct(rule.threshold)})",
        {"sent": sent, "new_recipients": new, "share": round(share, 4)},
    )


_JUDGES = {
    "failure_rate": _failure_rate,
    "meta_spam": _meta_spam,
    "volume_spike": _volume_spike,
    "new_recipients": _new_recipients,
}


def quality_red(
    account_id: str, flagged_at: Iterable[int], rule: Rule, released_at: int, wall_now: int
) -> Fired | None:
    """`flagged_at`: when each of the account's numbers was last flagged (quality RED) by
    Meta, for the numbers whose latest quality event is a flag. Fires when at least
    `threshold` of them were flagged within the window (and after the last release)."""
    recent = sorted(at for at in flagged_at if wall_now - at <= rule.window_ms and at > released_at)
    if not recent or len(recent) < max(rule.threshold, 1):
        return None
    count = len(recent)
    return Fired(
        account_id,
        "quality_red",
        recent[-1],
        f"Meta flagged {count} of the account's numbers for low quality (RED) in the "
        f"last {_span(rule.window_seconds)} (threshold {rule.threshold:g})",
        {
            "flagged_numbers": count,
            "threshold": rule.threshold,
            "window_seconds": rule.window_seconds,
        },
    )


# --- holds ----------------------------------------------------------------------------------


def hold_fields(fired: Fired, now_ms: int) -> dict[str, Any]:
    """The `$set` of the account's hold document for a rule that fired (its own field: no
    write of another rule or of a release is ever overwritten)."""
    return {
        "account_id": fired.account_id,
        "updated_at": now_ms,
        f"holds.{fired.rule}": {
            "at": fired.at,
            "reason": fired.reason,
            "observed": fired.observed,
            "event_id": fired.event_id,
        },
    }


def release_fields(
    account_id: str,
    hold_doc: Mapping[str, Any] | None,
    requested_at: int,
    operator: str,
    reason: str,
    now_ms: int,
) -> dict[str, Any]:
    """The release's `$set`: its time is after every hold it releases (a hold fired from
    evidence timed after the operator's clock is released too)."""
    latest_hold = max(
        (
            int(h.get("at", 0))
            for h in ((hold_doc or {}).get("holds") or {}).values()
            if isinstance(h, Mapping)
        ),
        default=0,
    )
    return {
        "account_id": account_id,
        "released_at": max(requested_at, latest_hold),
        "released_by": operator,
        "release_reason": reason,
        "updated_at": now_ms,
    }


def held_event(fired: Fired, active_rules: list[str]) -> AccountHoldChanged:
    return AccountHoldChanged(
        event_id=fired.event_id,
        account_id=fired.account_id,
        held=True,
        rules=sorted(set(active_rules) | {fired.rule}),
        change="held",
        rule=fired.rule,
        reason=fired.reason,
        observed=dict(fired.observed),
        occurred_at=fired.at,
    )


def released_event(
    account_id: str, request_id: str, active_rules: list[str], reason: str, operator: str, at: int
) -> AccountHoldChanged:
    """The state after a release: held only if a rule fired after it (a race with a release
    applied late; the next event corrects it either way)."""
    return AccountHoldChanged(
        event_id=f"release:{request_id}",
        account_id=account_id,
        held=bool(active_rules),
        rules=sorted(active_rules),
        change="released",
        reason=reason,
        operator=operator,
        occurred_at=at,
    )


# --- what guard_states keeps ----------------------------------------------------------------


def state_doc(account: Account, now_ms: int) -> dict[str, Any]:
    """The account's document (keys are strings: BSON wants them)."""
    return {
        "_id": account.account_id,
        "account_id": account.account_id,
        "minutes": {
            name: {str(m): n for m, n in buckets.items()}
            for name, buckets in account.minutes.items()
        },
        "hours": {str(h): n for h, n in account.hours.items()},
        "first_at": account.first_at,
        "latest_at": account.latest_at,
        "fired": dict(account.fired),
        "released_at": account.released_at,
        # a list: topic names hold dots, which a field name may not
        "applied": [{"position": p, "next": n} for p, n in sorted(account.applied.items())],
        "updated_at": now_ms,
    }


def account_from_doc(account_id: str, doc: Mapping[str, Any] | None) -> Account:
    if not doc:
        return Account(account_id)

    def ints(value: Any) -> dict[int, int]:
        if not isinstance(value, Mapping):
            return {}
        return {
            int(k): int(v)
            for k, v in value.items()
            if str(k).lstrip("-").isdigit() and isinstance(v, int)
        }

    minutes = doc.get("minutes") if isinstance(doc.get("minutes"), Mapping) else {}
    return Account(
        account_id=account_id,
        minutes={name: ints(minutes.get(name)) for name in COUNTERS},
        hours=ints(doc.get("hours")),
        first_at=doc.get("first_at") if isinstance(doc.get("first_at"), int) else None,
        latest_at=int(doc.get("latest_at") or 0),
        fired={str(k): int(v) for k, v in (doc.get("fired") or {}).items() if isinstance(v, int)},
        released_at=int(doc.get("released_at") or 0),
        applied={
            str(a["position"]): int(a["next"])
            for a in (doc.get("applied") or [])
            if isinstance(a, Mapping) and isinstance(a.get("next"), int)
        },
    )
