"""billing's decisions, pure: what an input event does to an account's balance.

Each input event maps to at most one ledger entry with a unique key (`<message_id>:reserve`,
`<message_id>:settle`, `topup:<event_id>`, and `<message_id>:late-charge`, below). The entry is
written first, then the balance document, which records the offset it has applied per
`topic:partition`. So:

- an event at an offset the balance has applied is a redelivery: nothing changes, and its
  outputs are derived again from the stored entry and published again (downstream dedupes);
- an event whose entry already exists, written by an event the balance has applied, is a
  duplicate (the same request published twice): nothing changes;
- an entry that exists but whose offset the balance has not applied is our own earlier attempt
  that stopped between the two writes: its effect is applied now.

Money is integer micros. Amounts in entries:
  reserve  amount = the price reserved                available -= amount, reserved += amount
  reject   amount = the price that could not be reserved        (nothing moves);
           reason = insufficient_credit, or too_many_in_flight
  charge   amount = Meta's price; reserved_amount = the reservation it closes
           (a late charge, `<message_id>:late-charge`: reserved_amount = 0, it closes none)
  release  amount = reserved_amount = the reservation returned
  topup    amount = the credit added                  available += amount
           (available_after = the balance right after it, for BalanceToppedUp)

The low-balance threshold is the account's own (`accounts.low_balance_threshold`, set by the
admin CLI): the worker reads it and `with_threshold` applies it to the balance before deciding.

Messages in flight: the balance counts the account's open reservations (`in_flight`: +1 per
reserve, -1 per charge or release; the entries decide it, so a replay or a resumed entry counts
once). A send that finds `in_flight` at the account's cap (`in_flight_limit`: the account's own
`accounts.max_in_flight`, else the default; 0 = no cap; applied by `with_in_flight_limit` like
the threshold) is rejected with reason `too_many_in_flight`: nothing is reserved or sent. Being
the one writer of the account, billing never lets the count pass the cap.

Meta's pricing is the truth about what a message costs. A release can be a guess: a send whose
outcome stayed unknown (a sender killed while its call was out) is declared failed after a
timeout (status's sweeper, `outcome_unknown`), and billing's own sweeper expires a reservation
no status settled. When Meta then reports the message delivered or read with a regular price,
the message is charged after all: a `late charge` entry (`<message_id>:late-charge`, kind
`charge`, reserved_amount 0: the reservation was already returned) takes Meta's price from the
available credit. At most one per message, like every entry.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, NamedTuple

import msgspec

from shared.errors import InvalidRequest
from shared.messages import (
    BALANCE_TOPPED_UP,
    LOW_BALANCE_ALERTED,
    SEND_APPROVED,
    STATUS_CHANGED,
    BalanceToppedUp,
    LowBalanceAlerted,
    SendApproved,
    SendRequested,
    StatusChanged,
    Topic,
    TopUpRequested,
    top_up_signature_valid,
)
from shared.pricing import RateCard

EntryKind = Literal["reserve", "reject", "charge", "release", "topup"]
Outcome = Literal[
    "reserved", "rejected", "charged", "released", "topped_up", "duplicate", "replayed", "ignored"
]
Settlement = Literal["charge", "release"]
InputEvent = SendRequested | StatusChanged | TopUpRequested

INSUFFICIENT_CREDIT = "insufficient_credit"
TOO_MANY_IN_FLIGHT = "too_many_in_flight"

_OUTCOME_OF_KIND: dict[EntryKind, Outcome] = {
    "reserve": "reserved",
    "reject": "rejected",
    "charge": "charged",
    "release": "released",
    "topup": "topped_up",
}


@dataclass(frozen=True)
class Position:
    """Where an input event was read: the balance records the last applied offset per source."""

    topic: str
    partition: int
    offset: int

    @property
    def source(self) -> str:
        return f"{self.topic}:{self.partition}"


@dataclass(frozen=True)
class Balance:
    account_id: str
    currency: str
    available: int = 0
    reserved: int = 0
    low_balance_threshold: int = 0
    # Armed while available is at or above the threshold: the next fall below alerts once.
    low_balance_armed: bool = False
    low_balance_crossings: int = 0
    applied: Mapping[str, int] = field(default_factory=dict)  # "topic:partition" -> offset
    # Open reservations (messages accepted and not yet final), and the cap on them (0: none).
    in_flight: int = 0
    in_flight_limit: int = 0

    @classmethod
    def opening(cls, account_id: str, currency: str, low_balance_threshold: int) -> Balance:
        """A new account: no credit, so below any positive threshold without having crossed it."""
        return cls(
            account_id=account_id,
            currency=currency,
            low_balance_threshold=low_balance_threshold,
            low_balance_armed=low_balance_threshold <= 0,
        )

    def has_applied(self, source: str, offset: int) -> bool:
        return offset <= self.applied.get(source, -1)


def with_threshold(balance: Balance, threshold: int) -> Balance:
    """The balance under the account's current low-balance threshold. At or above the new
    threshold the alert is armed (the next fall below it alerts once); below it, the alert keeps
    its state: armed, the next movement that leaves the balance below the threshold alerts;
    already alerted, nothing more until the balance has been back above it."""
    if threshold == balance.low_balance_threshold:
        return balance
    armed = balance.low_balance_armed or balance.available >= threshold
    return replace(balance, low_balance_threshold=threshold, low_balance_armed=armed)


def with_in_flight_limit(balance: Balance, limit: int) -> Balance:
    """The balance under the account's current cap on messages in flight (0: none). A lower
    cap than the count refuses new sends until enough have settled; none is recalled."""
    if limit == balance.in_flight_limit:
        return balance
    return replace(balance, in_flight_limit=limit)


@dataclass(frozen=True)
class LowBalanceNotice:
    """A fall below the threshold, kept on the entry that caused it so a replay can re-send it."""

    crossing: int
    available: int
    threshold: int
    occurred_at: int


@dataclass(frozen=True)
class LedgerEntry:
    key: str
    account_id: str
    kind: EntryKind
    amount: int
    at: int
    source: str
    source_offset: int
    source_event_id: str
    message_id: str | None = None
    reserved_amount: int = 0
    category: str = ""
    region: str = ""
    rate_card_version: str = ""
    low_balance: LowBalanceNotice | None = None
    # A top-up's: the available credit right after it (BalanceToppedUp says it; kept on the
    # entry so that a replay publishes the same event again).
    available_after: int | None = None
    # A reject's: why (INSUFFICIENT_CREDIT, TOO_MANY_IN_FLIGHT). Entries from before it was
    # kept have none, and were all for insufficient credit.
    reason: str = ""


@dataclass(frozen=True)
class Output:
    topic: Topic[Any]
    event: Any


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    balance: Balance | None = None  # the balance to write; None when it does not change
    entries: tuple[LedgerEntry, ...] = ()  # to insert before the balance is written
    outputs: tuple[Output, ...] = ()  # to publish after the balance is written
    applied: LedgerEntry | None = None  # the entry whose effect `balance` adds (new or resumed)


def topped_up_event_id(top_up_event_id: str) -> str:
    """BalanceToppedUp's id: one per top-up, whatever publishes it again."""
    return f"{top_up_event_id}:applied"


