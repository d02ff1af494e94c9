"""Webhook intake: signature over the raw bytes, the verification handshake, and the HTTP
endpoint with a fake publisher (publish before 200, nothing published for a refused POST)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator

import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiokafka.errors import KafkaConnectionError
from prometheus_client import REGISTRY

from services.status import core
from services.status.app import create_app
from services.status.handlers import WebhookConfig
from services.status.publisher import KafkaPublisher
from shared.clock import FakeClock
from shared.errors import DependencyUnavailable, InvalidRequest
from shared.messages import WEBHOOK_RECEIVED, WebhookReceived
from tests.unit.status.fakes import FakePublisher
from tests.unit.status.meta_examples import APP_SECRET, BATCHED_STATUSES, WABA_ID, sign

VERIFY_TOKEN = "unit-verify-token"


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --- signature ---------------------------------------------------------------------------------


def test_signature_over_the_raw_bytes_is_accepted() -> None:
    assert core.signature_is_valid(BATCHED_STATUSES, sign(BATCHED_STATUSES), APP_SECRET)


def test_signature_is_checked_over_escaped_non_ascii_bytes_not_over_reserialised_json() -> None:
    # Meta escapes non-ASCII, '@' and '/'; re-serialising the parsed JSON changes the bytes.
    raw = (
        b'{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":'
        b'"messages","value":{"text":"caf\\u00e9 \\u0645\\u0631\\u062d\\u0628\\u0627 '
        b'a\\u0040b.c http:\\/\\/x"}}]}]}'
    )
    header = sign(raw)
    assert core.signature_is_valid(raw, header, APP_SECRET)
    reserialised = json.dumps(json.loads(raw), ensure_ascii=False, separators=(",", ":")).encode()
    assert reserialised != raw
    assert not core.signature_is_valid(reserialised, header, APP_SECRET)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "sha256=",
        "sha1=" + "0" * 40,
        "sha256=" + "z" * 64,
        "sha256=" + "0" * 63,
        "sha256=" + "0" * 64,
        sign(b"another body"),
        sign(BATCHED_STATUSES, b"another secret"),
        "sha256=ü" + "0" * 63,
    ],
)
def test_missing_malformed_or_wrong_signatures_are_refused(header: str | None) -> None:
    assert not core.signature_is_valid(BATCHED_STATUSES, header, APP_SECRET)


def test_signature_hex_is_compared_case_insensitively() -> None:
    header = sign(BATCHED_STATUSES)
    assert core.signature_is_valid(BATCHED_STATUSES, "sha256=" + header[7:].upper(), APP_SECRET)


# --- handshake and body checks ------------------------------------------------------------------


def test_handshake_echoes_the_challenge_when_the_token_matches() -> None:
    params = {
        "hub.mode": "subscribe",
        "hub.verify_token": VERIFY_TOKEN,
        "hub.challenge": "1158201444",
    }
    assert core.handshake_challenge(params, VERIFY_TOKEN) == "1158201444"


@pytest.mark.parametrize(
    "params",
    [
        {"hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": "1"},
        {"hub.mode": "unsubscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1"},
        {"hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1"},
        {"hub.mode": "subscribe", "hub.challenge": "1"},
    ],
)
def test_handshake_is_refused_for_a_wrong_token_or_mode(params: dict[str, str]) -> None:
    assert core.handshake_challenge(params, VERIFY_TOKEN) is None


def test_a_body_must_be_a_whatsapp_business_account_object() -> None:
    assert core.split_by_waba(BATCHED_STATUSES)[0].waba_id == WABA_ID
    with pytest.raises(InvalidRequest) as wrong_object:
        core.split_by_waba(b'{"object":"page","entry":[]}')
    assert wrong_object.value.code == "unexpected_object"
    for junk in (b"not json", b"[1,2]", b'{"object": 5}'):
        with pytest.raises(InvalidRequest) as malformed:
            core.split_by_waba(junk)
        assert malformed.value.code == "malformed_payload"


def test_the_webhook_event_id_is_the_waba_and_the_body_hash() -> None:
    event_id = core.webhook_event_id(WABA_ID, BATCHED_STATUSES)
    assert event_id == f"{WABA_ID}:{hashlib.sha256(BATCHED_STATUSES).hexdigest()}"
    event = WebhookReceived(event_id=event_id, received_at=1, payload=msgspec.Raw(b"{}"))
    assert WEBHOOK_RECEIVED.key(event) == WABA_ID


# --- the HTTP endpoint --------------------------------------------------------------------------


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
async def client(publisher: FakePublisher) -> AsyncIterator[TestClient]:
    config = WebhookConfig(
        app_secret=APP_SECRET, verify_token=VERIFY_TOKEN, max_body_bytes=64 * 1024
    )
    app = create_app(config, publisher, FakeClock(start_ms=1_750_030_100_000))
    test_client = TestClient(TestServer(app))
    await test_client.start_server()
    yield test_client
    await test_client.close()


async def test_get_handshake_answers_the_raw_challenge_as_text(client: TestClient) -> None:
    resp = await client.get(
        "/webhooks/meta",
        params={
            "hub.mode": "subscribe",
            "hub.verify_token": VERIFY_TOKEN,
            "hub.challenge": "1158201444",
        },
    )
    assert resp.status == 200
    assert resp.content_type == "text/plain"
    assert await resp.text() == "1158201444"


async def test_get_handshake_with_a_wrong_token_is_403_in_the_error_envelope(
    client: TestClient,
) -> None:
    resp = await client.get(
        "/webhooks/meta",
        params={"hub.mode": "subscribe", "hub.verify_token": "guess", "hub.challenge": "1"},
    )
    assert resp.status == 403
    assert (await resp.json())["error"]["code"] == "verification_failed"


async def test_a_signed_post_is_published_byte_for_byte_then_answered_200(
    client: TestClient, publisher: FakePublisher
) -> None:
    published_before = _metric("status_webhooks_published_total")
    resp = await client.post(
        "/webhooks/meta",
        data=BATCHED_STATUSES,
        headers={"X-Hub-Signature-256": sign(BATCHED_STATUSES), "Content-Type": "application/json"},
    )
    assert resp.status == 200
    [event] = publisher.events(WEBHOOK_RECEIVED)
    assert bytes(event.payload) == BATCHED_STATUSES
    assert event.event_id == core.webhook_event_id(WABA_ID, BATCHED_STATUSES)
    assert event.received_at == 1_750_030_100_000
    key, value = WEBHOOK_RECEIVED.encode(event)
    assert key == WABA_ID.encode()
    assert BATCHED_STATUSES in value  # the raw bytes travel untouched inside the event
    assert _metric("status_webhooks_published_total") == published_before + 1


async def test_the_200_waits_for_the_publish_to_be_acknowledged() -> None:
    started, release = asyncio.Event(), asyncio.Event()

    class SlowPublisher(FakePublisher):
        async def publish_all(self, events):  # type: ignore[no-untyped-def]
            started.set()
            await release.wait()
            await super().publish_all(events)

    slow = SlowPublisher()
    app = create_app(WebhookConfig(APP_SECRET, VERIFY_TOKEN, 64 * 1024), slow, FakeClock())
    test_client = TestClient(TestServer(app))
    await test_client.start_server()
    try:
        request = asyncio.create_task(
            test_client.post(
                "/webhooks/meta",
                data=BATCHED_STATUSES,
                headers={"X-Hub-Signature-256": sign(BATCHED_STATUSES)},
            )
        )
        await started.wait()
        for _ in range(20):  # let the server run as far as it can without the ack
            await asyncio.sleep(0)
        assert not request.done()  # no answer while the broker has not acknowledged
        release.set()
        resp = await request
        assert resp.status == 200
        assert len(slow.events(WEBHOOK_RECEIVED)) == 1
    finally:
        await test_client.close()


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Hub-Signature-256": "sha256=" + "0" * 64},
        {"X-Hub-Signature-256": sign(BATCHED_STATUSES, b"wrong secret")},
        {"X-Hub-Signature-256": "garbage"},
    ],
)
async def test_an_unsigned_or_badly_signed_post_is_401_counted_and_not_published(
    client: TestClient, publisher: FakePublisher, headers: dict[str, str]
) -> None:
    rejected_before = _metric("status_webhooks_rejected_total", reason="bad_signature")
    resp = await client.post("/webhooks/meta", data=BATCHED_STATUSES, headers=headers)
    assert resp.status == 401
    assert (await resp.json())["error"]["code"] == "invalid_signature"
    assert publisher.published == []
    assert _metric("status_webhooks_rejected_total", reason="bad_signature") == rejected_before + 1


async def test_a_signed_post_that_is_not_a_whatsapp_webhook_is_400(
    client: TestClient, publisher: FakePublisher
) -> None:
    rejected_before = _metric("status_webhooks_rejected_total", reason="malformed")
    for raw in (b"not json at all", b'{"object":"instagram","entry":[]}'):
        resp = await client.post(
            "/webhooks/meta", data=raw, headers={"X-Hub-Signature-256": sign(raw)}
        )
        assert resp.status == 400
    assert publisher.published == []
    assert _metric("status_webhooks_rejected_total", reason="malformed") == rejected_before + 2


async def test_a_signed_webhook_nested_10000_deep_is_400_not_a_crash(
    client: TestClient, publisher: FakePublisher
) -> None:
    rejected_before = _metric("status_webhooks_rejected_total", reason="too_deep")
    deep = b"[" * 10_000 + b"]" * 10_000
    raw = (
        b'{"object":"whatsapp_business_account","entry":[{"id":"'
        + WABA_ID.encode()
        + b'","changes":[{"field":"messages","value":'
        + deep
        + b"}]}]}"
    )
    resp = await client.post("/webhooks/meta", data=raw, headers={"X-Hub-Signature-256": sign(raw)})
    assert resp.status == 400
    assert (await resp.json())["error"] == {
        "code": "nesting_too_deep",
        "message": "the body nests arrays and objects more than 64 levels deep",
        "details": {"limit": 64},
    }
    assert publisher.published == []
    assert _metric("status_webhooks_rejected_total", reason="too_deep") == rejected_before + 1


async def test_a_body_over_the_limit_is_413_and_not_published(
    client: TestClient, publisher: FakePublisher
) -> None:
    rejected_before = _metric("status_webhooks_rejected_total", reason="too_large")
    raw = b'{"object":"whatsapp_business_account","pad":"' + b"x" * (64 * 1024) + b'"}'
    resp = await client.post("/webhooks/meta", data=raw, headers={"X-Hub-Signature-256": sign(raw)})
    assert resp.status == 413
    assert (await resp.json())["error"]["code"] == "payload_too_large"
    assert publisher.published == []
    assert _metric("status_webhooks_rejected_total", reason="too_large") == rejected_before + 1


async def test_kafka_unavailable_answers_503_so_meta_retries(
    client: TestClient, publisher: FakePublisher
) -> None:
    publisher.unavailable = True
    resp = await client.post(
        "/webhooks/meta",
        data=BATCHED_STATUSES,
        headers={"X-Hub-Signature-256": sign(BATCHED_STATUSES)},
    )
    assert resp.status == 503
    assert (await resp.json())["error"]["code"] == "dependency_unavailable"


# --- the Kafka adapter --------------------------------------------------------------------------


class _BrokenProducer:
    def __init__(self, error: BaseException) -> None:
        self.error = error

    async def send(self, *_: object, **__: object) -> None:
        raise self.error


@pytest.mark.parametrize("error", [KafkaConnectionError("down"), TimeoutError()])
async def test_publisher_turns_broker_errors_and_timeouts_into_dependency_unavailable(
    error: BaseException,
) -> None:
    publisher = KafkaPublisher(
        _BrokenProducer(error),
        "t.",  # type: ignore[arg-type]
        timeout_seconds=5,
    )
    event = WebhookReceived(event_id="1:x", received_at=1, payload=msgspec.Raw(b"{}"))
    with pytest.raises(DependencyUnavailable):
        await publisher.publish(WEBHOOK_RECEIVED, event)


class _RecordingProducer:
    """Acknowledges only when the test says so."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self.acks: list[asyncio.Future[None]] = []

    async def send(self, topic: str, value: bytes, key: bytes) -> asyncio.Future[None]:
        self.sent.append((topic, key))
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.acks.append(ack)
        return ack


