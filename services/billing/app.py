"""billing's faust app: one agent over send-requested, status-changed and topup-requested.

faust is used with its traps designed around:
- it acks an event even when the agent raises, and when a cancelled agent's stream is closed:
  the agent reads a `noack()` stream and acks each event itself, only once the event is
  finished (written, published, or dead-lettered), and its body never lets an exception escape:
  a bug on one record is retried a few times, then that record goes to the DLQ and the
  partition moves on (see worker.py);
- batches taken fairly, lingering only for what was read already: the agent only moves events
  into `FairIntake`, kept per account (the record's key); one task takes a batch round-robin
  over the accounts waiting (one event per account per turn, each account's in the order read:
  shared/pipeline.py `FairBuffer`), with what faust's stream buffer still holds for the agent
  arriving within `batch_linger_ms` (at least one event, at most `batch_max_records`), applies
  it, and acks. With nothing more read, the batch goes at once: waiting for records not yet
  fetched was pure latency on every send when billing keeps up (records arriving while a
  batch is applied make the next batch larger anyway). So a campaign's thousands of
  records in the intake do not hold another account's record behind them: it goes into the
  next batch. Acks stay in each partition's offset order (`InOrderRelease`): an event applied
  before an earlier one of its partition is acked only once that one is, because faust's
  commit (up to the first offset not acked) steps over a single unacked offset at a
  partition's head. faust's `take()` is not used: it waits `within` from the previous batch,
  not from the first event, and acks the buffered events when its generator is closed (an
  agent stopped by a rebalance mid-batch would commit records never applied);
- back-pressure per partition, not for the whole stream: a partition with `pause_at_records`
  events not yet acked is paused in faust's consumer and resumed at `resume_at_records`
  (shared/pipeline.py `pause_changes`); the agent never waits for a partition within its
  budget, so another account's record behind a campaign's in faust's stream buffer reaches
  the intake at once. faust's own pause would drop the rest of the poll being handed over
  (and its commit would step over the gap): billing's consumer keeps it
  (faust_consumer.py), so a partition holds at most its budget, one fetch and the stream
  buffer;
- what faust hands the agent is bounded too (settings.py `fetch_partition_bytes`): faust hands
  over a whole poll before it polls again, so a large fetch of the campaign's partitions would
  hold another account's newer fetch behind it;
- outputs go through our own idempotent producer and are awaited, never through faust's
  `topic.send()`, which defers sends attached to the current event until the commit;
- processing_guarantee at_least_once; faust's web server off (it binds 0.0.0.0 and serves table
  data): /healthz, /readyz and /metrics are served by a small aiohttp site on loopback;
- a small stream buffer and frequent commits (settings.py): a kill -9 only means redelivery of
  what was not committed yet, which is idempotent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any, Protocol

import faust
from faust.types import EventT
from mode import Service

from services.billing.accounts import AccountThresholds, MongoErasedAccounts
from services.billing.balances import Balances
from services.billing.checkpoints import MongoCheckpoints
from services.billing.faust_consumer import install as install_consumer
from services.billing.ledger import Ledger
from services.billing.publisher import KafkaPublisher, Record
from services.billing.reconcile import Reconciler
from services.billing.settings import BillingSettings
from services.billing.sweeper import ReservationSweeper
from services.billing.worker import INPUT_TOPICS, SERVICE, BillingWorker
from shared.clock import SystemClock
from shared.collections import LEDGER, ensure_indexes
from shared.http import make_ops_app, start_site
from shared.kafka import KafkaConfig, kafka_ready, make_producer, topic_name
from shared.logging import get_logger
from shared.metrics import CONSUMER_LAG
from shared.mongo import make_client, mongo_ready
from shared.pipeline import BatchPolicy, FairBuffer, pause_changes
from shared.pipeline_offsets import InOrderRelease
from shared.pricing import load_rate_card
from shared.renewing_producer import renewing_producer
from shared.runtime import start_with_retry, wait_for_own_topics

log = get_logger(SERVICE)

LAG_REPORT_INTERVAL_S = 10.0


class BillingRuntime(Service):
    """The connections billing's agent uses. faust starts user services after its consumer, so
    the agent and the timers wait for `ready` before their first use of them."""

    def __init__(self, settings: BillingSettings, **kwargs: Any) -> None:
        self.settings = settings
        self.ready = asyncio.Event()
        self.worker: BillingWorker | None = None
        self.reconciler: Reconciler | None = None
        self.sweeper: ReservationSweeper | None = None
        self._producer: Any = None
        self._mongo: Any = None
        self._ops_runner: Any = None
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        settings = self.settings
        await wait_for_own_topics(settings, SERVICE)
        # Clients are created here: aiokafka binds to the running loop at construction.
        # No linger: a batch's outputs are all enqueued before any is awaited, so waiting for
        # more would only add its delay to every batch.
        # Replaced by a new one when the broker no longer accepts it (a lost producer id after
        # a broker restart: shared/renewing_producer.py).
        self._producer = renewing_producer(
            lambda: make_producer(settings.kafka, linger_ms=0), start_with_retry
        )
        await self._producer.start()
        self._mongo = make_client(
            settings.mongodb_url,
            timeout_ms=settings.mongodb_timeout_ms,
            **settings.mongo_credentials(),
        )
        db = self._mongo[settings.mongodb_database]
        await ensure_indexes(db, LEDGER)
        balances, ledger = Balances(db), Ledger(db)
        publisher = KafkaPublisher(self._producer, settings.topic_prefix)
        self.worker = BillingWorker(
            balances=balances,
            ledger=ledger,
            publisher=publisher,
            rate_card=load_rate_card(),
            clock=SystemClock(),
            topic_prefix=settings.topic_prefix,
            low_balance_threshold=settings.low_balance_threshold,
            retry_first_delay_s=settings.retry_first_delay_s,
            retry_max_delay_s=settings.retry_max_delay_s,
            reservation_cache_size=settings.reservation_cache_size,
            balance_cache_size=settings.balance_cache_size,
            thresholds=AccountThresholds(db),
            threshold_refresh_s=settings.threshold_refresh_s,
            top_up_key=settings.topup_key_bytes(),
            max_in_flight=settings.max_in_flight,
        )
        checkpoints = MongoCheckpoints(db)
        self.reconciler = Reconciler(
            ledger,
            balances,
            SystemClock(),
            checkpoints,
            erased=MongoErasedAccounts(db),
            page_size=settings.reconcile_page_size,
            settle_margin_ms=int(settings.reconcile_settle_margin_s * 1000),
            max_duty=settings.reconcile_max_duty,
        )
        self.sweeper = ReservationSweeper(
            ledger,
            publisher,
            SystemClock(),
            checkpoints,
            horizon_ms=int(settings.reservation_horizon_s * 1000),
            page_size=settings.sweep_page_size,
        )
        mongo = self._mongo
        checks = {
            "kafka": lambda: kafka_ready(self._producer),
            "mongodb": lambda: mongo_ready(mongo),
        }
        self._ops_runner = await start_site(
            make_ops_app(SERVICE, checks), settings.ops_host, settings.ops_port
        )
        self.ready.set()
        log.info("service_started", ops_port=settings.ops_port)

    def forget_balances(self) -> None:
        """Partitions moved (or may have): balances held in memory are no longer known to be
        the stored ones."""
        if self.worker is not None:
            self.worker.forget_balances()

    async def on_stop(self) -> None:
        if self._ops_runner is not None:
            await self._ops_runner.cleanup()
        if self._producer is not None:
            await self._producer.stop()
        if self._mongo is not None:
            await self._mongo.close()
        log.info("service_stopped")


def consumer_group(settings: BillingSettings) -> str:
    """faust's app id is its consumer group: prefixed like the topics (see ServiceSettings)."""
    return settings.topic_prefix + settings.faust_app_id