def reserve_key(message_id: str) -> str:
    return f"{message_id}:reserve"


def settle_key(message_id: str) -> str:
    return f"{message_id}:settle"


def topup_key(event_id: str) -> str:
    return f"topup:{event_id}"


def late_charge_key(message_id: str) -> str:
    """The charge of a message Meta billed after its reservation was released (see above)."""
    return f"{message_id}:late-charge"


def closes_reservation(entry: LedgerEntry) -> bool:
    """Whether the entry settles the message's open reservation (a late charge does not: the
    release before it did)."""
    return entry.kind in ("charge", "release") and not entry.key.endswith(":late-charge")


def stored_entry_keys(event: InputEvent) -> tuple[str, ...]:
    """The keys under which an entry written for `event` can be stored: `entry_key(event)`,
    and for a priced status also its late charge."""
    if isinstance(event, StatusChanged) and settlement_for(event) == "charge":
        return (settle_key(event.message_id), late_charge_key(event.message_id))
    return (entry_key(event),)


def entry_key(event: InputEvent) -> str:
    """The key of the one ledger entry an input event can write."""
    if isinstance(event, SendRequested):
        return reserve_key(event.message_id)
    if isinstance(event, StatusChanged):
        return settle_key(event.message_id)
    return topup_key(event.event_id)