async def test_publish_all_sends_in_order_and_returns_only_when_every_event_is_acknowledged() -> (
    None
):
    producer = _RecordingProducer()
    publisher = KafkaPublisher(producer, "t.", timeout_seconds=5)  # type: ignore[arg-type]
    events = [
        WebhookReceived(event_id=f"{waba}:h{i}", received_at=1, payload=msgspec.Raw(b"{}"))
        for i, waba in enumerate(["w1", "w2", "w1"])
    ]
    publishing = asyncio.create_task(publisher.publish_all([(WEBHOOK_RECEIVED, e) for e in events]))
    for _ in range(10):
        await asyncio.sleep(0)
    assert producer.sent == [
        ("t.webhooks.received.v1", b"w1"),
        ("t.webhooks.received.v1", b"w2"),
        ("t.webhooks.received.v1", b"w1"),
    ]
    producer.acks[0].set_result(None)
    producer.acks[2].set_result(None)
    for _ in range(10):
        await asyncio.sleep(0)
    assert not publishing.done()
    producer.acks[1].set_result(None)
    await publishing


def test_an_unreadable_first_entry_does_not_cost_the_body_a_400() -> None:
    raw = (
        b'{"object":"whatsapp_business_account","entry":["junk",{"id":"'
        + WABA_ID.encode()
        + b'","changes":[]}]}'
    )
    assert core.split_by_waba(raw)[0].waba_id == WABA_ID
    assert (
        core.split_by_waba(b'{"object":"whatsapp_business_account","entry":[5]}')[0].waba_id == ""
    )