def broker_credentials(kafka: KafkaConfig) -> faust.types.auth.CredentialsT | None:
    """faust's form of the service's Kafka credentials (shared/kafka.py KafkaConfig). faust's
    SASLCredentials default to PLAIN and, without an SSL context, to SASL_PLAINTEXT: both are
    given explicitly."""
    if kafka.uses_sasl:
        assert kafka.password is not None
        return faust.SASLCredentials(
            username=kafka.username,
            password=kafka.password.get_secret_value(),
            ssl_context=kafka.ssl_context,
            mechanism=kafka.sasl_mechanism,
        )
    if kafka.uses_tls:
        return faust.SSLCredentials(kafka.ssl_context)
    return None


def create_app(settings: BillingSettings) -> tuple[faust.App, BillingRuntime]:
    kafka = settings.kafka
    app = faust.App(
        consumer_group(settings),
        broker=f"kafka://{kafka.bootstrap_servers}",
        broker_credentials=broker_credentials(kafka),
        store=settings.faust_store,
        datadir=str(Path(settings.faust_datadir) / f"{consumer_group(settings)}-data"),
        processing_guarantee="at_least_once",
        web_enabled=False,
        topic_partitions=6,
        topic_allow_declare=False,  # topics come from shared.messages via ensure_topics
        topic_disable_leader=True,  # no on_leader work: its internal topic is not needed
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        stream_buffer_maxsize=settings.stream_buffer_maxsize,
        consumer_max_fetch_size=settings.fetch_partition_bytes,
        broker_commit_every=settings.commit_every,
        broker_commit_interval=settings.commit_interval_s,
        broker_session_timeout=settings.session_timeout_s,
    )
    # Before the topics below build faust's transport: billing's consumer pauses partitions
    # without dropping what was fetched for them (faust_consumer.py).
    install_consumer(app, settings.fetch_max_wait_ms)
    runtime = BillingRuntime(settings)
    app.service(runtime)  # type: ignore[arg-type]

    # Raw bytes in: each record is decoded by its own shared Topic, and a record that does not
    # decode goes to the DLQ byte for byte instead of failing inside faust.
    inputs = app.topic(
        *(topic_name(t, settings.topic_prefix) for t in INPUT_TOPICS),
        value_type=bytes,
        value_serializer="raw",
        key_serializer="raw",
    )

    @app.agent(inputs, name="billing", concurrency=1)
    async def billing(stream: faust.StreamT[bytes]) -> None:
        await runtime.ready.wait()
        worker = runtime.worker
        assert worker is not None
        acked_by_us = stream.noack()
        intake = FairIntake(
            settings.partition_budget(), app.consumer, upstream=_buffered(acked_by_us)
        )
        applier = asyncio.create_task(
            _apply_batches(
                worker,
                acked_by_us,
                intake,
                settings.batch_max_records,
                settings.batch_linger_ms / 1000,
            )
        )
        try:
            async for event in acked_by_us.events():
                await intake.put(event, applier)
        finally:
            applier.cancel()
            with suppress(asyncio.CancelledError):
                await applier

    # billing holds each balance in memory while it owns the account's partitions (worker.py):
    # whatever the rebalance, the next batch reads every balance from the database again.
    # faust sends `revoked` only once the events in flight are acked, `assigned` after it.
    @app.on_partitions_revoked.connect
    async def forget_on_revoke(_app: faust.App, _revoked: Any, **_: Any) -> None:
        runtime.forget_balances()

    @app.on_partitions_assigned.connect
    async def forget_on_assign(_app: faust.App, _assigned: Any, **_: Any) -> None:
        runtime.forget_balances()

    async def run_pass(job: Any, failure_event: str) -> None:
        try:
            await job.run_once()
        except Exception as exc:  # a timer that raises never runs again
            log.warning(failure_event, error=repr(exc))

    @app.timer(interval=settings.reconcile_interval_s, name="billing_reconcile")
    async def reconcile() -> None:
        await runtime.ready.wait()
        await run_pass(runtime.reconciler, "ledger_reconcile_failed")

    @app.timer(interval=settings.sweep_interval_s, name="billing_sweep")
    async def sweep() -> None:
        await runtime.ready.wait()
        await run_pass(runtime.sweeper, "reservation_sweep_failed")

    group = consumer_group(settings)

    @app.timer(interval=LAG_REPORT_INTERVAL_S, name="billing_consumer_lag")
    async def report_lag() -> None:
        # What faust's monitor already tracks from its fetches and commits: no broker call.
        ends = dict(app.monitor.tp_end_offsets)
        committed = app.monitor.tp_committed_offsets
        for tp, end in ends.items():
            CONSUMER_LAG.labels(
                service=SERVICE, group=group, topic=tp.topic, partition=str(tp.partition)
            ).set(max(0, end - committed.get(tp, 0)))

    return app, runtime


