"""Kafka helpers: durable producers, manual-commit consumers, topics, and the dead-letter rule.

Every client connects from a `KafkaConfig` (address, SASL_SSL credentials of the process's own
principal, the broker's CA), built by `ServiceSettings.kafka`: `make_producer`, `make_consumer`
and `make_admin` here, librdkafka's options for shared/rdkafka_producer.py, faust's
credentials in billing. Services create no topics (`wait_for_topics`): the set-up principal
does (tools/kafka_setup.py), with the ACLs of shared/kafka_access.py.

The consumer loop is shared/pipeline.py (decode -> batch -> effect -> commit offset + 1, the
commit after the effect): status, notify and guard run on it, the sender commits out of order
with shared/pipeline_offsets.py, billing is a faust agent. This module holds the rule they all
keep, so that no record can stop a consumer (`attempt_record`, `DeadLetters`, `RetryPolicy`,
`DeadLetterGuard`):

- a record that can never succeed (PermanentError) goes to `<topic>.dlq` at once;
- a record whose handling raises anything else that is not a TransientError (a bug, a shape
  nobody foresaw) is tried `RetryPolicy.unexpected_attempts` times (default 3, short doubling
  backoff), then goes to `<topic>.dlq`;
- a dead letter carries the original key, value and headers, plus `error_type`,
  `error_reason` (permanent | unexpected), `error_detail`, `error_traceback` (its last 8 KiB),
  `source_topic`, `source_partition`, `source_offset`, `service`, `attempts` and
  `dead_lettered_at` (ms); the offset is committed only once the broker acknowledged the dead
  letter, and the partition moves on (`hala dlq replay` sends it back once fixed);
- a TransientError (a dependency unavailable) is retried in place with capped backoff; when
  the budget runs out the process exits without committing and is restarted: an outage is not
  the record's fault, and nothing is skipped;
- many dead letters in a row (`DeadLetterGuard`) look like a bad deploy: the consumer stops
  instead of draining its topic into the DLQ.

Exiting on a bug instead would re-read the same record after every restart: one bad record
would become a dead pipeline. `hala_dead_letters_total{service, reason}` counts dead letters
and the DeadLettersReceived alert fires on any.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context
from pydantic import SecretStr

from shared.dead_letters import (
    DLQ_HEADERS,
    ERROR_DETAIL_LIMIT,
    ERROR_TRACEBACK_LIMIT,
    PERMANENT,
    UNEXPECTED,
    Failure,
    dead_letter_headers,
    failure_reason,
)
from shared.errors import (
    DependencyUnavailable,
    PermanentError,
    ServiceError,
    TransientError,
)
from shared.logging import get_logger
from shared.messages import ALL_TOPICS, WEBHOOK_MAX_MESSAGE_BYTES, Topic
from shared.metrics import CONSUMER_LAG, DEAD_LETTERS, RECORDS_HANDLED

log = get_logger(__name__)

__all__ = [
    "DLQ_HEADERS",
    "ERROR_DETAIL_LIMIT",
    "ERROR_TRACEBACK_LIMIT",
    "PERMANENT",
    "UNEXPECTED",
    "Failure",
    "dead_letter_headers",
    "failure_reason",
]


def topic_name(topic: Topic[Any] | str, prefix: str = "") -> str:
    return prefix + (topic if isinstance(topic, str) else topic.name)


# --- how every client connects: one place for the broker's address and security ------------

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"]


@dataclass(frozen=True)
class KafkaConfig:
    """The broker's address and this process's credentials. Every Kafka client of the platform
    (aiokafka producers, consumers and admin clients here, librdkafka in
    shared/rdkafka_producer.py, billing's faust app) is configured from one of these, built by
    `ServiceSettings.kafka` from the settings every service shares (KAFKA_*)."""

    bootstrap_servers: str
    security_protocol: SecurityProtocol
    sasl_mechanism: SaslMechanism = "SCRAM-SHA-512"
    username: str | None = None
    password: SecretStr | None = field(default=None, repr=False)
    # The CA that signed the broker's certificate (PEM); None: the system's trust store.
    ca_file: str | None = None

    def __post_init__(self) -> None:
        if self.uses_sasl and not (
            self.username and self.password and self.password.get_secret_value()
        ):
            raise ValueError(f"{self.security_protocol} needs a SASL user name and password")

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def as_user(self, username: str, password: SecretStr | str) -> KafkaConfig:
        """The same broker, another principal."""
        secret = password if isinstance(password, SecretStr) else SecretStr(password)
        return replace(self, username=username, password=secret)

    @functools.cached_property
    def ssl_context(self) -> ssl.SSLContext | None:
        """One context per config, shared by its clients (hostname checked, TLS 1.2+)."""
        if not self.uses_tls:
            return None
        context: ssl.SSLContext = create_ssl_context(cafile=self.ca_file)
        return context

    def aiokafka_options(self) -> dict[str, Any]:
        """Keyword arguments for AIOKafkaProducer / AIOKafkaConsumer / AIOKafkaAdminClient."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
        }
        if self.uses_tls:
            options["ssl_context"] = self.ssl_context
        if self.uses_sasl:
            assert self.password is not None
            options.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.username,
                sasl_plain_password=self.password.get_secret_value(),
            )
        return options

    def rdkafka_options(self) -> dict[str, Any]:
        """librdkafka (confluent-kafka) configuration properties."""
        options: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol.lower(),
            # `localhost` must never resolve to ::1: brokers bind IPv4
            "broker.address.family": "v4",
        }
        if self.uses_tls and self.ca_file:
            options["ssl.ca.location"] = self.ca_file
        if self.uses_sasl:
            assert self.password is not None
            options.update(
                {
                    "sasl.mechanism": self.sasl_mechanism,
                    "sasl.username": self.username,
                    "sasl.password": self.password.get_secret_value(),
                }
            )
        return options


