"""The Media API through ingest: uploads checked against Meta's types and limits before anything
is forwarded, then streamed to Meta with the number's token and recorded; the URL, the bytes and
deletion for the account that uploaded or received a media id, 404 for everyone else."""

from __future__ import annotations

import hashlib
import time
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import IO, Any

import aiohttp
import msgspec
import pytest

from services.ingest import media as rules
from services.ingest.meta_client import Download, MetaAnswer
from services.ingest.schemas import MediaInfoView, MediaUploadView, MetaMediaUrl
from shared.errors import ServiceError
from tests.unit.ingest.fakes import KEY_B, PHONE_A, PHONE_B, TOKEN_A, World, auth

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8


def _form(
    data: bytes,
    *,
    file_type: str | None = "image/png",
    declared: str | None = None,
    product: str | None = "whatsapp",
    filename: str = "image.jpg",
    extra: dict[str, str] | None = None,
    fields_first: bool = False,
) -> aiohttp.FormData:
    """A multipart form as pywa 4.5 writes it: the file first, then the fields."""
    form = aiohttp.FormData()
    fields = {
        **({"messaging_product": product} if product else {}),
        **({"type": declared} if declared else {}),
        **(extra or {}),
    }
    if fields_first:
        for name, value in fields.items():
            form.add_field(name, value)
    form.add_field(
        "file", data, filename=filename, **({"content_type": file_type} if file_type else {})
    )
    if not fields_first:
        for name, value in fields.items():
            form.add_field(name, value)
    return form


async def _upload(
    world: World, form: aiohttp.FormData, phone: str = PHONE_A, key: str | None = None
) -> Any:
    return await world.client.post(
        f"/v24.0/{phone}/media", data=form, headers=auth(key) if key else auth()
    )


# --- the rules -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mime", "size", "code"),
    [
        ("image/png", 5 * rules.MB, None),
        ("image/png", 5 * rules.MB + 1, "media_too_large"),
        ("image/jpeg", 100, None),
        ("image/webp", 500 * rules.KB + 1, "media_too_large"),
        ("video/mp4", 16 * rules.MB, None),
        ("audio/ogg", 16 * rules.MB + 1, "media_too_large"),
        ("application/pdf", 100 * rules.MB, None),
        ("application/pdf", 100 * rules.MB + 1, "media_too_large"),
        ("image/gif", 100, "unsupported_media_type"),
        ("application/zip", 100, "unsupported_media_type"),
        (None, 100, "unsupported_media_type"),
    ],
)
def test_meta_types_and_size_limits(mime: str | None, size: int, code: str | None) -> None:
    def check() -> rules.Upload:
        return rules.check_upload(
            messaging_product="whatsapp",
            declared_type=mime,
            part_type=None,
            file_size=size,
            sha256="x",
            filename=None,
        )

    if code is None:
        assert check().mime_type == mime
    else:
        with pytest.raises(ServiceError) as refused:
            check()
        assert refused.value.code == code


def test_the_type_field_wins_over_the_parts_type_and_mime_types_are_normalised() -> None:
    upload = rules.check_upload(
        messaging_product="whatsapp",
        declared_type=rules.normalise_mime("Image/PNG; q=1"),
        part_type="application/octet-stream",
        file_size=3,
        sha256="x",
        filename="a.jpg",
    )
    assert upload.mime_type == "image/png"
    assert rules.upload_limit("image/png", None) == 5 * rules.MB
    assert rules.upload_limit("application/octet-stream", "image/webp") == 500 * rules.KB
    assert rules.upload_limit(None, None) == rules.MAX_MEDIA_BYTES
    for product, size, field in (
        ("facebook", 3, "messaging_product"),
        ("whatsapp", None, "file"),
        ("whatsapp", 0, "file"),
    ):
        with pytest.raises(ServiceError) as refused:
            rules.check_upload(
                messaging_product=product,
                declared_type="image/png",
                part_type=None,
                file_size=size,
                sha256="x",
                filename=None,
            )
        assert refused.value.details["field"] == field


