"""Calls passed through to Meta with the number's own access token: mark-as-read (and the
typing indicator) and the Media API (upload, URL, download, delete). The rules are pure, in
passthrough.py and media.py; this shell looks things up, paces, and talks to Meta.

None of them is queued or billed: each is answered with Meta's own answer. Uploads are stored
in a temporary file while they are read (checked before anything is forwarded, never held in
memory) and streamed to Meta from it; downloads are streamed from Meta to the client.
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import IO, Any

from aiohttp import BodyPartReader, MultipartReader
from aiohttp.http_exceptions import HttpProcessingError

from services.ingest import media as rules
from services.ingest import passthrough
from services.ingest.errors import reject
from services.ingest.handlers import Ingest
from services.ingest.meta_client import Download, Graph
from services.ingest.metrics import PASSTHROUGH_CALLS
from services.ingest.repository import MediaStore
from shared.clock import Clock
from shared.errors import PermanentError, ServiceError
from shared.secrets import TokenVault

Sleep = Callable[[float], Awaitable[None]]
CHUNK_BYTES = 64 * 1024
MAX_FIELD_BYTES = 1024
# Form fields forwarded to Meta besides `file`, `type` and `messaging_product`.
FORWARDED_FIELDS = ("ttl_minutes",)


class Calls:
    """Pass-through calls, over injected adapters (fakes in unit tests)."""

    def __init__(
        self,
        *,
        ingest: Ingest,
        media: MediaStore,
        meta: Graph,
        vault: TokenVault | None,
        pacer: passthrough.PassThroughPacer,
        clock: Clock,
        sleep: Sleep = asyncio.sleep,
        spool_dir: str | None = None,
    ) -> None:
        self.ingest = ingest
        self.inbox = ingest.inbox
        self.media = media
        self.meta = meta
        self.vault = vault
        self.pacer = pacer
        self.clock = clock
        self.sleep = sleep
        self.spool_dir = spool_dir

    # --- mark-as-read and typing ---------------------------------------------------------

    async def mark_read(
        self, account_id: str, call: passthrough.ReadCall, phone_number_id: str | None = None
    ) -> dict[str, Any]:
        doc = await self.inbox.inbound_message(call.message_id)
        number = passthrough.check_inbound_for_read(
            doc, account_id, phone_number_id, call.message_id
        )
        token = await self._turn_and_token(number, "typing" if call.typing else "read")
        answer = await self.meta.mark_read(number, token, passthrough.mark_read_body(call))
        if not answer.ok:
            raise passthrough.meta_refusal(answer.status, answer.body)
        return answer.body if isinstance(answer.body, dict) else {"success": True}

    # --- media -------------------------------------------------------------------------------

    async def upload(
        self,
        account_id: str,
        reader: MultipartReader,
        *,
        phone_number_id: str | None,
        meta_shape: bool,
    ) -> dict[str, Any]:
        """Read the form (the file into a temporary file, checked as it comes), check it as
        Meta would, then forward it and record the media id. `phone_number_id`: the number
        in the path (Meta's route), already checked; else the form's or the query's."""
        with tempfile.TemporaryFile(dir=self.spool_dir) as spool:
            fields, found = await _read_form(reader, spool)
            upload = rules.check_upload(
                messaging_product=fields.get(
                    "messaging_product", None if meta_shape else "whatsapp"
                ),
                declared_type=rules.normalise_mime(fields.get("type")),
                part_type=found[0] if found else None,
                file_size=found[1] if found else None,
                sha256=found[2] if found else None,
                filename=found[3] if found else None,
            )
            number = phone_number_id or fields.get("phone_number_id")
            if not number:
                raise reject(
                    "invalid_field",
                    "name the uploading number: `phone_number_id`",
                    field="phone_number_id",
                )
            if phone_number_id is None:
                await self.ingest.own_phone_number(account_id, number)
            token = await self._turn_and_token(number, "upload")
            spool.seek(0)
            answer = await self.meta.upload(
                number,
                token,
                spool,
                mime_type=upload.mime_type,
                filename=upload.filename or "file",
                extra={k: fields[k] for k in FORWARDED_FIELDS if k in fields},
            )
        if not answer.ok:
            raise passthrough.meta_refusal(answer.status, answer.body)
        doc = rules.media_doc(
            media_id=rules.uploaded_id(answer.body),
            account_id=account_id,
            phone_number_id=number,
            upload=upload,
            now_ms=self.clock.now_ms(),
        )
        await self.media.insert(doc)
        return doc

    async def source(
        self, account_id: str, media_id: str, phone_number_id: str | None = None
    ) -> rules.MediaSource:
        """Whose the media id is: the account's upload, or a file it received."""
        upload = await self.media.get(media_id)
        inbound = None
        if upload is None or upload.get("account_id") != account_id or upload.get("deleted_at"):
            inbound = await self.inbox.inbound_with_media(media_id)
        return rules.media_source(account_id, media_id, upload, inbound, phone_number_id)

    async def media_info(
        self, account_id: str, media_id: str, phone_number_id: str | None = None
    ) -> tuple[rules.MediaInfo, rules.MediaSource]:
        source = await self.source(account_id, media_id, phone_number_id)
        token = await self._turn_and_token(source.phone_number_id, "media_url")
        answer = await self.meta.media_info(media_id, token)
        if not answer.ok:
            raise passthrough.meta_refusal(answer.status, answer.body)
        return rules.media_info(answer.body, media_id), source

    @asynccontextmanager
    async def open_media(self, account_id: str, media_id: str) -> AsyncIterator[Download]:
        """The file's bytes from Meta: its URL first (GET /{media-id}), then the download with
        the number's token; read `chunks` inside the context."""
        info, source = await self.media_info(account_id, media_id)
        token = await self._token(source.phone_number_id)
        PASSTHROUGH_CALLS.labels("download", "made").inc()
        async with self.meta.download(info.url, token) as download:
            if download.status >= 300:
                raise passthrough.meta_refusal(download.status, None)
            yield Download(
                download.status,
                download.content_type or info.mime_type,
                download.content_length,
                download.chunks,
            )

    async def delete(
        self, account_id: str, media_id: str, phone_number_id: str | None = None
    ) -> dict[str, Any]:
        source = await self.source(account_id, media_id, phone_number_id)
        token = await self._turn_and_token(source.phone_number_id, "delete_media")
        answer = await self.meta.delete_media(media_id, token)
        if not answer.ok:
            raise passthrough.meta_refusal(answer.status, answer.body)
        if source.kind == "upload":
            await self.media.mark_deleted(media_id, self.clock.now_ms())
        return answer.body if isinstance(answer.body, dict) else {"success": True}

    # --- pace and token --------------------------------------------------------------------

    async def _turn_and_token(self, phone_number_id: str, call: str) -> str:
        token = await self._token(phone_number_id)
        wait = self.pacer.admit(phone_number_id, self.clock.monotonic())
        if wait is None:
            PASSTHROUGH_CALLS.labels(call, "refused").inc()
            raise passthrough.too_fast(phone_number_id, self.pacer.retry_after(phone_number_id))
        if wait > 0:
            await self.sleep(wait)
        PASSTHROUGH_CALLS.labels(call, "made").inc()
        return token

    async def _token(self, phone_number_id: str) -> str:
        doc = await self.ingest.directory.access_token(phone_number_id)
        encrypted = (doc or {}).get("access_token_encrypted")
        if self.vault is None or not encrypted:
            raise reject(
                "internal_error",
                "this service cannot use the number's access token "
                "(HALA_TOKEN_KEYS or the token is missing)",
            )
        try:
            return self.vault.decrypt(str(encrypted))
        except PermanentError:
            raise reject(
                "internal_error",
                "the number's access token cannot be decrypted with the configured keys",
            ) from None


async def _read_form(
    reader: MultipartReader, spool: IO[bytes]
) -> tuple[dict[str, str], tuple[str | None, int, str, str | None] | None]:
    """The form's small fields, and the file part stored into `spool`: (its type, size, hex
    sha256, filename). Refused as soon as the file passes the limit of its type."""
    fields: dict[str, str] = {}
    found: tuple[str | None, int, str, str | None] | None = None
    try:
        while True:
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader):
                raise reject("invalid_multipart", "nested multipart bodies are not accepted")
            if part.name == "file":
                if found is not None:
                    raise reject("invalid_multipart", "one `file` per upload")
                found = await _store_file(part, spool, fields)
            elif part.name:
                fields[part.name] = await _read_field(part)
    except ServiceError:
        raise
    except (
        ValueError,
        AssertionError,
        UnicodeDecodeError,
        RuntimeError,
        HttpProcessingError,
    ) as exc:
        # HttpProcessingError: a part's headers that HTTP forbids (control characters in a
        # field's name), raised by aiohttp's parser as InvalidHeader.
        raise reject("invalid_multipart", f"the form cannot be read: {exc}") from None
    return fields, found


async def _store_file(
    part: BodyPartReader, spool: IO[bytes], fields: dict[str, str]
) -> tuple[str | None, int, str, str | None]:
    part_type = rules.normalise_mime(part.headers.get("Content-Type"))
    declared = rules.normalise_mime(fields.get("type"))
    limit = rules.upload_limit(part_type, declared)
    size = 0
    digest = hashlib.sha256()
    while True:
        chunk = await part.read_chunk(CHUNK_BYTES)
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise rules.too_large(declared or part_type, limit)
        digest.update(chunk)
        spool.write(chunk)
    return part_type, size, digest.hexdigest(), part.filename


async def _read_field(part: BodyPartReader) -> str:
    value = bytearray()
    while True:
        chunk = await part.read_chunk(MAX_FIELD_BYTES)
        if not chunk:
            break
        value += chunk
        if len(value) > MAX_FIELD_BYTES:
            raise reject("invalid_multipart", f"the form field `{part.name}` is too long")
    return value.decode().strip()