def make_producer(kafka: KafkaConfig, **overrides: Any) -> AIOKafkaProducer:
    """A producer whose acknowledged writes survive a broker restart and are never duplicated
    by its own retries (aiokafka's defaults are acks=1 and no idempotence)."""
    options: dict[str, Any] = {
        **kafka.aiokafka_options(),
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 2,
        "request_timeout_ms": 15000,
        # The largest record any topic takes (raw webhooks: Meta's up to 3 MB), not
        # aiokafka's 1 MiB default; each topic's max.message.bytes still bounds its own.
        "max_request_size": WEBHOOK_MAX_MESSAGE_BYTES,
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


def make_consumer(
    kafka: KafkaConfig, group_id: str | None, *topics: str, **overrides: Any
) -> AIOKafkaConsumer:
    """A manual-commit consumer (group_id None: no group, partitions assigned by hand).

    Fetch sizes stay aiokafka's (fetch_max_wait_ms 500, fetch_min_bytes 1): at the pipeline's
    rates a consumer fetches once per record it gets whatever they are, a larger
    fetch_min_bytes would batch only by waiting on every hop of the 202->Meta path, and a
    longer fetch_max_wait_ms delays partitions the sender resumes (bench/README.md, issue 13
    "after")."""
    options: dict[str, Any] = {
        **kafka.aiokafka_options(),
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
        "max_poll_records": 500,
    }
    options.update(overrides)
    return AIOKafkaConsumer(*topics, **options)


def make_admin(kafka: KafkaConfig, **overrides: Any) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**{**kafka.aiokafka_options(), **overrides})


async def group_state(kafka: KafkaConfig, group: str) -> tuple[str, int]:
    """A consumer group's state on the broker ("Stable", "Empty", ...) and its members."""
    admin = make_admin(kafka)
    await admin.start()
    try:
        described = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    for response in described:
        # each group: (error_code, group_id, state, protocol_type, protocol, members, ...)
        for g in response.groups:
            if g[1] == group:
                return str(g[2]), len(g[5])
    return "Dead", 0