def test_a_media_id_is_the_accounts_that_uploaded_or_received_it() -> None:
    upload = {
        "_id": "m1",
        "account_id": "acc_a",
        "phone_number_id": "1",
        "mime_type": "image/png",
        "deleted_at": None,
    }
    inbound = {"_id": "wamid.x", "account_id": "acc_a", "phone_number_id": "2"}
    assert rules.media_source("acc_a", "m1", upload, None).kind == "upload"
    assert rules.media_source("acc_a", "m1", None, inbound) == rules.MediaSource(
        "m1", "2", "inbound"
    )
    assert rules.media_source("acc_a", "m1", upload, None, phone_number_id="1").kind == "upload"
    for account, up, inb, number in (
        ("acc_b", upload, None, None),
        ("acc_b", None, inbound, None),
        ("acc_a", None, None, None),
        ("acc_a", {**upload, "deleted_at": 5}, None, None),
        ("acc_a", upload, None, "2"),
    ):
        with pytest.raises(ServiceError) as refused:
            rules.media_source(account, "m1", up, inb, number)
        assert refused.value.code == "not_found" and refused.value.http_status == 404


def test_metas_answer_is_read_whether_file_size_is_a_string_or_a_number() -> None:
    for size in ("303833", 303833):
        info = rules.media_info(
            {
                "url": "https://x/y",
                "mime_type": "image/jpeg",
                "sha256": "ab",
                "file_size": size,
                "id": "7",
            },
            "7",
        )
        assert info.file_size == 303833
        view = rules.meta_media_view(info, "http://us/v1/media/7")
        assert msgspec.convert(view, MetaMediaUrl).file_size == "303833"
    with pytest.raises(ServiceError):
        rules.media_info({"id": "7"}, "7")


# --- through the API -----------------------------------------------------------------------------


async def test_a_pywa_style_upload_is_checked_forwarded_with_the_token_and_recorded() -> None:
    async with World() as world:
        resp = await _upload(world, _form(PNG, declared="image/png", extra={"ttl_minutes": "120"}))
        assert resp.status == 200, await resp.text()
        media_id = (await resp.json())["id"]
        assert world.meta.files[media_id] == ("image/png", PNG)  # the bytes, whole, at Meta
        [(call, token, what)] = world.meta.calls
        assert (call, token) == ("upload", TOKEN_A)
        assert what == {
            "phone_number_id": PHONE_A,
            "mime_type": "image/png",
            "filename": "image.jpg",
            "size": len(PNG),
            "ttl_minutes": "120",
        }
        doc = world.media.docs[media_id]
        assert doc == {
            "_id": media_id,
            "account_id": "acc_a",
            "phone_number_id": PHONE_A,
            "mime_type": "image/png",
            "file_size": len(PNG),
            "sha256": hashlib.sha256(PNG).hexdigest(),
            "uploaded_at": world.clock.now_ms(),
            "deleted_at": None,
        }


@pytest.mark.parametrize(
    ("form", "status", "code", "meta_code"),
    [
        (
            _form(PNG, file_type="image/gif", declared="image/gif"),
            400,
            "unsupported_media_type",
            100,
        ),
        (_form(PNG, file_type=None), 400, "unsupported_media_type", 100),
        (_form(PNG, declared="image/png", product=None), 400, "invalid_field", 100),
        (
            _form(b"x" * (500 * 1024 + 1), file_type="image/webp", declared="image/webp"),
            400,
            "media_too_large",
            100,
        ),
        (_form(b"", declared="image/png"), 400, "invalid_field", 100),
    ],
)
async def test_a_refused_upload_forwards_nothing(
    form: aiohttp.FormData, status: int, code: str, meta_code: int
) -> None:
    async with World() as world:
        resp = await _upload(world, form)
        error = (await resp.json())["error"]
        assert resp.status == status and error["code"] == meta_code
        assert error["error_data"]["details"].startswith(code)
        assert world.meta.calls == [] and world.media.docs == {}


async def test_an_upload_that_is_not_a_form_or_on_anothers_number_is_refused() -> None:
    async with World() as world:
        resp = await world.client.post(
            f"/v24.0/{PHONE_A}/media", json={"file": "x"}, headers=auth()
        )
        assert (await resp.json())["error"]["error_data"]["details"].startswith("invalid_multipart")
        resp = await _upload(world, _form(PNG), phone=PHONE_B)
        assert (await resp.json())["error"]["error_data"]["details"].startswith(
            "foreign_phone_number"
        )
        assert world.meta.calls == []