def settlement_for(event: StatusChanged) -> Settlement | None:
    """What a status does to the message's reservation, if anything.

    Meta prices a message on `sent` and on one of `delivered`/`read`, never both: a delivery
    without pricing waits for the other one instead of releasing the credit.
    """
    if event.status in ("failed", "expired", "rejected"):
        return "release"
    if event.status in ("delivered", "read") and event.pricing is not None:
        return "charge" if event.pricing.type == "regular" else "release"
    return None


class LedgerReads(NamedTuple):
    """What a batch knows of the ledger before it decides (`plan_ledger_reads`)."""

    # The keys to read (one `$in`), in this order: reservations, settlements likely written,
    # the other settlements.
    to_read: list[str]
    # The held entries the batch decides from, taken before its reads refill the bounded
    # memory (which may push them out).
    pinned: dict[str, LedgerEntry]


def plan_ledger_reads(events: Iterable[InputEvent], held: Mapping[str, LedgerEntry]) -> LedgerReads:
    """In one pass over a batch's events that move money: which ledger entries it reads before
    deciding, and which entries it decides from as `held` (the entries in memory) has them.

    Read: the reservations of its statuses, and the settlements of its settling statuses, that
    are not held. A status whose settlement is already written (a priced `read` after its
    priced `delivered`, a duplicate, a priced delivery after a release) must be decided from
    that entry: when it is neither held nor read, the batch's insert finds its key taken and
    the whole batch goes one record at a time (`entry_exists`). A `read` is the common case
    (Meta's webhooks price the `read` too), so its settlement is always read when not held; the
    others' settlements are mostly not written yet, so they are read only when the ledger is
    read for the batch anyway (same `$in`, no extra round trip), else they stay optimistic and
    keep the fallback for the rare one. Only a message's first settling status in the batch
    needs it: the later ones find what the first decided.

    Pinned: the held entries among its statuses' reservations and every event's stored entries
    (settlements, late charges, a duplicate request's reservation). The batch looks them up
    there, not in the bounded memory, which its own reads refill (oldest out first) before it
    decides: a reservation held at planning and pushed out by then would be neither held nor
    read, and its delivery ignored, its credit left reserved."""
    reserves: list[str] = []
    likely: list[str] = []  # settlements that are probably written
    others: list[str] = []
    settling: set[str] = set()  # messages with a settling status earlier in the batch
    pinned: dict[str, LedgerEntry] = {}
    for event in events:
        if not isinstance(event, StatusChanged):
            key = entry_key(event)  # a duplicate request's reservation, a top-up's entry
            if (stored := held.get(key)) is not None:
                pinned[key] = stored
            continue
        message_id = event.message_id
        reserve = reserve_key(message_id)
        if (reservation := held.get(reserve)) is None:
            reserves.append(reserve)
        else:
            pinned[reserve] = reservation
        unheld = _pin_settlements(event, held, pinned)
        if message_id not in settling:
            settling.add(message_id)
            (likely if event.status == "read" else others).extend(unheld)
    if not (reserves or likely):
        others = []  # no read for them alone: optimistic
    return LedgerReads(list(dict.fromkeys([*reserves, *likely, *others])), pinned)


def _pin_settlements(
    event: StatusChanged, held: Mapping[str, LedgerEntry], pinned: dict[str, LedgerEntry]
) -> list[str]:
    """Pin the held entries stored for `event` (`stored_entry_keys`: its settle entry and, for
    a priced status, its late charge); return the keys of those to read: a settling status's
    settle entry and late charge, unless the settle entry is held; a held one that is a release
    still leaves the late charge to read (a priced status after it is charged late)."""
    kind = settlement_for(event)
    settle_at = settle_key(event.message_id)
    if (settle := held.get(settle_at)) is not None:
        pinned[settle_at] = settle
    if kind != "charge":
        return [settle_at] if kind is not None and settle is None else []
    late_at = late_charge_key(event.message_id)
    if (late := held.get(late_at)) is not None:
        pinned[late_at] = late
    if settle is None:
        return [settle_at, late_at]
    return [late_at] if settle.kind == "release" and late is None else []