async def ensure_topics(
    kafka: KafkaConfig, prefix: str = "", topics: Iterable[Topic[Any]] = ALL_TOPICS
) -> None:
    """Create the platform's topics and their dead-letter topics if missing, each with its
    registry configuration (retention, compaction, record size), and bring the configuration
    of those that exist back to it (idempotent). Needs a principal allowed to create and
    configure topics: the set-up one (tools/kafka_setup.py), never a service's."""
    admin = make_admin(kafka)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted: list[NewTopic] = []
        configs: dict[str, dict[str, str]] = {}
        for topic in topics:
            for name, parts, cfg in (
                (topic.name, topic.partitions, topic.configs()),
                (topic.dlq, 1, topic.dlq_configs()),
            ):
                full = topic_name(name, prefix)
                configs[full] = cfg
                if full not in existing:
                    wanted.append(
                        NewTopic(
                            full, num_partitions=parts, replication_factor=1, topic_configs=cfg
                        )
                    )
        if wanted:
            try:
                await admin.create_topics(wanted)
            except TopicAlreadyExistsError:
                pass  # another process created them first
        await _align_configs(admin, {n: c for n, c in configs.items() if n in existing})
    finally:
        await admin.close()


async def _align_configs(admin: AIOKafkaAdminClient, wanted: dict[str, dict[str, str]]) -> None:
    """Set the registry's configuration on existing topics whose configuration differs (a
    topic created before its retention was declared, or by hand). AlterConfigs replaces a
    topic's whole dynamic configuration, so each topic gets its complete set."""
    if not wanted:
        return
    [described] = await admin.describe_configs(
        [
            ConfigResource(ConfigResourceType.TOPIC, name, {k: None for k in cfg})
            for name, cfg in wanted.items()
        ]
    )
    differ = []
    for error_code, _, _, name, entries in described.resources:
        if error_code:  # gone meanwhile (deleted by a test's clean-up): nothing to align
            continue
        current = {entry[0]: entry[1] for entry in entries}
        cfg = wanted.get(name)
        if cfg is not None and any(current.get(k) != v for k, v in cfg.items()):
            differ.append(ConfigResource(ConfigResourceType.TOPIC, name, dict(cfg)))
    if differ:
        await admin.alter_configs(differ)
        log.info("topic_configs_aligned", topics=len(differ))


class TopicsMissing(RuntimeError):
    """A service's topics do not exist, or its principal may not see them."""


async def wait_for_topics(
    kafka: KafkaConfig, names: Iterable[str], *, deadline_s: float = 60.0, every_s: float = 1.0
) -> None:
    """Wait until every topic in `names` (full names) exists and this principal may see it.
    Services create no topics: the set-up step does (tools/kafka_setup.py, run by infra.sh,
    docker-compose's kafka-setup, the tests and the benches), and a service that starts first
    waits for it. A broker that does not answer yet is waited for too."""
    wanted = set(names)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    missing: set[str] = wanted
    last_error = ""
    while True:
        admin = make_admin(kafka, request_timeout_ms=5000)
        try:
            await admin.start()
            missing = wanted - set(await admin.list_topics())
            last_error = ""
        except (KafkaError, OSError) as exc:
            last_error = f"{type(exc).__name__}: {exc}"
        finally:
            await admin.close()
        if not missing and not last_error:
            return
        if loop.time() > deadline:
            if last_error:
                raise TopicsMissing(
                    f"the broker at {kafka.bootstrap_servers} did not answer "
                    f"as {kafka.username or 'anonymous'}: {last_error}"
                )
            raise TopicsMissing(
                f"topics missing or not visible to {kafka.username or 'this client'}: "
                f"{', '.join(sorted(missing))} (run the set-up: tools/kafka_setup.py)"
            )
        log.warning("kafka_topics_not_ready", missing=len(missing), error=last_error or None)
        await asyncio.sleep(every_s)


async def delete_topics(kafka: KafkaConfig, wanted: Callable[[str], bool]) -> list[str]:
    """Delete the topics whose names `wanted` picks, and return them: tests and benchmarks
    clean up after themselves, since every partition left behind slows the shared broker."""
    admin = make_admin(kafka)
    await admin.start()
    try:
        doomed = [name for name in await admin.list_topics() if wanted(name)]
        if doomed:
            await admin.delete_topics(doomed)
        return doomed
    finally:
        await admin.close()


async def publish(
    producer: AIOKafkaProducer, topic: Topic[Any], event: Any, prefix: str = ""
) -> None:
    """Write an event and wait until the broker acknowledged it (acks=all)."""
    await publish_all(producer, [(topic, event)], prefix)


