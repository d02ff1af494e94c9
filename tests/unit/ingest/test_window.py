"""The customer-service window at ingest: a free-form message to a contact whose 24 h window is
closed is refused before anything is reserved or published; templates always pass; the check can
be switched off per account; windows are remembered sensibly. Also: a template status learnt of
from a webhook (shape unknown) is not refused for its parameters."""

from __future__ import annotations

from typing import Any

import pytest

from services.ingest import conversations as conv
from shared.errors import ServiceError
from tests.unit.ingest.fakes import PHONE_A, WABA_A, World, auth, template, template_body, text_body

NOW = 1_764_000_000_000
HOUR = 3600 * 1000
WA_ID = "447912345678"


# --- the decision ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "open_", "expires"),
    [
        (None, False, None),
        ({"_id": "x"}, False, None),  # a contact known only from an echo or a reaction
        ({"window_expires_at": NOW + 1}, True, NOW + 1),
        ({"window_expires_at": NOW}, False, NOW),  # closes at its expiry
        ({"window_expires_at": NOW - HOUR}, False, NOW - HOUR),
        ({"window_expires_at": "tomorrow"}, False, None),
    ],
)
def test_the_window_is_open_until_its_expiry(
    doc: dict[str, Any] | None, open_: bool, expires: int | None
) -> None:
    assert conv.window_of(doc, NOW) == conv.Window(open_, expires)


def test_only_templates_pass_a_closed_window_and_the_switch_turns_the_check_off() -> None:
    closed, opened = conv.Window(False, NOW - 1), conv.Window(True, NOW + HOUR)
    conv.check_window(closed, "template", enforced=True)
    conv.check_window(opened, "text", enforced=True)
    conv.check_window(closed, "text", enforced=False)
    for message_type in ("text", "image", "reaction", "interactive", "contacts"):
        with pytest.raises(ServiceError) as refused:
            conv.check_window(closed, message_type, enforced=True)
        assert refused.value.code == "outside_customer_service_window"
        assert refused.value.http_status == 422
    assert conv.window_enforced(None) and conv.window_enforced({"status": "active"})
    assert not conv.window_enforced({"customer_service_window_check": False})


def test_an_open_window_is_remembered_until_it_closes_a_closed_one_briefly() -> None:
    assert conv.window_cache_seconds(conv.Window(True, NOW + 90_000), NOW, 1.0) == 90.0
    assert conv.window_cache_seconds(conv.Window(False, NOW - 5), NOW, 1.0) == 1.0
    assert conv.window_cache_seconds(conv.Window(False, None), NOW, 2.5) == 2.5


@pytest.mark.parametrize(
    ("e164", "candidates"),
    [
        ("+447912345678", ["447912345678"]),
        ("+525512345678", ["525512345678", "5215512345678"]),  # Mexico: wa_id has a 1 after 52
        ("+5215512345678", ["5215512345678", "525512345678"]),
        ("+5511987654321", ["5511987654321", "551187654321"]),  # Brazil: older ids lack the 9
        ("+551187654321", ["551187654321", "5511987654321"]),
    ],
)
def test_a_recipient_is_looked_up_under_each_wa_id_meta_may_give_it(
    e164: str, candidates: list[str]
) -> None:
    assert conv.wa_id_candidates(e164) == candidates


def test_of_several_spellings_the_window_that_lasts_counts() -> None:
    windows = [conv.Window(False, None), conv.Window(True, NOW + 5), conv.Window(False, NOW - 1)]
    assert conv.latest_window(windows) == conv.Window(True, NOW + 5)
    assert conv.latest_window([]) == conv.Window(False, None)


# --- through the API ----------------------------------------------------------------------


def _closed_world(**kwargs: Any) -> World:
    world = World(**kwargs)
    world.inbox.windows_open_by_default = False
    return world


async def test_a_free_form_message_to_a_contact_who_never_wrote_is_refused_422() -> None:
    async with _closed_world() as world:
        resp = await world.client.post("/v1/messages", json=text_body(to=WA_ID), headers=auth())
        assert resp.status == 422
        error = (await resp.json())["error"]
        assert error["code"] == "outside_customer_service_window"
        assert error["details"] == {"window_expires_at": None}
        assert world.publisher.events == []  # nothing reserved, nothing sent


