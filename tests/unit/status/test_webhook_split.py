"""A webhook POST naming several WABAs becomes one webhooks.received record per WABA
(`core.split_by_waba`), and the endpoint publishes them all before answering 200."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator

import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY

from services.notify import meta_format
from services.status import core
from services.status.app import create_app
from services.status.handlers import WebhookConfig
from shared.clock import FakeClock
from shared.errors import InvalidRequest
from shared.messages import WEBHOOK_RECEIVED
from tests.corpus.webhooks import corpus_files, load
from tests.unit.status.fakes import FakePublisher
from tests.unit.status.meta_examples import (
    APP_SECRET,
    BATCHED_STATUSES,
    INBOUND_TEXT,
    STATUS_SENT,
    WABA_ID,
    sign,
)

OTHER_WABA = "209876543210987"


def _entry(waba: str | int, wamid: str, status: str = "delivered") -> bytes:
    """One entry as Meta writes it (spaces, escaped non-ASCII), for a status of `wamid`."""
    waba_json = json.dumps(waba).encode()
    return (
        b'{ "id": ' + waba_json + b', "changes": [{ "field": "messages", "value": {'
        b' "messaging_product": "whatsapp", "metadata": { "display_phone_number": "15550783881",'
        b' "phone_number_id": "106540352242922" }, "statuses": [{ "id": "'
        + wamid.encode()
        + b'", "status": "'
        + status.encode()
        + b'", "timestamp": "1750030080",'
        b' "recipient_id": "16505551234", "biz_opaque_callback_data": "caf\\u00e9 \\/x" }] } }] }'
    )


def _body(*entries: bytes) -> bytes:
    return b'{ "object": "whatsapp_business_account", "entry": [ ' + b", ".join(entries) + b" ] }"


E1, E2, E3, E4 = (
    _entry(WABA_ID, "wamid.A1"),
    _entry(OTHER_WABA, "wamid.B1"),
    _entry(WABA_ID, "wamid.A2", "read"),
    _entry(int(OTHER_WABA), "wamid.B2"),  # Meta's id as a number: the same WABA
)
INTERLEAVED = _body(E1, E2, E3, E4)


def _envelope(*entries: bytes) -> bytes:
    return b'{"object":"whatsapp_business_account","entry":[' + b",".join(entries) + b"]}"


# --- the pure split ------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [BATCHED_STATUSES, INBOUND_TEXT, STATUS_SENT, _body(E1, E3)])
def test_one_waba_keeps_the_body_and_the_event_id_of_before(body: bytes) -> None:
    [record] = core.split_by_waba(body)
    assert record.payload is body
    assert record.waba_id == WABA_ID
    assert record.event_id == core.webhook_event_id(WABA_ID, body)


def test_two_wabas_interleaved_give_two_records_with_metas_bytes_in_entry_order() -> None:
    first, second = core.split_by_waba(INTERLEAVED)
    digest = hashlib.sha256(INTERLEAVED).hexdigest()
    assert (first.waba_id, first.event_id) == (WABA_ID, f"{WABA_ID}:{digest}")
    assert (second.waba_id, second.event_id) == (OTHER_WABA, f"{OTHER_WABA}:{digest}")
    # Each entry's bytes exactly as received (spaces, \u00e9 and \/ escapes kept).
    assert first.payload == _envelope(E1, E3)
    assert second.payload == _envelope(E2, E4)


def test_each_record_plans_exactly_its_wabas_part_of_the_body() -> None:
    whole = core.plan_webhook(INTERLEAVED, 1_750_030_100_000)
    for record in core.split_by_waba(INTERLEAVED):
        part = core.plan_webhook(record.payload, 1_750_030_100_000)
        assert part.statuses == [s for s in whole.statuses if s.waba_id == record.waba_id]
        assert part.statuses  # each record carries statuses
        assert part.malformed_items == 0


def test_an_unreadable_entry_rides_with_the_first_wabas_record() -> None:
    body = _body(b'"junk"', E2, E1, b'{"id": [1]}')
    first, second = core.split_by_waba(body)
    assert first.waba_id == OTHER_WABA  # the first readable entry's WABA, as the key was before
    assert first.payload == _envelope(b'"junk"', E2, b'{"id": [1]}')
    assert second.waba_id == WABA_ID
    assert second.payload == _envelope(E1)
    assert core.plan_webhook(first.payload, 1).malformed_items == 2


def test_an_entry_without_an_id_and_bodies_without_readable_entries() -> None:
    no_id = b'{ "changes": [] }'
    first, second = core.split_by_waba(_body(E1, no_id))
    assert (first.waba_id, second.waba_id) == (WABA_ID, "")
    assert second.payload == _envelope(no_id)
    for body in (_body(b"5"), _body(), _body(no_id)):
        [record] = core.split_by_waba(body)
        assert (record.waba_id, record.payload) == ("", body)
        assert record.event_id == core.webhook_event_id("", body)


def test_event_ids_are_stable_across_calls_and_differ_between_bodies() -> None:
    again = core.split_by_waba(bytes(INTERLEAVED))
    assert again == core.split_by_waba(INTERLEAVED)
    other = core.split_by_waba(_body(E1, E2, E3))
    ids = [r.event_id for r in core.split_by_waba(INTERLEAVED)]
    other_ids = [r.event_id for r in other]
    assert len(set(ids)) == 2
    assert not set(ids) & set(other_ids)
    assert [r.waba_id for r in other] == [WABA_ID, OTHER_WABA]


def test_the_split_refuses_what_intake_refused() -> None:
    with pytest.raises(InvalidRequest) as wrong_object:
        core.split_by_waba(b'{"object":"page","entry":[]}')
    assert wrong_object.value.code == "unexpected_object"
    with pytest.raises(InvalidRequest) as malformed:
        core.split_by_waba(b"[1]")
    assert malformed.value.code == "malformed_payload"


def test_every_real_webhook_alone_is_one_record_and_all_of_them_together_split_by_waba() -> None:
    """The corpus of Meta's documented payloads (tests/corpus/webhooks): each alone keeps its
    bytes; all their entries in one POST split into records whose plans are the whole's."""
    entries: list[dict[str, object]] = []
    for path in corpus_files():
        raw, payload = load(path)
        wabas = {str(e.get("id", "")) for e in payload["entry"]}
        records = core.split_by_waba(raw)
        assert len(records) == len(wabas)
        if len(wabas) == 1:
            assert records[0].payload is raw
        entries.extend(payload["entry"])
    body = json.dumps({"object": "whatsapp_business_account", "entry": entries}).encode()
    whole = core.plan_webhook(body, 1_764_000_000_000)
    records = core.split_by_waba(body)
    assert len(records) == len({str(e.get("id", "")) for e in entries}) > 1
    parts = [core.plan_webhook(r.payload, 1_764_000_000_000) for r in records]
    for kind, count in whole.counts().items():
        assert sum(p.counts()[kind] for p in parts) == count, kind
    for record, part in zip(records, parts, strict=True):
        assert part.statuses == [s for s in whole.statuses if s.waba_id == record.waba_id]
        assert part.inbound == [m for m in whole.inbound if m.waba_id == record.waba_id]