async def test_our_upload_route_takes_the_number_from_the_query_or_the_form() -> None:
    async with World() as world:
        resp = await world.client.post(
            f"/v1/media?phone_number_id={PHONE_A}", data=_form(PNG, product=None), headers=auth()
        )
        assert resp.status == 201, await resp.text()
        view = msgspec.convert(await resp.json(), MediaUploadView)
        assert view.file_size == len(PNG) and view.mime_type == "image/png"
        assert view.sha256 == hashlib.sha256(PNG).hexdigest()
        resp = await world.client.post(
            "/v1/media",
            headers=auth(),
            data=_form(PNG, product=None, extra={"phone_number_id": PHONE_A}, fields_first=True),
        )
        assert resp.status == 201
        resp = await world.client.post(
            "/v1/media", headers=auth(), data=_form(PNG, extra={"phone_number_id": PHONE_B})
        )
        assert resp.status == 403
        resp = await world.client.post("/v1/media", data=_form(PNG), headers=auth())
        assert (await resp.json())["error"]["details"]["field"] == "phone_number_id"
        assert len(world.media.docs) == 2


async def test_the_media_url_points_at_our_download_and_the_bytes_come_through() -> None:
    async with World() as world:
        media_id = (await (await _upload(world, _form(PNG))).json())["id"]
        resp = await world.client.get(f"/v24.0/{media_id}", headers=auth())
        assert resp.status == 200
        answer = msgspec.convert(await resp.json(), MetaMediaUrl)
        assert answer.url == f"http://{resp.url.host}:{resp.url.port}/v1/media/{media_id}"
        assert (answer.mime_type, answer.file_size) == ("image/png", str(len(PNG)))
        download = await world.client.get(
            answer.url.split(str(resp.url.port), 1)[1], headers=auth()
        )
        assert download.status == 200
        assert download.headers["Content-Type"] == "image/png"
        assert await download.read() == PNG
        info = await world.client.get(f"/v1/media/{media_id}/info", headers=auth())
        view = msgspec.convert(await info.json(), MediaInfoView)
        assert (view.source, view.phone_number_id, view.file_size) == ("upload", PHONE_A, len(PNG))
        assert [c[0] for c in world.meta.calls] == [
            "upload",
            "media_url",
            "media_url",
            "download",
            "media_url",
        ]
        assert {c[1] for c in world.meta.calls} == {TOKEN_A}


async def test_received_media_is_the_receiving_accounts_and_nobody_elses() -> None:
    async with World() as world:
        world.meta.received("1234567890", "audio/ogg", b"OggS voice")
        world.inbox.user_wrote(
            "acc_a",
            PHONE_A,
            "447912345678",
            message_type="audio",
            content={"id": "1234567890", "mime_type": "audio/ogg"},
            media_id="1234567890",
        )
        resp = await world.client.get("/v1/media/1234567890", headers=auth())
        assert resp.status == 200 and await resp.read() == b"OggS voice"
        assert resp.headers["Content-Type"] == "audio/ogg"
        for path in ("/v1/media/1234567890", "/v1/media/1234567890/info"):
            other = await world.client.get(path, headers=auth(KEY_B))
            assert other.status == 404
            assert (await other.json())["error"]["code"] == "not_found"
        meta = await world.client.get("/v24.0/1234567890", headers=auth(KEY_B))
        assert meta.status == 404 and (await meta.json())["error"]["code"] == 100
        unknown = await world.client.get("/v1/media/555", headers=auth())
        assert unknown.status == 404
        assert [c[0] for c in world.meta.calls] == ["media_url", "download"]


async def test_deleted_media_is_gone_and_metas_own_not_found_is_404() -> None:
    async with World() as world:
        media_id = (await (await _upload(world, _form(PNG))).json())["id"]
        other = await world.client.delete(f"/v1/media/{media_id}", headers=auth(KEY_B))
        assert other.status == 404
        resp = await world.client.delete(f"/v24.0/{media_id}", headers=auth())
        assert resp.status == 200 and await resp.json() == {"success": True}
        assert world.media.docs[media_id]["deleted_at"] == world.clock.now_ms()
        gone = await world.client.get(f"/v1/media/{media_id}/info", headers=auth())
        assert gone.status == 404
        # received media Meta no longer has (expired after 7 days): Meta's 100/33 -> 404
        world.inbox.user_wrote(
            "acc_a",
            PHONE_A,
            "447912345678",
            message_type="image",
            content={"id": "777"},
            media_id="777",
        )
        expired = await world.client.get("/v1/media/777", headers=auth())
        assert expired.status == 404
        relayed = await world.client.get("/v24.0/777", headers=auth())
        assert (await relayed.json())["error"]["error_subcode"] == 33