def decide(
    balance: Balance,
    event: InputEvent,
    position: Position,
    *,
    rate_card: RateCard,
    now: int,
    reservation: LedgerEntry | None = None,
    existing: LedgerEntry | None = None,
    top_up_key: bytes = b"",
) -> Decision:
    """Decide what `event`, read at `position`, does to `balance`.

    `reservation` is the message's reserve entry (for a StatusChanged); `existing` is the entry
    already stored under `entry_key(event)`, when there is one, and for a priced status whose
    settle entry is a release applied before, the entry stored under its late-charge key, if
    any (the shell looks there next, see `late_charge_key`). A new top-up must be signed
    under `top_up_key` (the admin tool's key): anything else is refused (InvalidRequest
    `unsigned_top_up`: dead-lettered, no money moves).
    """
    if balance.has_applied(position.source, position.offset):
        outputs = (
            _outputs_of(existing, event, position, balance.currency) if existing is not None else ()
        )
        return Decision("replayed", outputs=outputs)
    if existing is not None:
        if _billed_after_release(balance, existing, event):
            assert isinstance(event, StatusChanged)
            return _late_charge(balance, event, position, rate_card, now, reservation)
        return _resume_or_skip(balance, existing, event, position)
    if isinstance(event, SendRequested):
        return _reserve(balance, event, position, rate_card, now)
    if isinstance(event, StatusChanged):
        return _settle(balance, event, position, rate_card, now, reservation)
    return _top_up(balance, event, position, now, top_up_key)


def _resume_or_skip(
    balance: Balance, existing: LedgerEntry, event: InputEvent, position: Position
) -> Decision:
    if balance.has_applied(existing.source, existing.source_offset):
        # The same request again (e.g. republished after a producer crash): already counted.
        return Decision(
            "duplicate", outputs=_outputs_of(existing, event, position, balance.currency)
        )
    # Our own earlier attempt wrote the entry, then stopped before the balance: finish it.
    return Decision(
        _OUTCOME_OF_KIND[existing.kind],
        balance=_apply(balance, existing, position),
        outputs=_outputs_of(existing, event, position, balance.currency),
        applied=existing,
    )


def _billed_after_release(balance: Balance, existing: LedgerEntry, event: InputEvent) -> bool:
    """A regular-priced delivery or read of a message whose reservation an earlier status
    released (and the balance applied it): Meta bills it, so billing charges it (late)."""
    return (
        isinstance(event, StatusChanged)
        and settlement_for(event) == "charge"
        and existing.kind == "release"
        and existing.key == settle_key(event.message_id)
        and balance.has_applied(existing.source, existing.source_offset)
    )


def _late_charge(
    balance: Balance,
    event: StatusChanged,
    position: Position,
    rate_card: RateCard,
    now: int,
    reservation: LedgerEntry | None,
) -> Decision:
    if reservation is None or reservation.kind != "reserve":
        return Decision("ignored")
    decision = _settle(balance, event, position, rate_card, now, reservation)
    [charge] = decision.entries
    entry = replace(charge, key=late_charge_key(event.message_id), reserved_amount=0)
    return _record(balance, entry, event, position, now)


def _reserve(
    balance: Balance, event: SendRequested, position: Position, rate_card: RateCard, now: int
) -> Decision:
    price = rate_card.price(event.category, event.recipient_region)
    reason = ""
    if 0 < balance.in_flight_limit <= balance.in_flight:
        reason = TOO_MANY_IN_FLIGHT
    elif balance.available < price:
        reason = INSUFFICIENT_CREDIT
    entry = LedgerEntry(
        key=reserve_key(event.message_id),
        account_id=event.account_id,
        kind="reject" if reason else "reserve",
        reason=reason,
        amount=price,
        at=now,
        source=position.source,
        source_offset=position.offset,
        source_event_id=event.event_id,
        message_id=event.message_id,
        category=event.category,
        region=event.recipient_region,
        rate_card_version=rate_card.version,
    )
    return _record(balance, entry, event, position, now)