class Pauser(Protocol):
    """What FairIntake calls of faust's consumer (faust_consumer.BillingConsumer)."""

    def assignment(self) -> set[Any]: ...

    def pause_partitions(self, tps: Iterable[Any]) -> None: ...

    def resume_partitions(self, tps: Iterable[Any]) -> None: ...


class FairIntake:
    """The events between faust's stream and the batches, taken round-robin over the accounts
    (record keys) waiting, acked in each partition's offset order. Back-pressure is per
    partition: a partition with `policy.pause_at` events not yet acked (waiting, in a batch,
    or applied and waiting for an earlier event of their partition) is paused in faust's
    consumer, and resumed once down to `policy.resume_at`; `put` never waits for a partition
    within its budget, so the stream goes on to the other partitions' events. A paused
    partition still hands over what was fetched for it before the pause (at most one fetch,
    plus what is in faust's stream buffer: faust_consumer.py), so each partition holds at most
    its budget, one fetch and the stream buffer. Should pausing fail to stop a partition,
    `put` waits (blocking the stream, as before per-partition pausing) once it holds
    `guard_factor` budgets. The decisions are the shared pure `FairBuffer`, `pause_changes`
    (shared/pipeline.py) and `InOrderRelease` (shared/pipeline_offsets.py); this shell only
    calls faust and waits."""

    guard_factor = 4

    def __init__(
        self, policy: BatchPolicy, consumer: Pauser, upstream: Callable[[], int] | None = None
    ) -> None:
        self._policy = policy
        self._consumer = consumer
        # Events read and not yet handed to the intake (faust's stream buffer for the agent);
        # None: not known, so a batch lingers its whole window.
        self._upstream = upstream
        self._waiting: FairBuffer[bytes | None, EventT] = FairBuffer()
        self._release: InOrderRelease[Any, EventT] = InOrderRelease()
        self._held: dict[Any, int] = {}  # per partition: events not yet acked
        self._paused: set[Any] = set()
        self._changed = asyncio.Event()  # an event arrived or one was released

    def __len__(self) -> int:
        return len(self._waiting)

    @property
    def paused(self) -> frozenset[Any]:
        return frozenset(self._paused)

    def held(self, tp: Any) -> int:
        return self._held.get(tp, 0)

    async def put(self, event: EventT, applier: asyncio.Task[None] | None = None) -> None:
        """Add the event (the task that takes from here must still be running: if it has
        ended, a bug, its error is raised); pause its partition if that fills its budget."""
        if applier is not None and applier.done():
            applier.result()  # raises what ended it
            raise RuntimeError("billing's batch applier stopped")
        message = event.message
        tp = message.tp
        guard = self._policy.pause_at * self.guard_factor
        while self._held.get(tp, 0) >= guard:
            await self._wait_for_change(applier)
        try:
            self._release.track(tp, message.offset, event)
        except ValueError:
            # The partition was read again from an earlier offset (faust seeks back to the
            # committed offset after a rebalance): what is tracked for it is read again too.
            self._release.forget({tp})
            self._held[tp] = 0
            self._release.track(tp, message.offset, event)
        held = self._held[tp] = self._held.get(tp, 0) + 1
        self._waiting.add(message.key, event)
        self._changed.set()
        if held >= self._policy.pause_at and tp not in self._paused:
            self._steer()

    async def _wait_for_change(self, applier: asyncio.Task[None] | None) -> None:
        self._changed.clear()
        waiting = asyncio.ensure_future(self._changed.wait())
        others = {waiting} if applier is None else {waiting, applier}
        await asyncio.wait(others, return_when=asyncio.FIRST_COMPLETED)
        if not waiting.done():
            waiting.cancel()
            assert applier is not None
            applier.result()  # raises what ended it
            raise RuntimeError("billing's batch applier stopped")

    def _steer(self) -> None:
        """Pause the partitions over their budget, resume those down to the lower mark."""
        assigned = self._consumer.assignment()
        to_pause, to_resume = pause_changes(self._held, self._paused, assigned, self._policy)
        if to_pause:
            self._consumer.pause_partitions(to_pause)
            self._paused |= to_pause
        if to_resume:
            # A partition no longer assigned is not resumed in faust (that would make it
            # active again): faust dropped it from its paused ones when it was revoked.
            if still_ours := to_resume & assigned:
                self._consumer.resume_partitions(still_ours)
            self._paused -= to_resume

    async def take(self, most: int, linger_s: float) -> list[EventT]:
        """At least one event, at most `most`: what waits, and what arrives within `linger_s`
        of the first while more has been read (a batch pays a few database round trips
        whatever its size, so events already read are worth their few loop turns), one
        account per turn. Nothing more read: no wait, since records not fetched yet may be
        anywhere from a millisecond to a minute away."""
        while not self._waiting:
            self._changed.clear()
            await self._changed.wait()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + linger_s
        while len(self._waiting) < most and self._more_read():
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._changed.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._changed.wait()
            except TimeoutError:
                break
        return self._waiting.take(most)

    def _more_read(self) -> bool:
        return self._upstream is None or self._upstream() > 0

    def finished(self, events: Sequence[EventT]) -> list[EventT]:
        """These events are applied (or dead-lettered): the events that may now be acked, in
        their partitions' offset order. A paused partition down to its lower mark is
        resumed."""
        released: list[EventT] = []
        for event in events:
            released.extend(self._release.finish(event.message.tp, event.message.offset))
        for event in released:
            tp = event.message.tp
            self._held[tp] -= 1
        if released:
            self._changed.set()
            if self._paused:
                self._steer()
        return released


