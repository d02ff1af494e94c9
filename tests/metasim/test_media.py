"""The Media API: upload, URL retrieval, download with a bearer token, delete, lifetimes."""

from __future__ import annotations

import base64
import hashlib

import aiohttp
import pytest

from tests.metasim.conftest import (
    A1_NUMBER,
    A1_NUMBER_2,
    B1_NUMBER,
    BSP_TOKEN,
    MakeSim,
    Sim,
)
from tests.metasim.test_graph_sends import assert_meta_error

JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4


async def download(sim: Sim, url: str, token: str | None = BSP_TOKEN) -> tuple[int, bytes, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    path = url[url.index("/whatsapp_business/") :]
    response = await sim.client.get(path, headers=headers)
    return response.status, await response.read(), response.headers.get("Content-Type", "")


async def test_upload_then_url_then_download_byte_for_byte(make_sim: MakeSim) -> None:
    sim = await make_sim()
    status, body = await sim.upload(A1_NUMBER, JPEG, "image/jpeg", filename="cat.jpg")
    assert status == 200 and set(body) == {"id"} and body["id"].isdigit()
    media_id = body["id"]
    status, info = await sim.graph("GET", f"/v24.0/{media_id}")
    assert status == 200
    assert info == {
        "messaging_product": "whatsapp",
        "url": info["url"],
        "mime_type": "image/jpeg",
        "sha256": hashlib.sha256(JPEG).hexdigest(),
        "file_size": str(len(JPEG)),
        "id": media_id,
    }
    assert (
        info["url"].startswith("http://") and "/whatsapp_business/attachments/?mid=" in info["url"]
    )
    status, content, content_type = await download(sim, info["url"])
    assert (status, content, content_type) == (200, JPEG, "image/jpeg")
    # With the optional phone_number_id of the number it was uploaded on.
    status, _ = await sim.graph("GET", f"/v24.0/{media_id}?phone_number_id={A1_NUMBER}")
    assert status == 200
    _, stats = await sim.control("GET", "/_sim/stats")
    assert stats["media"]["uploads"] == 1 and stats["media"]["downloads"] == 1


async def test_upload_without_type_part_uses_the_files_type(make_sim: MakeSim) -> None:
    """Meta's own curl example sends only `file=@x;type=<mime>` and messaging_product."""
    sim = await make_sim()
    media_id = await sim.uploaded(A1_NUMBER, b"%PDF-1.4 x", "application/pdf", type_field=None)
    _, info = await sim.graph("GET", f"/v24.0/{media_id}")
    assert info["mime_type"] == "application/pdf"


@pytest.mark.parametrize(
    ("content", "mime_type", "kwargs", "code", "fragment"),
    [
        (b"x", "image/gif", {}, 100, "one of the following types"),
        (b"x", "image/jpeg", {"messaging_product": None}, 100, "messaging_product"),
        (b"x", "image/jpeg", {"messaging_product": "sms"}, 100, "messaging_product"),
        (b"\xff" * (5 * 1024 * 1024 + 1), "image/png", {}, 131053, "too big"),
        (b"R" * (500 * 1024 + 1), "image/webp", {}, 131053, "too big"),
        (b"", "image/png", {}, 100, "file"),
    ],
)
async def test_upload_refusals(
    make_sim: MakeSim, content: bytes, mime_type: str, kwargs: dict, code: int, fragment: str
) -> None:
    sim = await make_sim()
    status, body = await sim.upload(A1_NUMBER, content, mime_type, **kwargs)
    assert_meta_error(status, body, code, 400)
    assert fragment in body["error"]["error_data"]["details"]


async def test_upload_needs_multipart_a_token_and_a_known_number(make_sim: MakeSim) -> None:
    sim = await make_sim()
    status, body = await sim.graph("POST", f"/v24.0/{A1_NUMBER}/media", json={"file": "x"})
    assert_meta_error(status, body, 100, 400)
    status, body = await sim.upload(A1_NUMBER, b"x", "image/png", token="EAAsim-expired")
    assert_meta_error(status, body, 190, 401)
    status, body = await sim.upload(A1_NUMBER, b"x", "image/png", token="EAAsim-portfolio-b")
    assert_meta_error(status, body, 200, 403)
    status, body = await sim.upload("100000000000999", b"x", "image/png")
    assert_meta_error(status, body, 100, 400)


async def test_every_documented_type_uploads(make_sim: MakeSim) -> None:
    sim = await make_sim()
    for mime_type in (
        "audio/aac",
        "audio/amr",
        "audio/mpeg",
        "audio/mp4",
        "audio/ogg",
        "text/plain",
        "application/pdf",
        "application/msword",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.ms-excel",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "application/vnd.ms-powerpoint",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "image/jpeg",
        "image/png",
        "image/webp",
        "video/mp4",
        "video/3gpp",
    ):
        status, body = await sim.upload(A1_NUMBER, b"content", mime_type)
        assert status == 200, (mime_type, body)


async def test_download_needs_a_token_of_the_media_waba(make_sim: MakeSim) -> None:
    sim = await make_sim()
    media_id = await sim.uploaded(A1_NUMBER, JPEG, "image/jpeg")
    _, info = await sim.graph("GET", f"/v24.0/{media_id}")
    assert (await download(sim, info["url"], token=None))[0] == 404
    assert (await download(sim, info["url"], token="EAAnot-a-token"))[0] == 404
    assert (await download(sim, info["url"], token="EAAsim-portfolio-b"))[0] == 404
    assert (await download(sim, info["url"], token="EAAsim-portfolio-a"))[0] == 200
    tampered = info["url"].replace("hash=", "hash=0")
    assert (await download(sim, tampered))[0] == 404


async def test_url_stops_working_after_5_minutes_and_a_fresh_get_gives_a_new_one(
    make_sim: MakeSim,
) -> None:
    sim = await make_sim()
    media_id = await sim.uploaded(A1_NUMBER, JPEG, "image/jpeg")
    _, info = await sim.graph("GET", f"/v24.0/{media_id}")
    await sim.advance(299)
    assert (await download(sim, info["url"]))[0] == 200
    await sim.advance(2)
    status, text, _ = await download(sim, info["url"])
    assert status == 404 and b"expired" in text
    _, fresh = await sim.graph("GET", f"/v24.0/{media_id}")
    assert fresh["url"] != info["url"]
    assert (await download(sim, fresh["url"]))[1] == JPEG


async def test_foreign_unknown_deleted_and_expired_media_are_the_same_100(
    make_sim: MakeSim,
) -> None:
    sim = await make_sim()
    media_id = await sim.uploaded(A1_NUMBER, JPEG, "image/jpeg")
    status, body = await sim.graph("GET", f"/v24.0/{media_id}", token="EAAsim-portfolio-b")
    assert_meta_error(status, body, 100, 400)
    assert body["error"]["error_subcode"] == 33
    status, body = await sim.graph("GET", f"/v24.0/{media_id}?phone_number_id={A1_NUMBER_2}")
    assert_meta_error(status, body, 100, 400)
    assert "not uploaded on" in body["error"]["error_data"]["details"]
    status, body = await sim.graph("GET", "/v24.0/4242424242424242")
    assert_meta_error(status, body, 100, 400)

    _, info = await sim.graph("GET", f"/v24.0/{media_id}")
    status, body = await sim.graph("DELETE", f"/v24.0/{media_id}?phone_number_id={A1_NUMBER_2}")
    assert_meta_error(status, body, 100, 400)  # deleting needs the number it was uploaded on
    assert await sim.graph("DELETE", f"/v24.0/{media_id}?phone_number_id={A1_NUMBER}") == (
        200,
        {"success": True},
    )
    status, body = await sim.graph("GET", f"/v24.0/{media_id}")
    assert_meta_error(status, body, 100, 400)
    assert body["error"]["error_subcode"] == 33
    assert (await download(sim, info["url"]))[0] == 404  # a URL handed out before is dead too
    status, body = await sim.graph("DELETE", f"/v24.0/{media_id}")
    assert_meta_error(status, body, 100, 400)

    # The simulator still shows what it held.
    _, held = await sim.control("GET", f"/_sim/media/{media_id}")
    assert held["deleted"] is True and base64.b64decode(held["content_b64"]) == JPEG


async def test_uploaded_media_lives_30_days(make_sim: MakeSim) -> None:
    sim = await make_sim()
    media_id = await sim.uploaded(A1_NUMBER, JPEG, "image/jpeg")
    await sim.advance(30 * 86_400 - 10)
    assert (await sim.graph("GET", f"/v24.0/{media_id}"))[0] == 200
    await sim.advance(10)
    status, body = await sim.graph("GET", f"/v24.0/{media_id}")
    assert_meta_error(status, body, 100, 400)
    _, held = await sim.control("GET", f"/_sim/media/{media_id}")
    assert held["expired"] is True and held["origin"] == "upload"


async def test_inbound_media_lives_7_days_and_refuses_phone_number_id(make_sim: MakeSim) -> None:
    sim = await make_sim()
    answer = await sim.inbound(
        B1_NUMBER,
        "+447700900123",
        type="image",
        media={"content_b64": base64.b64encode(JPEG).decode(), "mime_type": "image/jpeg"},
    )
    media_id = answer["media_id"]
    status, info = await sim.graph("GET", f"/v24.0/{media_id}")
    assert status == 200 and (await download(sim, info["url"]))[1] == JPEG
    # Chatwoot broke every inbound attachment by passing this.
    status, body = await sim.graph("GET", f"/v24.0/{media_id}?phone_number_id={B1_NUMBER}")
    assert_meta_error(status, body, 100, 400)
    await sim.advance(7 * 86_400)
    status, body = await sim.graph("GET", f"/v24.0/{media_id}")
    assert_meta_error(status, body, 100, 400)


async def test_control_api_shows_stored_bytes_and_metadata(make_sim: MakeSim) -> None:
    sim = await make_sim()
    media_id = await sim.uploaded(A1_NUMBER, JPEG, "image/jpeg", filename="cat.jpg")
    status, held = await sim.control("GET", f"/_sim/media/{media_id}")
    assert status == 200
    assert base64.b64decode(held["content_b64"]) == JPEG
    assert held["sha256"] == hashlib.sha256(JPEG).hexdigest()
    assert held["sha256_b64"] == base64.b64encode(hashlib.sha256(JPEG).digest()).decode()
    assert (held["waba_id"], held["phone_number_id"], held["filename"], held["file_size"]) == (
        "102290129340398",
        A1_NUMBER,
        "cat.jpg",
        len(JPEG),
    )
    assert held["expires_at"] == pytest.approx(sim.clock.wall() + 30 * 86_400)
    assert (await sim.control("GET", "/_sim/media/1"))[0] == 404


async def test_uploaded_media_can_be_sent_by_id(make_sim: MakeSim) -> None:
    sim = await make_sim()
    await sim.inbound(A1_NUMBER, "+447700900123")
    media_id = await sim.uploaded(A1_NUMBER, JPEG, "image/jpeg")
    status, body = await sim.send(
        A1_NUMBER,
        {
            "messaging_product": "whatsapp",
            "to": "+447700900123",
            "type": "image",
            "image": {"id": media_id},
        },
    )
    assert status == 200, body


async def test_download_streams_large_files(make_sim: MakeSim) -> None:
    """A 6 MB document goes up in a streamed multipart body and comes back whole."""
    sim = await make_sim()
    content = bytes(range(256)) * (6 * 4096)
    form = aiohttp.FormData()
    form.add_field("messaging_product", "whatsapp")
    form.add_field("type", "application/pdf")
    form.add_field("file", content, filename="big.pdf", content_type="application/pdf")
    status, body = await sim.graph("POST", f"/v24.0/{A1_NUMBER}/media", data=form)
    assert status == 200, body
    _, info = await sim.graph("GET", f"/v24.0/{body['id']}")
    assert info["file_size"] == str(len(content))
    status, downloaded, _ = await download(sim, info["url"])
    assert status == 200 and downloaded == content