def _settle(
    balance: Balance,
    event: StatusChanged,
    position: Position,
    rate_card: RateCard,
    now: int,
    reservation: LedgerEntry | None,
) -> Decision:
    settlement = settlement_for(event)
    if (
        settlement is None
        or reservation is None
        or reservation.kind != "reserve"
        or reservation.account_id != event.account_id
    ):
        return Decision("ignored")
    common: dict[str, Any] = {
        "key": settle_key(event.message_id),
        "account_id": event.account_id,
        "at": now,
        "source": position.source,
        "source_offset": position.offset,
        "source_event_id": event.event_id,
        "message_id": event.message_id,
        "reserved_amount": reservation.amount,
        "region": reservation.region,
    }
    if settlement == "charge":
        # Meta's category decides the price (e.g. a utility template it billed as marketing).
        category = (event.pricing.category if event.pricing else "") or reservation.category
        entry = LedgerEntry(
            kind="charge",
            amount=rate_card.price(category, reservation.region),
            category=category,
            rate_card_version=rate_card.version,
            **common,
        )
    else:
        entry = LedgerEntry(
            kind="release",
            amount=reservation.amount,
            category=reservation.category,
            rate_card_version=reservation.rate_card_version,
            **common,
        )
    return _record(balance, entry, event, position, now)


def _top_up(
    balance: Balance, event: TopUpRequested, position: Position, now: int, key: bytes
) -> Decision:
    if not top_up_signature_valid(event, key):
        raise InvalidRequest(
            "a top-up must be signed by the admin tool's key (HALA_TOPUP_SIGNING_KEY)",
            code="unsigned_top_up",
            details={"event_id": event.event_id, "signed": bool(event.signature)},
        )
    if event.amount <= 0:
        raise InvalidRequest(
            "a top-up adds a positive amount",
            code="invalid_top_up",
            details={"event_id": event.event_id},
        )
    entry = LedgerEntry(
        key=topup_key(event.event_id),
        account_id=event.account_id,
        kind="topup",
        amount=event.amount,
        at=now,
        source=position.source,
        source_offset=position.offset,
        source_event_id=event.event_id,
    )
    return _record(balance, entry, event, position, now)


def _record(
    balance: Balance, entry: LedgerEntry, event: InputEvent, position: Position, now: int
) -> Decision:
    available, _ = _moved(balance, entry)
    if entry.kind == "topup":
        entry = replace(entry, available_after=available)
    if balance.low_balance_armed and available < balance.low_balance_threshold:
        entry = replace(
            entry,
            low_balance=LowBalanceNotice(
                crossing=balance.low_balance_crossings + 1,
                available=available,
                threshold=balance.low_balance_threshold,
                occurred_at=now,
            ),
        )
    return Decision(
        _OUTCOME_OF_KIND[entry.kind],
        balance=_apply(balance, entry, position),
        entries=(entry,),
        outputs=_outputs_of(entry, event, position, balance.currency),
        applied=entry,
    )


def _moved(balance: Balance, entry: LedgerEntry) -> tuple[int, int]:
    """(available, reserved) after the entry's movement."""
    available, reserved = balance.available, balance.reserved
    if entry.kind == "reserve":
        return available - entry.amount, reserved + entry.amount
    if entry.kind == "charge":  # the reservation comes back, Meta's price goes out
        return available + entry.reserved_amount - entry.amount, reserved - entry.reserved_amount
    if entry.kind == "release":
        return available + entry.reserved_amount, reserved - entry.reserved_amount
    if entry.kind == "topup":
        return available + entry.amount, reserved
    return available, reserved


def _apply(balance: Balance, entry: LedgerEntry, position: Position) -> Balance:
    available, reserved = _moved(balance, entry)
    armed, crossings = balance.low_balance_armed, balance.low_balance_crossings
    if entry.low_balance is not None:
        armed, crossings = False, entry.low_balance.crossing
    elif available >= balance.low_balance_threshold:
        armed = True
    applied = dict(balance.applied)
    for source, offset in ((entry.source, entry.source_offset), (position.source, position.offset)):
        applied[source] = max(applied.get(source, -1), offset)
    in_flight = balance.in_flight
    if entry.kind == "reserve":
        in_flight += 1
    elif closes_reservation(entry):
        # Never below 0: reservations made before the count was kept settle too.
        in_flight = max(0, in_flight - 1)
    return replace(
        balance,
        available=available,
        reserved=reserved,
        low_balance_armed=armed,
        low_balance_crossings=crossings,
        applied=applied,
        in_flight=in_flight,
    )