def test_notify_forwards_the_same_pieces_from_the_records_as_from_the_whole_post() -> None:
    """notify's `meta` forwarding reads each record as it read the POST: per WABA, the same
    pieces (envelopes, wamids, callback data) in the same order."""
    whole = meta_format.split(INTERLEAVED)
    records = core.split_by_waba(INTERLEAVED)
    for record in records:
        assert meta_format.split(record.payload) == [
            p for p in whole if p.waba_id == record.waba_id
        ]
    assert sum(len(meta_format.split(r.payload)) for r in records) == len(whole) == 4


# --- the endpoint --------------------------------------------------------------------------------


def _metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
async def client(publisher: FakePublisher) -> AsyncIterator[TestClient]:
    app = create_app(
        WebhookConfig(APP_SECRET, "token", 64 * 1024), publisher, FakeClock(start_ms=1_000)
    )
    test_client = TestClient(TestServer(app))
    await test_client.start_server()
    yield test_client
    await test_client.close()


async def test_a_post_of_two_wabas_is_published_as_two_records_on_their_keys(
    client: TestClient, publisher: FakePublisher
) -> None:
    posts, records = (
        _metric("status_webhooks_published_total"),
        _metric("status_webhook_records_published_total"),
    )
    resp = await client.post(
        "/webhooks/meta", data=INTERLEAVED, headers={"X-Hub-Signature-256": sign(INTERLEAVED)}
    )
    assert resp.status == 200
    events = publisher.events(WEBHOOK_RECEIVED)
    assert [WEBHOOK_RECEIVED.key(e) for e in events] == [WABA_ID, OTHER_WABA]
    assert [bytes(e.payload) for e in events] == [_envelope(E1, E3), _envelope(E2, E4)]
    assert {e.received_at for e in events} == {1_000}
    decoded = [WEBHOOK_RECEIVED.decode_record(WEBHOOK_RECEIVED.encode(e)[1]) for e in events]
    assert [bytes(d.payload) for d in decoded] == [bytes(e.payload) for e in events]
    assert _metric("status_webhooks_published_total") == posts + 1
    assert _metric("status_webhook_records_published_total") == records + 2


async def test_every_record_is_enqueued_at_once_and_the_200_waits_for_all() -> None:
    calls: list[int] = []
    started, release = asyncio.Event(), asyncio.Event()

    class Gated(FakePublisher):
        async def publish_all(self, events):  # type: ignore[no-untyped-def]
            calls.append(len(events))
            started.set()
            await release.wait()
            await super().publish_all(events)

    gated = Gated()
    app = create_app(WebhookConfig(APP_SECRET, "token", 64 * 1024), gated, FakeClock())
    test_client = TestClient(TestServer(app))
    await test_client.start_server()
    try:
        request = asyncio.create_task(
            test_client.post(
                "/webhooks/meta",
                data=INTERLEAVED,
                headers={"X-Hub-Signature-256": sign(INTERLEAVED)},
            )
        )
        await asyncio.wait_for(started.wait(), timeout=5)
        for _ in range(20):  # let the server run as far as it can without the acks
            await asyncio.sleep(0)
        assert calls == [2]  # one call with both records: acknowledged together
        assert not request.done()
        release.set()
        assert (await request).status == 200
    finally:
        await test_client.close()


async def test_a_failed_publish_of_a_split_post_is_503_and_its_retry_has_the_same_records(
    client: TestClient, publisher: FakePublisher
) -> None:
    headers = {"X-Hub-Signature-256": sign(INTERLEAVED)}
    publisher.unavailable = True
    assert (await client.post("/webhooks/meta", data=INTERLEAVED, headers=headers)).status == 503
    publisher.unavailable = False
    for _ in range(2):
        assert (
            await client.post("/webhooks/meta", data=INTERLEAVED, headers=headers)
        ).status == 200
    first, second = (publisher.events(WEBHOOK_RECEIVED)[i : i + 2] for i in (0, 2))
    assert [(e.event_id, bytes(e.payload)) for e in first] == [
        (e.event_id, bytes(e.payload)) for e in second
    ]
    assert msgspec.json.decode(bytes(first[1].payload))["entry"][0]["id"] == OTHER_WABA
