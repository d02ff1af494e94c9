"""The Media API's rules, pure: which files Meta takes and how large, who may see a media id,
and the shapes of Meta's answers and ours.

No await, no clock, no I/O (the upload is read and forwarded by handlers.py's shell; the sizes,
hashes and times are passed in here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.ingest.core import iso
from services.ingest.errors import reject

KB = 1024
MB = 1024 * 1024

# Meta's types and size limits per type (upload = send): images 5 MB, video and audio 16 MB,
# documents 100 MB, stickers (WebP) 500 KB animated / 100 KB static -- the larger is allowed,
# since whether a WebP is animated is for Meta to tell.
MEDIA_LIMITS: dict[str, int] = {
    "audio/aac": 16 * MB,
    "audio/amr": 16 * MB,
    "audio/mpeg": 16 * MB,
    "audio/mp4": 16 * MB,
    "audio/ogg": 16 * MB,
    "audio/opus": 16 * MB,
    "text/plain": 100 * MB,
    "application/pdf": 100 * MB,
    "application/msword": 100 * MB,
    "application/vnd.ms-excel": 100 * MB,
    "application/vnd.ms-powerpoint": 100 * MB,
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": 100 * MB,
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": 100 * MB,
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": 100 * MB,
    "image/jpeg": 5 * MB,
    "image/png": 5 * MB,
    "image/webp": 500 * KB,
    "video/mp4": 16 * MB,
    "video/3gpp": 16 * MB,
}
MAX_MEDIA_BYTES = max(MEDIA_LIMITS.values())
# The form around the file (part headers, the other fields) may add this much to a request.
MULTIPART_OVERHEAD = 64 * KB
MEDIA_ID_PATTERN = r"[0-9A-Za-z_.:-]{1,128}"


def normalise_mime(value: str | None) -> str | None:
    """`Image/PNG; charset=x` -> `image/png`; None for nothing."""
    if not value:
        return None
    return value.split(";", 1)[0].strip().lower() or None


def upload_limit(part_type: str | None, declared_type: str | None) -> int:
    """How many bytes of the file to accept while reading it: the limit of the type known so
    far (the `type` field when it came before the file, else the file part's own type), or the
    largest limit when neither is a type Meta takes (refused once the form is read)."""
    for mime in (declared_type, part_type):
        if mime in MEDIA_LIMITS:
            return MEDIA_LIMITS[mime]
    return MAX_MEDIA_BYTES


@dataclass(frozen=True, slots=True)
class Upload:
    """A read upload form: the file's type (Meta's `type` field, else the file part's) and
    what was counted while it was stored."""

    mime_type: str
    file_size: int
    sha256: str
    filename: str | None


def check_upload(
    *,
    messaging_product: str | None,
    declared_type: str | None,
    part_type: str | None,
    file_size: int | None,
    sha256: str | None,
    filename: str | None,
) -> Upload:
    """The upload as Meta would take it, or our error: `messaging_product` whatsapp, a file,
    one of Meta's types, within that type's size."""
    if messaging_product != "whatsapp":
        raise reject(
            "invalid_field", "`messaging_product` must be `whatsapp`", field="messaging_product"
        )
    if file_size is None or sha256 is None:
        raise reject("invalid_field", "the form has no `file` part", field="file")
    if file_size == 0:
        raise reject("invalid_field", "the file is empty", field="file")
    mime = declared_type or part_type
    if mime not in MEDIA_LIMITS:
        raise reject(
            "unsupported_media_type",
            f"{mime or 'a file without a type'} is not a type WhatsApp takes",
            field="type",
            mime_type=mime,
            supported=sorted(MEDIA_LIMITS),
        )
    limit = MEDIA_LIMITS[mime]
    if file_size > limit:
        raise too_large(mime, limit)
    return Upload(mime, file_size, sha256, filename)


def too_large(mime: str | None, limit: int) -> Exception:
    return reject(
        "media_too_large",
        f"the file exceeds {limit} bytes, the limit for {mime or 'any media'}",
        field="file",
        limit=limit,
        mime_type=mime,
    )


def media_doc(
    *, media_id: str, account_id: str, phone_number_id: str, upload: Upload, now_ms: int
) -> dict[str, Any]:
    """The `media` document of an upload Meta accepted (ingest is the collection's writer)."""
    return {
        "_id": media_id,
        "account_id": account_id,
        "phone_number_id": phone_number_id,
        "mime_type": upload.mime_type,
        "file_size": upload.file_size,
        "sha256": upload.sha256,
        "uploaded_at": now_ms,
        "deleted_at": None,
    }


# --- who may see a media id -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MediaSource:
    """Where an account's media id comes from, and the number whose token reads it."""

    media_id: str
    phone_number_id: str
    kind: str  # upload | inbound
    mime_type: str | None = None
    sha256: str | None = None
    file_size: int | None = None


def media_source(
    account_id: str,
    media_id: str,
    upload: dict[str, Any] | None,
    inbound: dict[str, Any] | None,
    phone_number_id: str | None = None,
) -> MediaSource:
    """The media id is the account's when it uploaded it (and did not delete it) or received
    it in an inbound message; anything else -- another account's, unknown, deleted -- is the
    same 404, so that ids of other accounts are not revealed. `phone_number_id` (Meta's query
    parameter) restricts the call to media of that number."""
    if (
        upload is not None
        and upload.get("account_id") == account_id
        and not upload.get("deleted_at")
    ):
        source = MediaSource(
            media_id,
            str(upload["phone_number_id"]),
            "upload",
            upload.get("mime_type"),
            upload.get("sha256"),
            upload.get("file_size"),
        )
    elif inbound is not None and inbound.get("account_id") == account_id:
        source = MediaSource(media_id, str(inbound["phone_number_id"]), "inbound")
    else:
        raise media_not_found(media_id)
    if phone_number_id is not None and phone_number_id != source.phone_number_id:
        raise media_not_found(media_id)
    return source


def media_not_found(media_id: str) -> Exception:
    return reject("not_found", f"no media {media_id} for this account", media_id=media_id)


# --- Meta's answers ---------------------------------------------------------------------------


def uploaded_id(answer: Any) -> str:
    """The id in Meta's answer to an upload (`{"id": "..."}`)."""
    media_id = answer.get("id") if isinstance(answer, dict) else None
    if not isinstance(media_id, str | int) or not str(media_id):
        raise reject("meta_error", "Meta answered the upload without a media id")
    return str(media_id)


@dataclass(frozen=True, slots=True)
class MediaInfo:
    """Meta's `GET /{media-id}`: the short-lived download URL and what it points at."""

    media_id: str
    url: str
    mime_type: str | None
    sha256: str | None
    file_size: int | None


def media_info(answer: Any, media_id: str) -> MediaInfo:
    """Read Meta's answer (`file_size` is a string in Meta's reference, a number elsewhere)."""
    if not isinstance(answer, dict) or not isinstance(answer.get("url"), str):
        raise reject("meta_error", "Meta answered the media lookup without a url")
    size = answer.get("file_size")
    try:
        file_size = int(size) if size is not None else None
    except (TypeError, ValueError):
        file_size = None
    mime = answer.get("mime_type")
    digest = answer.get("sha256")
    return MediaInfo(
        str(answer.get("id") or media_id),
        answer["url"],
        mime if isinstance(mime, str) else None,
        digest if isinstance(digest, str) else None,
        file_size,
    )


def meta_media_view(info: MediaInfo, download_url: str) -> dict[str, Any]:
    """Meta's shape, with `url` at our own download route: a client downloading it with its
    bearer token (its API key) gets the bytes through us."""
    view: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "url": download_url,
        "mime_type": info.mime_type,
        "sha256": info.sha256,
        "file_size": str(info.file_size) if info.file_size is not None else None,
        "id": info.media_id,
    }
    return {k: v for k, v in view.items() if v is not None}


def media_view(info: MediaInfo, source: MediaSource, download_url: str) -> dict[str, Any]:
    """`GET /v1/media/{id}/info`."""
    return {
        "id": info.media_id,
        "source": source.kind,
        "phone_number_id": source.phone_number_id,
        "mime_type": info.mime_type or source.mime_type,
        "sha256": info.sha256 or source.sha256,
        "file_size": info.file_size if info.file_size is not None else source.file_size,
        "url": download_url,
    }


def upload_view(doc: dict[str, Any]) -> dict[str, Any]:
    """`POST /v1/media`'s answer."""
    return {
        "id": doc["_id"],
        "phone_number_id": doc["phone_number_id"],
        "mime_type": doc["mime_type"],
        "file_size": doc["file_size"],
        "sha256": doc["sha256"],
        "uploaded_at": iso(doc["uploaded_at"]),
    }