def _outputs_of(
    entry: LedgerEntry, event: InputEvent, position: Position, currency: str
) -> tuple[Output, ...]:
    """What an entry says to the rest of the platform. Derived from the entry alone (and the
    event that caused it): a replay or a duplicate publishes the same events, same ids."""
    outputs: list[Output] = []
    if isinstance(event, SendRequested) and entry.kind == "reserve":
        outputs.append(
            Output(
                SEND_APPROVED,
                SendApproved(
                    **msgspec.structs.asdict(event),
                    reserved_amount=entry.amount,
                    rate_card_version=entry.rate_card_version,
                ),
            )
        )
    elif isinstance(event, SendRequested) and entry.kind == "reject":
        outputs.append(
            Output(
                STATUS_CHANGED,
                StatusChanged(
                    event_id=f"{event.message_id}:rejected",
                    message_id=event.message_id,
                    account_id=event.account_id,
                    status="rejected",
                    occurred_at=entry.at,
                    source="billing",
                    phone_number_id=event.phone_number_id,
                    recipient_region=event.recipient_region,
                    reason=entry.reason or INSUFFICIENT_CREDIT,
                ),
            )
        )
    elif (
        isinstance(event, TopUpRequested)
        and entry.kind == "topup"
        and entry.available_after is not None
    ):  # entries from before it was kept: none
        outputs.append(
            Output(
                BALANCE_TOPPED_UP,
                BalanceToppedUp(
                    event_id=topped_up_event_id(entry.source_event_id),
                    account_id=entry.account_id,
                    amount=entry.amount,
                    available=entry.available_after,
                    currency=currency,
                    note=event.note,
                    occurred_at=entry.at,
                ),
            )
        )
    # The alert belongs to the event that caused the fall, not to later duplicates of it.
    notice = entry.low_balance
    if notice is not None and (entry.source, entry.source_offset) == (
        position.source,
        position.offset,
    ):
        outputs.append(
            Output(
                LOW_BALANCE_ALERTED,
                LowBalanceAlerted(
                    event_id=f"{entry.account_id}:low:{notice.crossing}",
                    account_id=entry.account_id,
                    available=notice.available,
                    threshold=notice.threshold,
                    occurred_at=notice.occurred_at,
                ),
            )
        )
    return tuple(outputs)


# --- reservations that never settle -----------------------------------------------------------

# Meta keeps trying to deliver a message for up to 30 days (its TTL; 10 minutes for
# authentication templates) and then drops it unbilled; it re-sends a webhook it could not
# deliver for up to 7 days. A reservation with no final status after both is credit held for a
# message that will never be billed.
META_TTL_MS = 30 * 86_400_000
WEBHOOK_RETRY_MS = 7 * 86_400_000
RESERVATION_HORIZON_MS = META_TTL_MS + WEBHOOK_RETRY_MS
NO_FINAL_STATUS = "no_final_status"


@dataclass(frozen=True)
class OpenReservation:
    """A reserve entry, and whether its message has been settled."""

    account_id: str
    message_id: str
    at: int
    settled: bool


def overdue_expiries(
    reservations: Iterable[OpenReservation], *, now: int, horizon_ms: int = RESERVATION_HORIZON_MS
) -> list[StatusChanged]:
    """The `expired` status to publish for each reservation older than the horizon that no
    status has settled. Billing's own agent applies it like any other (a release, by the one
    writer of the account); a priced status that still comes later is charged late, as Meta
    bills it (see the module's docstring)."""
    return [
        StatusChanged(
            event_id=f"{r.message_id}:expired:billing",
            message_id=r.message_id,
            account_id=r.account_id,
            status="expired",
            occurred_at=now,
            source="billing",
            reason=NO_FINAL_STATUS,
        )
        for r in reservations
        if not r.settled and r.at <= now - horizon_ms
    ]