async def _apply_batches(
    worker: BillingWorker,
    stream: faust.StreamT[bytes],
    intake: FairIntake,
    batch_max: int,
    linger_s: float = 0.0,
) -> None:
    """Apply batches taken fairly from `intake`, then ack what they let through. Each record
    ends applied or dead-lettered (worker.py) before it is acked."""
    while True:
        batch = await intake.take(batch_max, linger_s)
        records = [_record(event) for event in batch]
        try:
            await worker.handle_batch(records)  # never raises
        except Exception as exc:
            # A bug outside the worker's guarded paths: apply them again one at a time
            # (idempotent by offset), each to its effect or its dead letter.
            log.error("billing_batch_failed", records=len(records), exc_info=exc)
            worker.forget_balances()
            for record in records:
                await worker.handle(record)
        for event in intake.finished(batch):
            await stream.ack(event)


def _buffered(stream: faust.StreamT[bytes]) -> Callable[[], int]:
    """How many events faust's stream buffer holds for the agent (its channel's queue)."""
    queue = stream.channel.queue  # type: ignore[attr-defined]
    return queue.qsize  # type: ignore[no-any-return]


def _record(event: EventT) -> Record:
    message = event.message
    return Record(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value,
        headers=_headers(message.headers),
        timestamp=int(message.timestamp * 1000) if message.timestamp else 0,
    )


def _headers(headers: Any) -> tuple[tuple[str, bytes], ...]:
    if not headers:
        return ()
    items = headers.items() if isinstance(headers, dict) else headers
    return tuple((str(k), bytes(v or b"")) for k, v in items)