async def test_the_meta_route_answers_with_metas_131047() -> None:
    async with _closed_world() as world:
        resp = await world.client.post(
            f"/v24.0/{PHONE_A}/messages",
            headers=auth(),
            json={
                "messaging_product": "whatsapp",
                "to": WA_ID,
                "type": "text",
                "text": {"body": "hello"},
            },
        )
        assert resp.status == 400
        error = (await resp.json())["error"]
        assert error["code"] == 131047
        assert error["error_data"]["details"].startswith("outside_customer_service_window")
        assert world.publisher.events == []


async def test_after_the_user_writes_the_message_is_accepted_and_templates_always_pass() -> None:
    async with _closed_world(window_closed_cache_seconds=1.0) as world:
        assert (
            await world.client.post("/v1/messages", json=template_body(to=WA_ID), headers=auth())
        ).status == 202
        refused = await world.client.post("/v1/messages", json=text_body(to=WA_ID), headers=auth())
        assert refused.status == 422
        world.inbox.user_wrote("acc_a", PHONE_A, WA_ID, ago_seconds=5)
        world.clock.advance(1.0)  # the closed window was remembered for a second only
        accepted = await world.client.post(
            "/v1/messages", json=text_body(to="+" + WA_ID), headers=auth()
        )
        assert accepted.status == 202, await accepted.text()
        assert [e.message_type for e in world.publisher.events] == ["template", "text"]


async def test_a_window_written_23_hours_ago_is_open_one_written_25_hours_ago_is_not() -> None:
    async with _closed_world() as world:
        world.inbox.user_wrote("acc_a", PHONE_A, "447912345678", ago_seconds=23 * 3600)
        world.inbox.user_wrote("acc_a", PHONE_A, "447912345679", ago_seconds=25 * 3600)
        ok = await world.client.post(
            "/v1/messages", json=text_body(to="447912345678"), headers=auth()
        )
        late = await world.client.post(
            "/v1/messages", json=text_body(to="447912345679"), headers=auth()
        )
        assert (ok.status, late.status) == (202, 422)
        assert (await late.json())["error"]["details"]["window_expires_at"] is not None


async def test_a_window_of_one_number_does_not_open_another_numbers() -> None:
    async with _closed_world() as world:
        world.inbox.user_wrote("acc_a", "109731225428302", WA_ID)
        resp = await world.client.post("/v1/messages", json=text_body(to=WA_ID), headers=auth())
        assert resp.status == 422


async def test_the_check_can_be_switched_off_per_account() -> None:
    async with _closed_world() as world:
        world.directory.accounts["acc_a"]["customer_service_window_check"] = False
        resp = await world.client.post("/v1/messages", json=text_body(to=WA_ID), headers=auth())
        assert resp.status == 202
        assert world.inbox.conversation_reads == 0  # not even looked up


async def test_an_open_window_is_read_once_until_it_closes() -> None:
    async with _closed_world() as world:
        world.inbox.user_wrote("acc_a", PHONE_A, WA_ID, ago_seconds=24 * 3600 - 60)
        for _ in range(3):
            assert (
                await world.client.post("/v1/messages", json=text_body(to=WA_ID), headers=auth())
            ).status == 202
        assert world.inbox.conversation_reads == 1
        world.clock.advance(61)  # the window closed meanwhile: remembered only until then
        resp = await world.client.post("/v1/messages", json=text_body(to=WA_ID), headers=auth())
        assert resp.status == 422
        assert world.inbox.conversation_reads == 2


async def test_a_template_whose_shape_is_unknown_skips_the_parameter_check() -> None:
    async with World() as world:
        t = template(WABA_A, "from_manager", category="MARKETING")
        t["shape_known"] = False  # status made it from a webhook; the sync has not run yet
        world.directory.templates[t["_id"]] = t
        body = template_body(
            template={
                "name": "from_manager",
                "language": {"code": "en_US"},
                "components": [{"type": "body", "parameters": [{"type": "text", "text": "x"}]}],
            }
        )
        resp = await world.client.post("/v1/messages", json=body, headers=auth())
        assert resp.status == 202, await resp.text()
        assert world.publisher.events[-1].category == "marketing"
        # a known template with the same parameters is still checked
        t["shape_known"] = True
        world.directory.templates[t["_id"]] = t
        world.clock.advance(10)  # past the directory's cache
        resp = await world.client.post("/v1/messages", json=body, headers=auth())
        assert (await resp.json())["error"]["code"] == "template_parameter_mismatch"
