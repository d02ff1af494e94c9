"""The Media API's store: uploaded and inbound media, their lifetimes, and signed download URLs.

Meta's rules (reference §3): an uploaded media id lives 30 days, one from an inbound webhook 7
days (unless deleted); a download URL works for 5 minutes and only with a bearer token that may
act on the media's WABA. Lifetimes run on the simulator clock unscaled, like every rule window.

No I/O and no clock reads: callers pass `now` (monotonic) and `wall` (unix seconds).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

UPLOAD_LIFETIME_SECONDS = 30 * 86_400
INBOUND_LIFETIME_SECONDS = 7 * 86_400
URL_LIFETIME_SECONDS = 5 * 60
DOWNLOAD_PATH = "/whatsapp_business/attachments/"


@dataclass(slots=True)
class MediaItem:
    id: str
    waba_id: str
    phone_number_id: str  # the number it was uploaded on, or that received it
    origin: str  # upload | inbound
    mime_type: str
    content: bytes
    sha256: bytes
    filename: str | None
    created_at: float  # monotonic
    created_wall: float
    expires_at: float  # monotonic
    deleted: bool = False

    @property
    def size(self) -> int:
        return len(self.content)

    @property
    def sha256_hex(self) -> str:
        return self.sha256.hex()

    @property
    def sha256_b64(self) -> str:
        """Meta's inbound webhook examples carry the hash base64-encoded."""
        return base64.b64encode(self.sha256).decode()

    def alive(self, now: float) -> bool:
        return not self.deleted and now < self.expires_at

    def as_control(self, now: float, wall: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "waba_id": self.waba_id,
            "phone_number_id": self.phone_number_id,
            "origin": self.origin,
            "mime_type": self.mime_type,
            "sha256": self.sha256_hex,
            "sha256_b64": self.sha256_b64,
            "file_size": self.size,
            "filename": self.filename,
            "created_at": self.created_wall,
            "expires_at": wall + (self.expires_at - now),
            "deleted": self.deleted,
            "expired": now >= self.expires_at,
            "content_b64": base64.b64encode(self.content).decode(),
        }


class MediaStore:
    """Media by id, bounded by total bytes (the oldest are forgotten first)."""

    def __init__(self, rng: random.Random, url_key: bytes, max_bytes: int) -> None:
        self._rng = rng
        self._url_key = url_key
        self.max_bytes = max_bytes
        self.items: OrderedDict[str, MediaItem] = OrderedDict()
        self.total_bytes = 0

    def add(
        self,
        *,
        waba_id: str,
        phone_number_id: str,
        origin: str,
        mime_type: str,
        content: bytes,
        filename: str | None,
        now: float,
        wall: float,
    ) -> MediaItem:
        media_id = str(self._rng.randrange(10**15, 10**16))
        while media_id in self.items:
            media_id = str(self._rng.randrange(10**15, 10**16))
        lifetime = UPLOAD_LIFETIME_SECONDS if origin == "upload" else INBOUND_LIFETIME_SECONDS
        item = MediaItem(
            media_id,
            waba_id,
            phone_number_id,
            origin,
            mime_type,
            content,
            hashlib.sha256(content).digest(),
            filename,
            now,
            wall,
            now + lifetime,
        )
        self.items[media_id] = item
        self.total_bytes += item.size
        while self.total_bytes > self.max_bytes and len(self.items) > 1:
            _, oldest = self.items.popitem(last=False)
            self.total_bytes -= oldest.size
        return item

    def get(self, media_id: str) -> MediaItem | None:
        return self.items.get(media_id)

    def live(self, media_id: str, now: float) -> MediaItem | None:
        item = self.items.get(media_id)
        return item if item is not None and item.alive(now) else None

    # -- download URLs --------------------------------------------------------------------

    def _signature(self, media_id: str, expires: int) -> str:
        message = f"{media_id}:{expires}".encode()
        return hmac.new(self._url_key, message, hashlib.sha256).hexdigest()[:32]

    def url(self, base_url: str, item: MediaItem, wall: float) -> str:
        """A download URL shaped like Meta's lookaside one, valid for 5 minutes from `wall`."""
        expires = int(wall) + URL_LIFETIME_SECONDS
        query = urlencode(
            {"mid": item.id, "ext": expires, "hash": self._signature(item.id, expires)}
        )
        return f"{base_url.rstrip('/')}{DOWNLOAD_PATH}?{query}"

    def resolve_url(self, query: dict[str, str], now: float, wall: float) -> MediaItem | str:
        """The live media a download URL names, or why it does not work."""
        media_id, ext, signature = query.get("mid", ""), query.get("ext", ""), query.get("hash")
        if not ext.isdigit() or signature is None:
            return "malformed media URL"
        if not hmac.compare_digest(signature, self._signature(media_id, int(ext))):
            return "media URL signature does not match"
        if wall >= int(ext):
            return "media URL expired; get a new one from GET /<MEDIA_ID>"
        item = self.live(media_id, now)
        if item is None:
            return "media no longer available"
        return item