async def publish_all(
    producer: AIOKafkaProducer,
    events: Sequence[tuple[Topic[Any], Any]],
    prefix: str = "",
    timeout_s: float | None = None,
) -> None:
    """Write events in order and return once the broker acknowledged every one. All are enqueued
    before any is awaited: one broker round trip for a batch instead of one per event. A broker
    that fails or does not answer within `timeout_s` is a transient failure."""
    if not events:
        return

    async def send_all() -> None:
        acks = []
        for topic, event in events:
            key, value = topic.encode(event)
            acks.append(await producer.send(topic_name(topic, prefix), value=value, key=key))
        await asyncio.gather(*acks)

    try:
        async with asyncio.timeout(timeout_s):
            await send_all()
    except (KafkaError, TimeoutError) as exc:
        raise DependencyUnavailable(
            f"kafka unavailable: {type(exc).__name__}", details={"dependency": "kafka"}
        ) from exc


@dataclass(frozen=True)
class RetryPolicy:
    first_delay: float = 0.2
    max_delay: float = 10.0
    # How long a transient failure may last before the process gives up and is restarted.
    budget_seconds: float = 120.0
    # A record whose handling raises neither a PermanentError nor a TransientError (a bug, a
    # shape nobody foresaw) is tried this many times in all, `unexpected_first_delay` apart
    # (doubling), and then goes to the dead-letter topic.
    unexpected_attempts: int = 3
    unexpected_first_delay: float = 0.1


async def retry_transient(
    action: Callable[[], Awaitable[Any]], policy: RetryPolicy, what: str
) -> Any:
    """Run `action`, retrying TransientError with capped exponential backoff."""
    delay = policy.first_delay
    deadline = time.monotonic() + policy.budget_seconds
    while True:
        try:
            return await action()
        except TransientError as exc:
            if time.monotonic() + delay > deadline:
                log.error("transient_retry_budget_exhausted", what=what, error=str(exc))
                raise
            log.warning(
                "transient_error_retrying", what=what, error=str(exc), retry_in_s=round(delay, 2)
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, policy.max_delay)


# --- dead letters (their format is in shared/dead_letters.py) ------------------------


def dlq_topic_of(topic: str) -> str:
    return f"{topic}.dlq"


async def send_to_dlq(
    producer: AIOKafkaProducer,
    record: ConsumerRecord[bytes, bytes],
    error: BaseException,
    *,
    service: str,
    attempts: int = 1,
    now_ms: int | None = None,
) -> None:
    """Write the record's original key, value and headers to `<topic>.dlq` with why and where
    from, and return once the broker acknowledged it. A broker that fails is a transient
    failure (DependencyUnavailable)."""
    headers = dead_letter_headers(
        record.headers,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        failure=Failure(error, attempts),
        service=service,
        now_ms=now_ms if now_ms is not None else time.time_ns() // 1_000_000,
    )
    try:
        await producer.send_and_wait(
            dlq_topic_of(record.topic), value=record.value, key=record.key, headers=headers
        )
    except (KafkaError, TimeoutError) as exc:
        raise DependencyUnavailable(
            f"kafka unavailable: {type(exc).__name__}", details={"dependency": "kafka"}
        ) from exc


class TooManyDeadLetters(RuntimeError):
    """Many dead letters in a row look like a bad deploy, not bad data: stop, don't drain."""


class DeadLetterGuard:
    """Counts dead letters in a row. Once the limit is reached it stays tripped: records being
    handled concurrently then raise instead of writing more dead letters."""

    def __init__(self, limit_in_a_row: int = 50) -> None:
        self.limit = limit_in_a_row
        self.in_a_row = 0
        self.tripped = False

    def record_success(self) -> None:
        self.in_a_row = 0

    def record_dead_letter(self) -> None:
        self.in_a_row += 1
        if self.in_a_row >= self.limit:
            self.tripped = True
            raise TooManyDeadLetters(f"{self.in_a_row} dead letters in a row")

    def check(self) -> None:
        if self.tripped:
            raise TooManyDeadLetters(f"stopped after {self.limit} dead letters in a row")