async def test_the_number_filter_restricts_to_media_of_that_number() -> None:
    async with World() as world:
        media_id = (await (await _upload(world, _form(PNG))).json())["id"]
        ok = await world.client.get(f"/v24.0/{media_id}?phone_number_id={PHONE_A}", headers=auth())
        other = await world.client.get(
            f"/v24.0/{media_id}?phone_number_id=109731225428302", headers=auth()
        )
        assert (ok.status, other.status) == (200, 404)


async def test_a_download_cut_off_at_meta_is_cut_off_for_the_client() -> None:
    async with World() as world:
        media_id = (await (await _upload(world, _form(PNG))).json())["id"]
        world.meta.cut_download_after = 1000
        resp = await world.client.get(f"/v1/media/{media_id}", headers=auth())
        assert resp.status == 200  # the status line was sent before Meta failed
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()  # never a complete-looking, truncated file


class CountingMeta:
    """Meta for large files: counts and hashes what it is sent, serves generated bytes."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.received: tuple[int, str] | None = None

    async def upload(
        self,
        phone_number_id: str,
        token: str,
        file: IO[bytes],
        *,
        mime_type: str,
        filename: str,
        extra: dict[str, str],
    ) -> MetaAnswer:
        digest, size = hashlib.sha256(), 0
        while chunk := file.read(65536):
            digest.update(chunk)
            size += len(chunk)
        self.received = (size, digest.hexdigest())
        return MetaAnswer(200, {"id": "5550001"})

    async def media_info(self, media_id: str, token: str) -> MetaAnswer:
        return MetaAnswer(
            200,
            {
                "url": "https://lookaside.test/5550001",
                "id": media_id,
                "mime_type": "application/pdf",
                "file_size": str(self.size),
            },
        )

    @asynccontextmanager
    async def download(self, url: str, token: str) -> AsyncIterator[Download]:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(self.size // 65536):
                yield b"d" * 65536

        yield Download(200, "application/pdf", self.size, chunks())


async def test_a_large_file_is_streamed_both_ways_never_held_in_memory() -> None:
    size = 24 * rules.MB
    async with World() as world:
        meta = CountingMeta(size)
        world.calls.meta = meta

        async def body() -> AsyncIterator[bytes]:
            for _ in range(size // 65536):
                yield b"%" * 65536

        with aiohttp.MultipartWriter("form-data") as form:
            form.append(body(), {"Content-Type": "application/pdf"}).set_content_disposition(
                "form-data", name="file", filename="big.pdf"
            )
            form.append("whatsapp").set_content_disposition("form-data", name="messaging_product")
        expected = hashlib.sha256()
        for _ in range(size // 65536):
            expected.update(b"%" * 65536)
        tracemalloc.start()
        try:
            started = time.perf_counter()
            resp = await world.client.post(f"/v24.0/{PHONE_A}/media", data=form, headers=auth())
            assert resp.status == 200, await resp.text()
            assert meta.received == (size, expected.hexdigest())
            _, upload_peak = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            download = await world.client.get("/v1/media/5550001", headers=auth())
            total = 0
            async for chunk in download.content.iter_chunked(65536):
                total += len(chunk)
            _, download_peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert total == size
        # client, server and Meta's stand-in share this process: all of them stayed far below
        # the file's size (a buffered file would show 24 MB or more)
        assert upload_peak < 4 * rules.MB and download_peak < 4 * rules.MB, (
            upload_peak,
            download_peak,
        )
        assert time.perf_counter() - started < 60


# Found by schemathesis (tests/e2e/test_openapi_fuzz.py): a part whose headers HTTP forbids (a
# control character in a field's name) made aiohttp's parser raise InvalidHeader: a 500.
async def test_a_form_part_with_forbidden_header_bytes_is_invalid_multipart() -> None:
    boundary = "b0undary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="a\x15b"\r\n\r\nx\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="f"\r\nContent-Type: image/png\r\n\r\n'
        ).encode()
        + PNG
        + (f"\r\n--{boundary}--\r\n").encode()
    )
    async with World() as world:
        resp = await world.client.post(
            f"/v1/media?phone_number_id={PHONE_A}",
            data=body,
            headers={**auth(), "Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        assert resp.status == 400, await resp.text()
        assert (await resp.json())["error"]["code"] == "invalid_multipart"
        assert world.meta.calls == [] and world.media.docs == {}