async def attempt_record(
    action: Callable[[], Awaitable[Any]],
    policy: RetryPolicy,
    what: str,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> Failure | None:
    """Handle one record to its end. None: it succeeded. A Failure: it goes to the DLQ — at
    once for a PermanentError, after `policy.unexpected_attempts` tries for anything else.
    TransientError is retried within the policy's budget and then propagates: a dependency
    outage is not the record's fault, and the caller must not commit."""
    delay = policy.unexpected_first_delay
    attempts = 0
    while True:
        attempts += 1
        try:
            await retry_transient(action, policy, what)
            return None
        except TransientError:
            raise
        except PermanentError as exc:
            return Failure(exc, attempts)
        except Exception as exc:
            if attempts >= policy.unexpected_attempts:
                return Failure(exc, attempts)
            log.warning(
                "unexpected_error_retrying",
                what=what,
                attempt=attempts,
                error=repr(exc),
                retry_in_s=round(delay, 3),
            )
            await sleep(delay)
            delay = min(delay * 2, policy.max_delay)


class DeadLetters:
    """One consumer's dead letters: the write (retried while the broker is unavailable), the
    metric, the log line, and the guard that stops a bad deploy."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        service: str,
        guard: DeadLetterGuard | None = None,
        retry: RetryPolicy = RetryPolicy(),
    ) -> None:
        self._producer = producer
        self.service = service
        self.guard = guard or DeadLetterGuard()
        self._retry = retry

    def success(self) -> None:
        self.guard.record_success()

    async def send(self, record: ConsumerRecord[bytes, bytes], failure: Failure) -> None:
        """Write the dead letter and return once it is durable; then raise TooManyDeadLetters
        if it is one too many in a row (and, once that happened, without writing it)."""
        self.guard.check()
        await retry_transient(
            lambda: send_to_dlq(
                self._producer,
                record,
                failure.error,
                service=self.service,
                attempts=failure.attempts,
            ),
            self._retry,
            "dead_letter",
        )
        reason = failure.reason
        DEAD_LETTERS.labels(service=self.service, reason=reason).inc()
        RECORDS_HANDLED.labels(service=self.service, outcome="dead_lettered").inc()
        fields = {
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "reason": reason,
            "error_type": type(failure.error).__name__,
            "attempts": failure.attempts,
        }
        if isinstance(failure.error, ServiceError):
            log.warning("record_dead_lettered", error_code=failure.error.code, **fields)
        else:
            log.error("record_dead_lettered", exc_info=failure.error, **fields)
        self.guard.record_dead_letter()


async def report_lag_forever(
    consumer: AIOKafkaConsumer, service: str, group: str, interval: float = 5.0
) -> None:
    """Publish consumer lag per partition as a gauge: the partition's end as the consumer's last
    fetch answer gave it (its last stable offset under read_committed) minus the consumer's
    position. Both are already in the consumer's memory: no request to the broker. (Asking the
    group's committed offset of each partition, an OffsetFetch each, and the end offsets every
    5 s was ~3.4 of the broker's 21 requests per message at 50 % of capacity: bench/README.md.)
    The position is what the consumer has read; what it has committed trails it by at most
    its commit interval."""
    while True:
        try:
            for tp in consumer.assignment():
                end = consumer.last_stable_offset(tp)
                if end is None or end < 0:  # read_uncommitted: the high watermark
                    end = consumer.highwater(tp)
                if end is None:
                    continue  # no fetch answered for it yet (nor is its position known)
                lag = max(0, end - await consumer.position(tp))
                CONSUMER_LAG.labels(
                    service=service, group=group, topic=tp.topic, partition=str(tp.partition)
                ).set(lag)
        except KafkaError as exc:  # IllegalStateError: a rebalance took the partition meanwhile
            log.warning("consumer_lag_unavailable", error=str(exc))
        await asyncio.sleep(interval)


async def kafka_ready(producer: AIOKafkaProducer) -> bool:
    """True when the broker answers a metadata request."""
    try:
        async with asyncio.timeout(2):
            await producer.client.fetch_all_metadata()
        return True
    except (KafkaError, TimeoutError, OSError):
        return False
