"""HTTP handlers: the Graph API surface Meta exposes, and the simulator's `/_sim` control API.

Handlers are thin: parse -> world/core -> schedule webhooks -> respond. Graph errors leave in
Meta's envelope; control-API errors in the house shape {"error": {"code", "message", "details"}}.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import secrets
import time
from typing import TYPE_CHECKING, Any, Literal, get_args

import orjson
import phonenumbers
from aiohttp import BodyPartReader, hdrs, web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tools.metasim.config import (
    Habits,
    StatusDelaysConfig,
    TemplateConfig,
    TemplateStatus,
    TemplateStatusEvent,
    Tier,
)
from tools.metasim.core import (
    TEMPLATE_CATEGORIES,
    TIER_LIMITS,
    base_mime,
    check_template_name,
    check_upload,
    check_version,
    template_shape,
    version_number,
)
from tools.metasim.errors import ERROR_TABLE, GraphError, graph_error_body
from tools.metasim.media import DOWNLOAD_PATH, MediaItem
from tools.metasim.payloads import (
    OMIT_REASON,
    message_echoes_value,
    phone_number_name_value,
    phone_number_quality_value,
    template_category_value,
    template_quality_value,
    template_status_value,
    user_preferences_value,
)
from tools.metasim.sends import ReadReceipt, success_body
from tools.metasim.state import AccessToken, FaultRule, PhoneNumber, Template, World

if TYPE_CHECKING:
    from tools.metasim.app import Simulator

SIM: web.AppKey[Simulator] = web.AppKey("metasim")

_JSON = "application/json"
_TEMPLATE_STATUSES = frozenset(get_args(TemplateStatus))
_VERSION = r"{version:v\d+\.\d+}"
_NODE = r"{node:\d+}"


def add_routes(app: web.Application) -> None:
    for prefix in (f"/{_VERSION}", ""):
        app.router.add_post(f"{prefix}/{_NODE}/messages", post_messages)
        app.router.add_post(f"{prefix}/{_NODE}/media", post_media)
        app.router.add_get(f"{prefix}/{_NODE}/message_templates", get_message_templates)
        app.router.add_post(f"{prefix}/{_NODE}/message_templates", post_message_templates)
        app.router.add_get(f"{prefix}/{_NODE}", get_node)
        app.router.add_delete(f"{prefix}/{_NODE}", delete_node)
    app.router.add_get(DOWNLOAD_PATH, get_media_download)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    control = [
        ("POST", "/_sim/inbound", post_inbound),
        ("GET", "/_sim/inbound", get_inbound),
        ("GET", "/_sim/media/{media_id}", get_sim_media),
        ("GET", "/_sim/read-receipts", get_read_receipts),
        ("POST", "/_sim/webhooks/emit", post_webhook_emit),
        (
            "POST",
            "/_sim/webhooks/message_template_status_update",
            post_emit_template_status,
        ),
        (
            "POST",
            "/_sim/webhooks/message_template_quality_update",
            post_emit_template_quality,
        ),
        ("POST", "/_sim/webhooks/template_category_update", post_emit_template_category),
        ("POST", "/_sim/webhooks/phone_number_quality_update", post_emit_number_quality),
        ("POST", "/_sim/webhooks/phone_number_name_update", post_emit_number_name),
        ("POST", "/_sim/webhooks/account_update", post_emit_account_update),
        ("POST", "/_sim/webhooks/user_preferences", post_emit_user_preferences),
        ("POST", "/_sim/webhooks/smb_message_echoes", post_emit_echo),
        ("POST", "/_sim/templates/status", post_template_status),
        ("POST", "/_sim/numbers/{node}/upgrade", post_upgrade),
        ("POST", "/_sim/recipients", post_recipient_traits),
        ("GET", "/_sim/webhooks/config", get_webhook_config),
        ("POST", "/_sim/webhooks/config", post_webhook_config),
        ("POST", "/_sim/webhooks/verify", post_verify),
        ("GET", "/_sim/webhooks", get_webhook_log),
        ("GET", "/_sim/faults", get_faults),
        ("POST", "/_sim/faults", post_faults),
        ("DELETE", "/_sim/faults", delete_faults),
        ("POST", "/_sim/settings", post_settings),
        ("POST", "/_sim/clock/advance", post_clock_advance),
        ("POST", "/_sim/reset", post_reset),
        ("GET", "/_sim/sends", get_sends),
        ("GET", "/_sim/violations", get_violations),
        ("GET", "/_sim/stats", get_stats),
    ]
    for method, path, handler in control:
        app.router.add_route(method, path, handler)


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type=_JSON)


def _graph_error(sim: Simulator, error: GraphError, number_id: str | None = None) -> web.Response:
    body = graph_error_body(error.code, error.details, sim.fbtrace_id(), error.subcode)
    sim.records.add_error(
        error.code, number_id, error.recipient, error.callback_data, sim.clock.wall()
    )
    sim.metrics.error(error.code)
    status = error.http_status
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = f'OAuth "Facebook Platform" "invalid_token" "{error.details}"'
    return web.Response(
        body=orjson.dumps(body),
        status=status,
        content_type=_JSON,
        headers=headers,
    )


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        return value.strip() if scheme.lower() == "bearer" else None
    return request.query.get("access_token")


async def _json_body(request: web.Request) -> tuple[bytes, Any]:
    raw = await request.read()
    try:
        return raw, orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        raise GraphError(100, "The request body is not valid JSON.") from None


# ----------------------------------------------------------------------------------------------
# Graph API: sends
# ----------------------------------------------------------------------------------------------


async def post_messages(request: web.Request) -> web.StreamResponse:
    sim = request.app[SIM]
    number_id = request.match_info["node"]
    faults = _draw_faults(sim, number_id) if sim.faults else ()
    for fault in faults:
        if fault.kind == "latency":
            await asyncio.sleep(fault.latency_ms / 1000)
    for fault in faults:
        if fault.phase == "before" and fault.kind != "latency":
            return await _apply_fault(sim, request, fault)

    world = sim.world
    version = request.match_info.get("version")
    try:
        check_version(version)
        token = world.authenticate(_bearer(request))
        number = world.numbers.get(number_id)
        if number is None:
            raise world.node_missing(number_id, "post")
        World.authorize(token, number.waba_id, "whatsapp_business_messaging")
        raw, payload = await _json_body(request)
        now = sim.clock.monotonic()
        if number.upgrading_until is not None:
            _settle_upgrade(sim, number, now)
        result = sim.pipeline.submit(
            number, payload, now, sim.clock.wall(), raw, version_number(version)
        )
    except GraphError as error:
        sim.metrics.sends_rejected.inc()
        return _graph_error(sim, error, number_id)

    if isinstance(result, ReadReceipt):
        sim.metrics.read_receipts.inc()
        return _json({"success": True})
    sim.metrics.sends_accepted.inc()
    waiter = sim.dispatcher.on_accepted(result, number)
    if waiter is not None:
        # Meta sometimes delivers the `sent` webhook before the send's HTTP response returns.
        try:
            # Bounded: a slow or absent receiver must not stall the send path for long.
            async with asyncio.timeout(min(sim.dispatcher.config.timeout_seconds, 1.0)):
                await asyncio.shield(waiter)
        except TimeoutError:
            pass
    for fault in faults:
        if fault.phase == "after" and fault.kind in ("hang", "drop"):
            return await _apply_fault(sim, request, fault)
    return web.Response(body=orjson.dumps(success_body(result)), content_type=_JSON)


def _draw_faults(sim: Simulator, number_id: str) -> list[FaultRule]:
    rng = sim.rng
    return [
        fault
        for fault in sim.faults
        if (fault.phone_number_id is None or fault.phone_number_id == number_id)
        and rng.random() < fault.rate
    ]


async def _apply_fault(
    sim: Simulator, request: web.Request, fault: FaultRule
) -> web.StreamResponse:
    sim.metrics.faults.labels(fault.kind).inc()
    if fault.kind == "error":
        return _graph_error(sim, GraphError(fault.code), request.match_info.get("node"))
    if fault.kind == "http":
        return web.Response(
            status=fault.http_status,
            text=f"<html><body><h1>{fault.http_status} Server Error</h1></body></html>",
            content_type="text/html",
        )
    if fault.kind == "hang":
        await asyncio.sleep(fault.hang_seconds)
    # drop (or a hang that outlived the client): close the socket without an HTTP response.
    if request.transport is not None:
        request.transport.abort()
    raise asyncio.CancelledError


def _settle_upgrade(sim: Simulator, number: PhoneNumber, now: float) -> None:
    if sim.world.settle_upgrade(number, now):
        tier = sim.world.portfolios[number.portfolio_id].tier
        sim.dispatcher.emit_throughput_upgrade(number, tier)


# ----------------------------------------------------------------------------------------------
# Graph API: templates and nodes
# ----------------------------------------------------------------------------------------------

_TEMPLATE_DEFAULT_FIELDS = (
    "name",
    "parameter_format",
    "components",
    "language",
    "status",
    "category",
    "id",
)
_TEMPLATE_FIELDS = frozenset((*_TEMPLATE_DEFAULT_FIELDS, "quality_score", "rejected_reason"))


def _requested_fields(
    request: web.Request, default: tuple[str, ...], known: frozenset[str], node_type: str
) -> list[str]:
    raw = request.query.get("fields")
    if not raw:
        return list(default)
    fields = [f.strip() for f in raw.split(",") if f.strip()]
    for name in fields:
        if name not in known:
            raise GraphError(
                100, f"Tried accessing nonexisting field ({name}) on node type ({node_type})"
            )
    return fields


def _template_fields(template: Template, fields: list[str]) -> dict[str, Any]:
    full = template.as_graph()
    full["quality_score"] = {"score": _quality_of(template)}
    full["rejected_reason"] = template.rejected_reason
    out = {name: full[name] for name in fields}
    out["id"] = template.id
    return out


def _encode_cursor(template_id: str) -> str:
    return base64.urlsafe_b64encode(f"tpl:{template_id}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, version: str | None) -> str:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError):
        text = ""
    if not text.startswith("tpl:"):
        # v24.0 introduced a dedicated code for a bad template-list cursor.
        raise GraphError(
            131059 if version_number(version) >= 24.0 else 100, "Invalid pagination cursor."
        )
    return text[4:]


async def get_message_templates(request: web.Request) -> web.Response:
    sim = request.app[SIM]
    waba_id = request.match_info["node"]
    version = request.match_info.get("version")
    try:
        check_version(version)
        token = sim.world.authenticate(_bearer(request))
        waba = sim.world.wabas.get(waba_id)
        if waba is None:
            raise sim.world.node_missing(waba_id, "get")
        World.authorize(token, waba_id, "whatsapp_business_management")
        fields = _requested_fields(
            request, _TEMPLATE_DEFAULT_FIELDS, _TEMPLATE_FIELDS, "WhatsAppBusinessAccount"
        )
        q = request.query
        templates = waba.templates
        if statuses := q.get("status"):
            wanted = {s.strip().upper() for s in statuses.split(",")}
            templates = [t for t in templates if t.status in wanted]
        if category := q.get("category"):
            templates = [t for t in templates if t.category == category.upper()]
        if language := q.get("language"):
            templates = [t for t in templates if t.language == language]
        if name := q.get("name"):
            templates = [t for t in templates if name in t.name]
        try:
            limit = int(q.get("limit", "25"))
        except ValueError:
            raise GraphError(100, "Param limit must be an integer.") from None
        if not 1 <= limit <= 1000:
            raise GraphError(100, "Param limit must be between 1 and 1000.")
        ids = [t.id for t in templates]
        start, end = 0, len(ids)
        if after := q.get("after"):
            anchor = _decode_cursor(after, version)
            start = ids.index(anchor) + 1 if anchor in ids else len(ids)
        elif before := q.get("before"):
            anchor = _decode_cursor(before, version)
            end = ids.index(anchor) if anchor in ids else 0
            start = max(0, end - limit)
        page = templates[start : min(start + limit, end)]
    except GraphError as error:
        return _graph_error(sim, error)
    body: dict[str, Any] = {"data": [_template_fields(t, fields) for t in page]}
    if page:
        paging: dict[str, Any] = {
            "cursors": {"before": _encode_cursor(page[0].id), "after": _encode_cursor(page[-1].id)}
        }
        if start + len(page) < len(templates):
            paging["next"] = str(
                request.url.update_query(after=paging["cursors"]["after"]).without_query_params(
                    "before"
                )
            )
        if start > 0:
            paging["previous"] = str(
                request.url.update_query(before=paging["cursors"]["before"]).without_query_params(
                    "after"
                )
            )
        body["paging"] = paging
    return _json(body)


class _TemplateCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: Any = None
    category: Any = None
    language: Any = None
    parameter_format: str = "POSITIONAL"
    components: list[dict[str, Any]] = []


async def post_message_templates(request: web.Request) -> web.Response:
    sim = request.app[SIM]
    world = sim.world
    waba_id = request.match_info["node"]
    try:
        check_version(request.match_info.get("version"))
        token = world.authenticate(_bearer(request))
        waba = world.wabas.get(waba_id)
        if waba is None:
            raise world.node_missing(waba_id, "post")
        World.authorize(token, waba_id, "whatsapp_business_management")
        try:
            body = _TemplateCreate.model_validate((await _json_body(request))[1])
        except ValidationError as exc:
            raise GraphError(100, f"Invalid parameter: {exc.errors()[0]['msg']}") from None
        name = check_template_name(body.name)
        category = str(body.category or "").upper()
        if category not in TEMPLATE_CATEGORIES:
            raise GraphError(
                100, "Param category must be one of {AUTHENTICATION, MARKETING, UTILITY}."
            )
        if not isinstance(body.language, str) or not body.language:
            raise GraphError(100, "The parameter language is required.")
        parameter_format = body.parameter_format.upper()
        if parameter_format not in ("POSITIONAL", "NAMED"):
            raise GraphError(100, "Param parameter_format must be one of {NAMED, POSITIONAL}.")
        if not any(
            str(c.get("type", "")).upper() == "BODY" and c.get("text") for c in body.components
        ):
            raise GraphError(100, "Param components must contain a BODY component with text.")
        if (name, body.language) in waba.by_key:
            raise GraphError(100, "Content in this language already exists for this template name.")
        now = sim.clock.monotonic()
        limits = sim.config.limits
        if limits.enabled:
            while waba.creations and waba.creations[0] <= now - 3600:
                waba.creations.popleft()
            if len(waba.creations) >= limits.template_creations_per_hour:
                raise GraphError(
                    2388019,
                    f"At most {limits.template_creations_per_hour} templates can be created "
                    "per WABA per hour.",
                )
            if len(waba.templates) >= limits.max_templates_per_waba:
                raise GraphError(
                    2388019,
                    f"A WABA can hold at most {limits.max_templates_per_waba} message templates.",
                )
        template = world.add_template(
            waba,
            TemplateConfig(
                name=name,
                language=body.language,
                category=category,
                status="PENDING",
                parameter_format=parameter_format,
                components=body.components,
            ),
        )
        waba.creations.append(now)
    except GraphError as error:
        return _graph_error(sim, error)
    review = sim.config.outcomes.template_review
    if review.outcome is not None:
        sim.timeline.call_later(
            sim.real_seconds(review.delay_seconds), _finish_review, sim, template, review.outcome
        )
    return _json({"id": template.id, "status": "PENDING", "category": category})


def _finish_review(sim: Simulator, template: Template, outcome: str) -> None:
    if template.status != "PENDING" or sim.world.templates.get(template.id) is not template:
        return  # changed meanwhile, or the world was reset
    template.status = outcome
    reason = "NONE" if outcome == "APPROVED" else "INVALID_FORMAT"
    template.rejected_reason = reason
    sim.dispatcher.emit_template_status(template, outcome, reason)


_NUMBER_DEFAULT_FIELDS = (
    "verified_name",
    "code_verification_status",
    "display_phone_number",
    "quality_rating",
    "platform_type",
    "throughput",
    "id",
)
_NUMBER_FIELDS = frozenset(
    (
        *_NUMBER_DEFAULT_FIELDS,
        "whatsapp_business_manager_messaging_limit",
        "messaging_limit_tier",
        "is_official_business_account",
        "name_status",
    )
)


async def get_node(request: web.Request) -> web.Response:
    sim = request.app[SIM]
    world = sim.world
    node_id = request.match_info["node"]
    version = request.match_info.get("version")
    try:
        check_version(version)
        token = world.authenticate(_bearer(request))
        if (number := world.numbers.get(node_id)) is not None:
            World.authorize(token, number.waba_id, "whatsapp_business_management")
            _settle_upgrade(sim, number, sim.clock.monotonic())
            fields = _requested_fields(
                request, _NUMBER_DEFAULT_FIELDS, _NUMBER_FIELDS, "WhatsAppBusinessPhoneNumber"
            )
            if (
                "whatsapp_business_manager_messaging_limit" in fields
                and version_number(version) < 24.0
            ):
                raise GraphError(
                    100,
                    "Tried accessing nonexisting field (whatsapp_business_manager_messaging_limit) "
                    "on node type (WhatsAppBusinessPhoneNumber)",
                )
            body = _number_fields(world, number, fields)
        elif (template := world.templates.get(node_id)) is not None:
            World.authorize(token, template.waba_id, "whatsapp_business_management")
            fields = _requested_fields(
                request, _TEMPLATE_DEFAULT_FIELDS, _TEMPLATE_FIELDS, "WhatsAppMessageTemplate"
            )
            body = _template_fields(template, fields)
        elif (waba := world.wabas.get(node_id)) is not None:
            World.authorize(token, waba.id, "whatsapp_business_management")
            body = {"id": waba.id, "name": waba.name}
        elif (media := world.media.get(node_id)) is not None:
            body = _media_node(sim, request, token, media)
        else:
            raise world.node_missing(node_id, "get")
    except GraphError as error:
        return _graph_error(sim, error)
    return _json(body)


def _number_fields(world: World, number: PhoneNumber, fields: list[str]) -> dict[str, Any]:
    parsed = phonenumbers.parse("+" + number.display_phone_number)
    tier = world.portfolios[number.portfolio_id].tier
    full: dict[str, Any] = {
        "verified_name": number.verified_name,
        "code_verification_status": "VERIFIED",
        "display_phone_number": phonenumbers.format_number(
            parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL
        ),
        "quality_rating": number.quality_rating,
        "platform_type": "CLOUD_API",
        "throughput": {"level": number.throughput_level},
        "whatsapp_business_manager_messaging_limit": tier,
        "messaging_limit_tier": tier,
        "is_official_business_account": False,
        "name_status": "APPROVED",
    }
    out = {name: full[name] for name in fields if name != "id"}
    out["id"] = number.id
    return out


# ----------------------------------------------------------------------------------------------
# Graph API: media
# ----------------------------------------------------------------------------------------------

# Larger than any supported type (documents, 100 MB): an upload is refused while it streams in.
_MAX_UPLOAD_BYTES = 100 * 1024 * 1024


def _base_url(sim: Simulator, request: web.Request) -> str:
    return sim.config.media_base_url or f"{request.scheme}://{request.host}"


def _quality_of(template: Template) -> str:
    if template.quality_score is not None:
        return template.quality_score
    return "GREEN" if template.status == "APPROVED" else "UNKNOWN"


_Upload = tuple[bytes, str | None, str | None]


async def _read_upload(request: web.Request) -> tuple[dict[str, str], _Upload | None]:
    """(form fields, (file bytes, filename, part content type) or None) of a multipart upload."""
    if not request.content_type.startswith("multipart/"):
        raise GraphError(100, "The request must be multipart/form-data with a file part.")
    fields: dict[str, str] = {}
    upload = None
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            continue
        if part.name == "file":
            chunks, size = [], 0
            while chunk := await part.read_chunk(1 << 16):
                size += len(chunk)
                if size > _MAX_UPLOAD_BYTES:
                    raise GraphError(
                        131053, "Media file size too big. Max file size we support is 100MB."
                    )
                chunks.append(chunk)
            upload = (b"".join(chunks), part.filename, part.headers.get(hdrs.CONTENT_TYPE))
        elif part.name:
            fields[part.name] = (await part.text())[:1000]
    return fields, upload


async def post_media(request: web.Request) -> web.Response:
    """`POST /<PHONE_NUMBER_ID>/media`, multipart: `file`, `type` (MIME), `messaging_product`."""
    sim = request.app[SIM]
    world = sim.world
    number_id = request.match_info["node"]
    try:
        check_version(request.match_info.get("version"))
        token = world.authenticate(_bearer(request))
        number = world.numbers.get(number_id)
        if number is None:
            raise world.node_missing(number_id, "post")
        World.authorize(token, number.waba_id, "whatsapp_business_messaging")
        fields, upload = await _read_upload(request)
        product = fields.get("messaging_product")
        if product is None:
            raise GraphError(100, "The parameter messaging_product is required.")
        if product != "whatsapp":
            raise GraphError(
                100, f'Param messaging_product must be one of {{WHATSAPP}} - got "{product}".'
            )
        if upload is None:
            raise GraphError(100, "The parameter file is required.")
        content, filename, part_type = upload
        # Meta lists `type` as required; its own curl example sets only the file part's type.
        mime_type = check_upload(fields.get("type") or part_type, len(content))
        item = world.media.add(
            waba_id=number.waba_id,
            phone_number_id=number.id,
            origin="upload",
            mime_type=mime_type,
            content=content,
            filename=filename,
            now=sim.clock.monotonic(),
            wall=sim.clock.wall(),
        )
    except GraphError as error:
        return _graph_error(sim, error, number_id)
    sim.records.media_uploads += 1
    sim.metrics.media_uploads.inc()
    return _json({"id": item.id})


def _media_access(
    world: World, token: AccessToken, item: MediaItem, phone_number_id: str | None, now: float
) -> None:
    """Meta answers an unknown, expired, deleted or foreign media id alike (100, subcode 33)."""
    missing = GraphError(
        100,
        f"Unsupported request. Object with ID '{item.id}' does not exist, cannot be loaded due to "
        "missing permissions, or does not support this operation.",
        subcode=33,
    )
    if not item.alive(now):
        raise missing
    try:
        World.authorize(token, item.waba_id, "whatsapp_business_messaging")
    except GraphError as error:
        if error.code == 200:
            raise missing from None
        raise
    if phone_number_id is not None:
        if item.origin == "inbound":
            # Inbound media belongs to no upload number (as a Chatwoot release found out).
            raise GraphError(
                100, "Param phone_number_id is not a valid whatsapp business phone number id ID"
            )
        if phone_number_id != item.phone_number_id:
            raise GraphError(
                100,
                f"Media {item.id} was not uploaded on phone number {phone_number_id}.",
            )


def _media_node(sim: Simulator, request: web.Request, token: AccessToken, item: MediaItem) -> Any:
    now, wall = sim.clock.monotonic(), sim.clock.wall()
    _media_access(sim.world, token, item, request.query.get("phone_number_id"), now)
    sim.metrics.media_urls.inc()
    return {
        "messaging_product": "whatsapp",
        "url": sim.world.media.url(_base_url(sim, request), item, wall),
        "mime_type": item.mime_type,
        "sha256": item.sha256_hex,
        "file_size": str(item.size),
        "id": item.id,
    }


async def delete_node(request: web.Request) -> web.Response:
    """`DELETE /<MEDIA_ID>[?phone_number_id=]`: only media can be deleted here."""
    sim = request.app[SIM]
    world = sim.world
    node_id = request.match_info["node"]
    try:
        check_version(request.match_info.get("version"))
        token = world.authenticate(_bearer(request))
        item = world.media.get(node_id)
        if item is None:
            raise world.node_missing(node_id, "delete")
        number_id = request.query.get("phone_number_id")
        _media_access(world, token, item, number_id, sim.clock.monotonic())
        item.deleted = True
    except GraphError as error:
        return _graph_error(sim, error)
    sim.metrics.media_deletes.inc()
    return _json({"success": True})


async def get_media_download(request: web.Request) -> web.Response:
    """The URL `GET /<MEDIA_ID>` hands out: the bytes, with a bearer token valid for the media's
    WABA, for 5 minutes. Every failure is a bare 404, as Meta documents."""
    sim = request.app[SIM]
    world = sim.world
    resolved = world.media.resolve_url(dict(request.query), sim.clock.monotonic(), sim.clock.wall())
    if isinstance(resolved, str):
        return web.Response(status=404, text=resolved)
    try:
        token = world.authenticate(_bearer(request))
        World.authorize(token, resolved.waba_id, "whatsapp_business_messaging")
    except GraphError as error:
        return web.Response(status=404, text=f"access token refused: {error.details}")
    sim.records.media_downloads += 1
    sim.metrics.media_downloads.inc()
    headers = {hdrs.CONTENT_TYPE: resolved.mime_type}
    if resolved.filename:
        headers[hdrs.CONTENT_DISPOSITION] = f'attachment; filename="{resolved.filename}"'
    return web.Response(body=resolved.content, headers=headers)


# ----------------------------------------------------------------------------------------------
# health and metrics
# ----------------------------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[SIM].metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


# ----------------------------------------------------------------------------------------------
# control API
# ----------------------------------------------------------------------------------------------


class _ControlError(Exception):
    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


def _control_error(error: _ControlError) -> web.Response:
    return _json(
        {"error": {"code": error.code, "message": error.message, "details": error.details or {}}},
        error.status,
    )


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


async def _parse(request: web.Request, model: type[Any]) -> Any:
    raw = await request.read()
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        raise _ControlError(
            400,
            "invalid_request",
            "request body does not match the schema",
            {"errors": orjson.loads(exc.json(include_url=False, include_context=False))},
        ) from None


def _number_or_404(sim: Simulator, number_id: str) -> PhoneNumber:
    number = sim.world.numbers.get(number_id)
    if number is None:
        raise _ControlError(404, "unknown_phone_number", f"no phone number {number_id}")
    return number


def _control(handler: Any) -> Any:
    async def wrapped(request: web.Request) -> web.Response:
        try:
            return await handler(request, request.app[SIM])
        except _ControlError as error:
            return _control_error(error)

    wrapped.__name__ = handler.__name__
    return wrapped


InboundType = Literal[
    "text",
    "image",
    "video",
    "audio",
    "document",
    "sticker",
    "location",
    "contacts",
    "interactive",
    "button",
    "reaction",
    "order",
    "system",
    "unsupported",
    "request_welcome",
]
_MEDIA_KINDS = ("image", "video", "audio", "document", "sticker")
# Types that do not open the customer-service window (Meta documents none of them as opening
# it; the simulator takes the safe side, like a gateway should).
_NO_WINDOW = frozenset({"system", "unsupported", "reaction"})
_INTERACTIVE_REPLIES = ("button_reply", "list_reply", "nfm_reply", "call_permission_reply")
# Meta's documented error object on an inbound `unsupported` message.
_UNSUPPORTED_ERROR = {
    "code": 131051,
    "title": "Message type unknown",
    "message": "Message type unknown",
    "error_data": {"details": "Message type is currently not supported."},
}


class _InboundMedia(_Body):
    content_b64: str
    mime_type: str
    filename: str | None = None
    caption: str | None = None
    voice: bool | None = None  # audio recorded in the app
    animated: bool | None = None  # sticker


class _Inbound(_Body):
    phone_number_id: str
    from_: str = Field(alias="from")
    # Inferred when absent: from `message`, from `media` (its MIME type), else text.
    type: InboundType | None = None
    text: str = "Hello"
    name: str = "Test User"
    # How long ago the user wrote: 0 opens a full 24 h window, 86400+ an already closed one.
    age_seconds: float = Field(0.0, ge=0)
    # A full message object (type + fields) sent as is, e.g. a button reply.
    message: dict[str, Any] | None = None
    context_message_id: str | None = None
    # The type objects, in Meta's webhook shape (media carry bytes instead of an id).
    media: _InboundMedia | None = None
    location: dict[str, Any] | None = None
    contacts: list[dict[str, Any]] | None = None
    interactive: dict[str, Any] | None = None
    button: dict[str, Any] | None = None
    reaction: dict[str, Any] | None = None
    order: dict[str, Any] | None = None
    system: dict[str, Any] | None = None
    unsupported: dict[str, Any] | None = None
    # Optional parts of any message.
    context: dict[str, Any] | None = None
    referral: dict[str, Any] | None = None
    errors: list[dict[str, Any]] | None = None
    # Extra contact fields: profile (e.g. username, country_code), identity hash, BSUID.
    profile: dict[str, Any] | None = None
    identity_key_hash: str | None = None
    user_id: str | None = None


def _bad(message: str) -> _ControlError:
    return _ControlError(400, "invalid_request", message)


def _media_kind(mime_type: str) -> str:
    base = base_mime(mime_type)
    if base == "image/webp":
        return "sticker"
    head = base.split("/", 1)[0]
    return head if head in ("image", "video", "audio") else "document"


def _inbound_type(body: _Inbound) -> str:
    if body.type is not None:
        return body.type
    if body.media is not None:
        return _media_kind(body.media.mime_type)
    for kind in ("location", "contacts", "interactive", "button", "reaction", "order", "system"):
        if getattr(body, kind) is not None:
            return kind
    if body.unsupported is not None:
        return "unsupported"
    return "text"


def _require(value: Any, kind: str, keys: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(f"type {kind} needs the `{kind}` object")
    for key in keys:
        if key not in value:
            raise _bad(f"`{kind}` needs `{key}`")
    return value


def _inbound_object(
    sim: Simulator,
    request: web.Request,
    body: _Inbound,
    kind: str,
    number: PhoneNumber,
    wa_id: str,
) -> tuple[dict[str, Any], MediaItem | None]:
    """The type-specific part of the webhook message ({"type", <type>: {...}}) and the inbound
    media it created, if any."""
    if kind == "text":
        return {"type": "text", "text": {"body": body.text}}, None
    if kind in _MEDIA_KINDS:
        media = body.media
        if media is None:
            raise _bad(f"type {kind} needs `media` with content_b64 and mime_type")
        try:
            content = base64.b64decode(media.content_b64, validate=True)
        except (binascii.Error, ValueError):
            raise _bad("media.content_b64 is not base64") from None
        if not content:
            raise _bad("media.content_b64 is empty")
        item = sim.world.media.add(
            waba_id=number.waba_id,
            phone_number_id=number.id,
            origin="inbound",
            mime_type=media.mime_type,
            content=content,
            filename=media.filename,
            now=sim.clock.monotonic(),
            wall=sim.clock.wall(),
        )
        obj: dict[str, Any] = {}
        if media.caption is not None and kind in ("image", "video", "document"):
            obj["caption"] = media.caption
        if kind == "document":
            obj["filename"] = media.filename or f"{item.id}.bin"
        obj.update(
            {
                "mime_type": media.mime_type,
                "sha256": item.sha256_b64,
                "id": item.id,
                "url": sim.world.media.url(_base_url(sim, request), item, sim.clock.wall()),
            }
        )
        if kind == "audio" and media.voice is not None:
            obj["voice"] = media.voice
        if kind == "sticker":
            obj["animated"] = bool(media.animated)
        return {"type": kind, kind: obj}, item
    if kind == "location":
        location = _require(body.location, kind, ("latitude", "longitude"))
        for key in ("latitude", "longitude"):
            if not isinstance(location[key], int | float) or isinstance(location[key], bool):
                raise _bad(f"location.{key} must be a number (Meta sends numbers inbound)")
        return {"type": "location", "location": location}, None
    if kind == "contacts":
        contacts = body.contacts
        if not contacts or not all(
            isinstance(c.get("name"), dict) and c["name"].get("formatted_name") for c in contacts
        ):
            raise _bad("type contacts needs `contacts`, each with name.formatted_name")
        return {"type": "contacts", "contacts": contacts}, None
    if kind == "interactive":
        interactive = _require(body.interactive, kind, ("type",))
        reply = interactive["type"]
        if reply not in _INTERACTIVE_REPLIES or not isinstance(interactive.get(reply), dict):
            raise _bad(f"interactive.type must be one of {_INTERACTIVE_REPLIES} with its object")
        if reply == "nfm_reply" and not isinstance(interactive[reply].get("response_json"), str):
            # Meta sends the flow's answer as a JSON *string*.
            nfm = dict(interactive[reply])
            nfm["response_json"] = orjson.dumps(nfm.get("response_json", {})).decode()
            interactive = {**interactive, reply: nfm}
        return {"type": "interactive", "interactive": interactive}, None
    if kind == "button":
        button = _require(body.button, kind, ("payload", "text"))
        return {"type": "button", "button": button}, None
    if kind == "reaction":
        reaction = _require(body.reaction, kind, ("message_id",))
        return {"type": "reaction", "reaction": reaction}, None
    if kind == "order":
        order = _require(body.order, kind, ("catalog_id", "product_items"))
        return {"type": "order", "order": order}, None
    if kind == "system":
        system = _require(body.system, kind, ("wa_id",))
        system = {
            "body": f"User {body.name} changed from {wa_id} to {system['wa_id']}",
            "type": "user_changed_number",
            **system,
        }
        return {"type": "system", "system": system}, None
    if kind == "unsupported":
        return {"type": "unsupported", "unsupported": body.unsupported or {"type": "unknown"}}, None
    return {"type": "request_welcome"}, None


@_control
async def post_inbound(request: web.Request, sim: Simulator) -> web.Response:
    body = await _parse(request, _Inbound)
    number = _number_or_404(sim, body.phone_number_id)
    wa_id = body.from_.lstrip("+").replace(" ", "").replace("-", "")
    if not wa_id.isdigit():
        raise _ControlError(400, "invalid_request", "`from` must be a phone number")
    now, wall = sim.clock.monotonic(), sim.clock.wall()
    at, at_wall = now - body.age_seconds, wall - body.age_seconds
    if body.message is not None:
        kind = str(body.message.get("type", "text"))
        typed, media = body.message, None
    else:
        kind = _inbound_type(body)
        typed, media = _inbound_object(sim, request, body, kind, number, wa_id)
    wamid = "wamid.IN" + base64.b64encode(sim.rng.randbytes(18)).decode()
    message: dict[str, Any] = {"from": wa_id, "id": wamid, "timestamp": str(int(at_wall))}
    context = body.context
    if context is None and body.context_message_id:
        context = {"from": number.display_phone_number, "id": body.context_message_id}
    if context is not None:
        message["context"] = context
    if body.referral is not None:
        message["referral"] = body.referral
    errors = body.errors
    if errors is None and kind == "unsupported" and body.message is None:
        errors = [_UNSUPPORTED_ERROR]
    if errors is not None:
        message["errors"] = errors
    message.update(typed)

    contact: dict[str, Any] | None = None
    if kind != "system":
        contact = {"profile": {"name": body.name, **(body.profile or {})}, "wa_id": wa_id}
        if body.user_id is not None:
            contact["user_id"] = body.user_id
        if body.identity_key_hash is not None:
            contact["identity_key_hash"] = body.identity_key_hash

    sim.world.record_inbound(
        number,
        wa_id,
        wamid,
        at,
        now,
        message_type=kind,
        opens_window=kind not in _NO_WINDOW,
        referral=body.referral is not None,
    )
    sim.records.inbound_total += 1
    sim.records.inbound.append(
        {
            "wamid": wamid,
            "phone_number_id": number.id,
            "wa_id": wa_id,
            "type": kind,
            "at": at_wall,
            "media_id": media.id if media else None,
        }
    )
    sim.metrics.inbound.inc()
    sim.dispatcher.emit_inbound(number, contact, message)
    window_until = sim.world.window_until(number.id, wa_id)
    answer: dict[str, Any] = {
        "wamid": wamid,
        "wa_id": wa_id,
        "type": kind,
        "window_open_until": None if window_until is None else wall + (window_until - now),
    }
    if media is not None:
        answer["media_id"] = media.id
    return _json(answer)


@_control
async def get_inbound(request: web.Request, sim: Simulator) -> web.Response:
    """Injected inbound messages, oldest first (`phone_number_id`, `wa_id` filters)."""
    items = list(sim.records.inbound)
    for key in ("phone_number_id", "wa_id", "type"):
        if (value := request.query.get(key)) is not None:
            items = [i for i in items if i[key] == value]
    return _json({"count": sim.records.inbound_total, "inbound": items})


@_control
async def get_sim_media(request: web.Request, sim: Simulator) -> web.Response:
    """A media item's metadata and stored bytes (base64), whatever its state."""
    media_id = request.match_info["media_id"]
    item = sim.world.media.get(media_id)
    if item is None:
        raise _ControlError(404, "unknown_media", f"no media {media_id}")
    return _json(item.as_control(sim.clock.monotonic(), sim.clock.wall()))


@_control
async def get_read_receipts(request: web.Request, sim: Simulator) -> web.Response:
    """Every accepted mark-as-read (and typing indicator), as it reached Meta."""
    items = list(sim.records.read_receipts)
    if (number_id := request.query.get("phone_number_id")) is not None:
        items = [i for i in items if i["phone_number_id"] == number_id]
    return _json({"count": sim.records.read_receipts_total, "read_receipts": items})


class _TemplateRef(_Body):
    template_id: str | None = None
    waba_id: str | None = None
    name: str | None = None
    language: str | None = None


def _find_template(sim: Simulator, ref: _TemplateRef) -> Template | None:
    world = sim.world
    if ref.template_id:
        return world.templates.get(ref.template_id)
    if ref.waba_id and ref.name and ref.language and ref.waba_id in world.wabas:
        return world.wabas[ref.waba_id].by_key.get((ref.name, ref.language))
    return None


def _template_or_404(sim: Simulator, ref: _TemplateRef) -> Template:
    template = _find_template(sim, ref)
    if template is None:
        raise _ControlError(
            404, "unknown_template", "no such template (give template_id, or waba_id+name+language)"
        )
    return template


def _other_info(status: str) -> dict[str, str] | None:
    if status == "PAUSED":
        return {"title": "FIRST_PAUSE", "description": "Template paused due to low quality."}
    if status == "DISABLED":
        return {"title": "DISABLED", "description": "Template disabled after repeated pauses."}
    return None


class _TemplateStatus(_TemplateRef):
    status: TemplateStatus
    reason: str | None = "NONE"


@_control
async def post_template_status(request: web.Request, sim: Simulator) -> web.Response:
    """Change a known template's status in the world and send the webhook."""
    body = await _parse(request, _TemplateStatus)
    template = _template_or_404(sim, body)
    template.status = body.status
    sim.dispatcher.emit_template_status(
        template, body.status, body.reason, _other_info(body.status)
    )
    return _json({"template": template.as_graph()})


class _TemplateStatusEmit(_TemplateRef):
    event: TemplateStatusEvent
    reason: str | None = "NONE"  # null: as Meta sends for a template scheduled for deletion
    omit_reason: bool = False  # leave `reason` out altogether
    # For a template the simulator does not know (created elsewhere, e.g. in WhatsApp Manager).
    category: Literal["MARKETING", "UTILITY", "AUTHENTICATION"] = "MARKETING"
    other_info: dict[str, str] | None = None
    disable_info: dict[str, Any] | None = None
    rejection_info: dict[str, Any] | None = None


@_control
async def post_emit_template_status(request: web.Request, sim: Simulator) -> web.Response:
    """`message_template_status_update` for any event; also for a template the simulator does
    not know (give waba_id + name + language, optionally template_id and category)."""
    body = await _parse(request, _TemplateStatusEmit)
    template = _find_template(sim, body)
    known = template is not None
    if template is None:
        if not (body.waba_id and body.name and body.language):
            raise _bad("an unknown template needs waba_id, name and language")
        if body.template_id is not None and not body.template_id.isdigit():
            raise _bad("template_id must be digits")
        template = Template(
            body.template_id or sim.world.next_template_id(),
            body.waba_id,
            body.name,
            body.language,
            body.category,
            body.event,
            "POSITIONAL",
            [],
            template_shape("POSITIONAL", []),
            False,
        )
    elif body.event in _TEMPLATE_STATUSES:
        template.status = body.event
    extra = {
        key: value
        for key in ("disable_info", "rejection_info")
        if (value := getattr(body, key)) is not None
    }
    value = template_status_value(
        template,
        body.event,
        OMIT_REASON if body.omit_reason else body.reason,
        body.other_info if body.other_info is not None else _other_info(body.event),
        extra,
    )
    sim.dispatcher.emit_change(template.waba_id, "message_template_status_update", value)
    return _json({"known": known, "field": "message_template_status_update", "value": value})


QualityScore = Literal["GREEN", "YELLOW", "RED", "UNKNOWN"]


class _TemplateQuality(_TemplateRef):
    new_quality_score: QualityScore
    previous_quality_score: QualityScore | None = None  # default: the template's current one
    # Meta's own reference labels this payload `message_template_status_update`; pick that
    # field to reproduce the trap.
    field: Literal["message_template_quality_update", "message_template_status_update"] = (
        "message_template_quality_update"
    )


@_control
async def post_emit_template_quality(request: web.Request, sim: Simulator) -> web.Response:
    body = await _parse(request, _TemplateQuality)
    template = _template_or_404(sim, body)
    previous = body.previous_quality_score or _quality_of(template)
    template.quality_score = body.new_quality_score
    value = template_quality_value(template, previous, body.new_quality_score)
    sim.dispatcher.emit_change(template.waba_id, body.field, value)
    return _json({"field": body.field, "value": value})


class _TemplateCategory(_TemplateRef):
    new_category: Literal["MARKETING", "UTILITY", "AUTHENTICATION"]
    # True: the 24 h notice (the category changes at category_update_timestamp, not now).
    impending: bool = False


@_control
async def post_emit_template_category(request: web.Request, sim: Simulator) -> web.Response:
    body = await _parse(request, _TemplateCategory)
    template = _template_or_404(sim, body)
    previous = template.category
    impending_at = sim.clock.wall() + 86_400 if body.impending else None
    if not body.impending:
        template.category = body.new_category
    value = template_category_value(template, previous, body.new_category, impending_at)
    sim.dispatcher.emit_change(template.waba_id, "template_category_update", value)
    return _json({"field": "template_category_update", "value": value})


_TIER_ORDER = list(TIER_LIMITS)


class _NumberQuality(_Body):
    phone_number_id: str
    tier: Tier | None = None  # the portfolio's new messaging tier (all its numbers share it)
    event: str | None = None  # default: UPGRADE / DOWNGRADE by the tier move, else ONBOARDING
    quality_rating: Literal["GREEN", "YELLOW", "RED", "UNKNOWN"] | None = None


@_control
async def post_emit_number_quality(request: web.Request, sim: Simulator) -> web.Response:
    """`phone_number_quality_update`; a tier change also changes the simulator's limit."""
    body = await _parse(request, _NumberQuality)
    number = _number_or_404(sim, body.phone_number_id)
    portfolio = sim.world.portfolios[number.portfolio_id]
    old = portfolio.tier
    new = body.tier or old
    event = body.event
    if event is None:
        move = _TIER_ORDER.index(new) - _TIER_ORDER.index(old)
        event = "UPGRADE" if move > 0 else "DOWNGRADE" if move < 0 else "ONBOARDING"
    if body.tier is not None:
        portfolio.tier = body.tier
        portfolio.window.limit = TIER_LIMITS[body.tier]
    if body.quality_rating is not None:
        number.quality_rating = body.quality_rating
    value = phone_number_quality_value(number, event, new, old if body.tier else None)
    sim.dispatcher.emit_change(number.waba_id, "phone_number_quality_update", value)
    return _json({"field": "phone_number_quality_update", "value": value})


class _NumberName(_Body):
    phone_number_id: str
    decision: Literal["APPROVED", "DEFERRED", "PENDING", "REJECTED"]
    requested_verified_name: str | None = None
    rejection_reason: str | None = None


@_control
async def post_emit_number_name(request: web.Request, sim: Simulator) -> web.Response:
    body = await _parse(request, _NumberName)
    number = _number_or_404(sim, body.phone_number_id)
    requested = body.requested_verified_name or number.verified_name
    if body.decision == "APPROVED":
        number.verified_name = requested
    value = phone_number_name_value(number, body.decision, requested, body.rejection_reason)
    sim.dispatcher.emit_change(number.waba_id, "phone_number_name_update", value)
    return _json({"field": "phone_number_name_update", "value": value})


class _AccountUpdate(_Body):
    waba_id: str
    event: str
    # DISABLED_UPDATE: DISABLE holds every send of the WABA (368), REINSTATE lifts it.
    ban_state: Literal["DISABLE", "REINSTATE", "SCHEDULE_FOR_DISABLE"] | None = None
    ban_date: str | None = None
    extra: dict[str, Any] = {}  # merged into the value (violation_info, waba_info, ...)


@_control
async def post_emit_account_update(request: web.Request, sim: Simulator) -> web.Response:
    body = await _parse(request, _AccountUpdate)
    waba = sim.world.wabas.get(body.waba_id)
    if waba is None:
        raise _ControlError(404, "unknown_waba", f"no WABA {body.waba_id}")
    value: dict[str, Any] = {"event": body.event}
    if body.event == "DISABLED_UPDATE":
        if body.ban_state is None:
            raise _bad("DISABLED_UPDATE needs ban_state")
        ban_date = body.ban_date or time.strftime("%B %-d, %Y", time.gmtime(sim.clock.wall()))
        value["ban_info"] = {"waba_ban_state": body.ban_state, "waba_ban_date": ban_date}
        if body.ban_state == "DISABLE":
            waba.disabled = True
        elif body.ban_state == "REINSTATE":
            waba.disabled = False
    value.update(body.extra)
    sim.dispatcher.emit_change(waba.id, "account_update", value)
    return _json({"field": "account_update", "value": value, "disabled": waba.disabled})


class _UserPreferences(_Body):
    phone_number_id: str
    wa_id: str
    value: Literal["stop", "resume"]
    name: str | None = None
    detail: str | None = None


@_control
async def post_emit_user_preferences(request: web.Request, sim: Simulator) -> web.Response:
    """A user's marketing preference: after `stop`, marketing templates from this WABA to them
    fail with 131050 until `resume`."""
    body = await _parse(request, _UserPreferences)
    number = _number_or_404(sim, body.phone_number_id)
    wa_id = body.wa_id.lstrip("+")
    key = (number.waba_id, wa_id)
    if body.value == "stop":
        sim.world.marketing_stops.add(key)
    else:
        sim.world.marketing_stops.discard(key)
    detail = body.detail or (
        "User requested to stop marketing messages"
        if body.value == "stop"
        else "User requested to resume marketing messages"
    )
    value = user_preferences_value(number, wa_id, body.name, body.value, detail, sim.clock.wall())
    sim.dispatcher.emit_change(number.waba_id, "user_preferences", value)
    return _json({"field": "user_preferences", "value": value})


class _Echo(_Body):
    phone_number_id: str
    to: str
    message: dict[str, Any] = {"type": "text", "text": {"body": "Sent from the app"}}


@_control
async def post_emit_echo(request: web.Request, sim: Simulator) -> web.Response:
    """`smb_message_echoes`: a message the business sent from the WhatsApp Business app."""
    body = await _parse(request, _Echo)
    number = _number_or_404(sim, body.phone_number_id)
    kind = body.message.get("type")
    if not isinstance(kind, str) or kind not in body.message:
        raise _bad("message needs `type` and the object of that type")
    wamid = "wamid.ECHO" + base64.b64encode(sim.rng.randbytes(18)).decode()
    value = message_echoes_value(number, body.to.lstrip("+"), wamid, sim.clock.wall(), body.message)
    sim.dispatcher.emit_change(number.waba_id, "smb_message_echoes", value)
    return _json({"field": "smb_message_echoes", "wamid": wamid, "value": value})


class _Emit(_Body):
    waba_id: str = Field(pattern=r"^\d{1,20}$")
    field: str = Field(min_length=1, max_length=100)
    value: dict[str, Any]


@_control
async def post_webhook_emit(request: web.Request, sim: Simulator) -> web.Response:
    """Any field with any value, in Meta's signed envelope (for shapes no helper covers)."""
    body = await _parse(request, _Emit)
    sim.dispatcher.emit_change(body.waba_id, body.field, body.value)
    return _json({"field": body.field, "value": body.value})


class _Upgrade(_Body):
    mps: int | None = Field(None, gt=0)
    duration_seconds: float | None = Field(None, ge=0)  # simulated; default from the config
    force: bool = False  # skip the eligibility check (portfolio must be TIER_UNLIMITED)


@_control
async def post_upgrade(request: web.Request, sim: Simulator) -> web.Response:
    body = await _parse(request, _Upgrade)
    number = _number_or_404(sim, request.match_info["node"])
    if number.coexistence:
        raise _ControlError(409, "not_eligible", "coexistence numbers have fixed throughput")
    tier = sim.world.portfolios[number.portfolio_id].tier
    if tier != "TIER_UNLIMITED" and not body.force:
        raise _ControlError(
            409, "not_eligible", f"portfolio tier is {tier}; upgrades need TIER_UNLIMITED"
        )
    if number.upgrading_until is not None:
        raise _ControlError(409, "upgrade_in_progress", "an upgrade is already running")
    duration = (
        body.duration_seconds
        if body.duration_seconds is not None
        else sim.config.throughput_upgrade_seconds
    )
    until = sim.clock.monotonic() + sim.real_seconds(duration)
    mps = body.mps or number.upgrade_mps
    sim.world.start_upgrade(number, mps, until)
    sim.timeline.call_at(until, _settle_upgrade, sim, number, until)
    return _json(
        {
            "phone_number_id": number.id,
            "mps": mps,
            "upgrading_for_seconds": sim.real_seconds(duration),
        }
    )


class _Traits(_Body):
    wa_id: str
    not_on_whatsapp: bool | None = None
    marketing_capped: bool | None = None
    marketing_opted_out: bool | None = None


@_control
async def post_recipient_traits(request: web.Request, sim: Simulator) -> web.Response:
    body = await _parse(request, _Traits)
    wa_id = body.wa_id.lstrip("+")
    traits = sim.world.traits_of(wa_id)
    for name in ("not_on_whatsapp", "marketing_capped", "marketing_opted_out"):
        if (value := getattr(body, name)) is not None:
            setattr(traits, name, value)
    return _json(
        {
            "wa_id": wa_id,
            "not_on_whatsapp": traits.not_on_whatsapp,
            "marketing_capped": traits.marketing_capped,
            "marketing_opted_out": traits.marketing_opted_out,
        }
    )


def _webhook_config_view(sim: Simulator) -> dict[str, Any]:
    config = sim.dispatcher.config
    view = config.model_dump(mode="json", exclude={"habits"})
    view["habits"] = sim.dispatcher.habits
    view["time_scale"] = sim.dispatcher.time_scale
    return view


@_control
async def get_webhook_config(request: web.Request, sim: Simulator) -> web.Response:
    return _json(_webhook_config_view(sim))


class _WebhookPatch(_Body):
    enabled: bool | None = None
    callback_url: str | None = None
    graph_version: str | None = None
    profile: Literal["realistic", "polite"] | None = None
    habits: Habits | None = None
    delays: StatusDelaysConfig | None = None
    read_probability: float | None = Field(None, ge=0, le=1)
    timeout_seconds: float | None = Field(None, gt=0)
    escape_like_meta: bool | None = None
    time_scale: float | None = Field(None, gt=0)


@_control
async def post_webhook_config(request: web.Request, sim: Simulator) -> web.Response:
    """Patch the webhook settings. Choosing a profile resets habit overrides unless given too."""
    patch = await _parse(request, _WebhookPatch)
    current = sim.dispatcher.config
    update = patch.model_dump(exclude_none=True, exclude={"habits", "delays", "time_scale"})
    if patch.profile is not None and patch.habits is None:
        update["habits"] = Habits()
    if patch.habits is not None:
        base = Habits() if patch.profile is not None else current.habits
        merged = base.model_dump(exclude_none=True) | patch.habits.model_dump(exclude_none=True)
        update["habits"] = Habits(**merged)
    if patch.delays is not None:
        update["delays"] = patch.delays
    sim.dispatcher.configure(current.model_copy(update=update))
    if patch.time_scale is not None:
        sim.dispatcher.time_scale = patch.time_scale
        sim.update_config(sim.config.model_copy(update={"time_scale": patch.time_scale}))
    return _json(_webhook_config_view(sim))


class _Verify(_Body):
    callback_url: str | None = None
    verify_token: str | None = None
    challenge: str | None = None


@_control
async def post_verify(request: web.Request, sim: Simulator) -> web.Response:
    body = await _parse(request, _Verify)
    result = await sim.dispatcher.verify_subscription(
        body.callback_url or sim.dispatcher.config.callback_url,
        body.verify_token or sim.config.verify_token.get_secret_value(),
        body.challenge or str(secrets.randbelow(10**10)),
    )
    return _json(result)


@_control
async def get_webhook_log(request: web.Request, sim: Simulator) -> web.Response:
    d = sim.dispatcher
    return _json(
        {
            "counts": dict(d.counts),
            "pending": len(sim.timeline),
            "in_flight": d.in_flight,
            "attempts": list(d.log),
        }
    )


class _Fault(_Body):
    kind: Literal["latency", "error", "http", "hang", "drop"]
    rate: float = Field(ge=0, le=1)
    phone_number_id: str | None = None
    latency_ms: float = Field(0.0, ge=0)
    code: int = 131000
    http_status: int = Field(502, ge=500, le=599)
    hang_seconds: float = Field(30.0, ge=0)
    phase: Literal["before", "after"] = "before"


class _Faults(_Body):
    faults: list[_Fault]


@_control
async def get_faults(request: web.Request, sim: Simulator) -> web.Response:
    return _json({"faults": [f.as_dict() for f in sim.faults]})


@_control
async def post_faults(request: web.Request, sim: Simulator) -> web.Response:
    body = await _parse(request, _Faults)
    for fault in body.faults:
        if fault.kind == "error" and fault.code not in ERROR_TABLE:
            raise _ControlError(400, "invalid_request", f"unknown Meta error code {fault.code}")
    sim.faults = [FaultRule(**fault.model_dump()) for fault in body.faults]
    return _json({"faults": [f.as_dict() for f in sim.faults]})


@_control
async def delete_faults(request: web.Request, sim: Simulator) -> web.Response:
    sim.faults = []
    return _json({"faults": []})


class _Outcomes(_Body):
    async_failure_probability: float | None = Field(None, ge=0, le=1)
    async_failure_code: int | None = None
    paced_hold_seconds: float | None = Field(None, ge=0)
    paced_drop_probability: float | None = Field(None, ge=0, le=1)


class _Settings(_Body):
    pricing_rules: Literal["pmp-2025-07", "pmp-2026-10"] | None = None
    limits_enabled: bool | None = None
    outcomes: _Outcomes | None = None


@_control
async def post_settings(request: web.Request, sim: Simulator) -> web.Response:
    body = await _parse(request, _Settings)
    config = sim.config
    update: dict[str, Any] = {}
    if body.pricing_rules is not None:
        update["pricing_rules"] = body.pricing_rules
    if body.limits_enabled is not None:
        update["limits"] = config.limits.model_copy(update={"enabled": body.limits_enabled})
    if body.outcomes is not None:
        changes = body.outcomes.model_dump(exclude_none=True)
        code = changes.get("async_failure_code")
        if code is not None and code not in ERROR_TABLE:
            raise _ControlError(400, "invalid_request", f"unknown Meta error code {code}")
        update["outcomes"] = config.outcomes.model_copy(update=changes)
    sim.update_config(config.model_copy(update=update))
    return _json(
        {
            "pricing_rules": sim.config.pricing_rules,
            "limits_enabled": sim.config.limits.enabled,
            "outcomes": sim.config.outcomes.model_dump(mode="json"),
        }
    )


class _Advance(_Body):
    seconds: float = Field(ge=0)


@_control
async def post_clock_advance(request: web.Request, sim: Simulator) -> web.Response:
    """Jump the simulator's clock (e.g. past a 24 h window); buckets refill accordingly."""
    body = await _parse(request, _Advance)
    sim.clock.advance(body.seconds)
    return _json({"monotonic": sim.clock.monotonic(), "wall": sim.clock.wall()})


class _Reset(_Body):
    seed: int | None = None


@_control
async def post_reset(request: web.Request, sim: Simulator) -> web.Response:
    body = await _parse(request, _Reset)
    seed = body.seed if "seed" in body.model_fields_set else sim.base_config.seed
    sim.reset(seed)
    return _json({"reset": True, "seed": seed})


@_control
async def get_sends(request: web.Request, sim: Simulator) -> web.Response:
    q = request.query
    records = sim.records
    sends = list(records.sends)
    for key in ("phone_number_id", "recipient", "biz_opaque_callback_data", "type", "final_status"):
        if (value := q.get(key)) is not None:
            sends = [s for s in sends if getattr(s, key) == value]
    try:
        offset = int(q.get("offset", "0"))
        limit = int(q.get("limit", str(len(sends))))
    except ValueError:
        raise _ControlError(400, "invalid_request", "offset and limit must be integers") from None
    page = sends[offset : offset + limit]
    return _json(
        {
            "count": records.accepted_total,
            "matched": len(sends),
            "returned": len(page),
            "sends": [s.as_dict() for s in page],
            "duplicates": records.duplicates(),
        }
    )


@_control
async def get_violations(request: web.Request, sim: Simulator) -> web.Response:
    records = sim.records
    return _json(
        {
            "count": sum(records.violations_by_code.values()),
            "by_code": {str(k): v for k, v in records.violations_by_code.items()},
            "violations": list(records.violations),
        }
    )


@_control
async def get_stats(request: web.Request, sim: Simulator) -> web.Response:
    records = sim.records
    billable = sum(
        1 for s in records.sends if s.pricing.billable and s.final_status in ("delivered", "read")
    )
    return _json(
        {
            "sends_accepted": records.accepted_total,
            "sends_by_type": dict(records.accepted_by_type),
            "errors_by_code": {str(k): v for k, v in records.errors_by_code.items()},
            "violations_by_code": {str(k): v for k, v in records.violations_by_code.items()},
            "duplicate_messages": len(records.duplicate_callbacks),
            "inbound_messages": records.inbound_total,
            "read_receipts": records.read_receipts_total,
            "typing_indicators": sum(1 for r in records.read_receipts if r["typing_indicator"]),
            "media": {
                "uploads": records.media_uploads,
                "downloads": records.media_downloads,
                "stored": len(sim.world.media.items),
                "stored_bytes": sim.world.media.total_bytes,
            },
            "billable_delivered": billable,
            "webhooks": {
                **sim.dispatcher.counts,
                "pending": len(sim.timeline),
                "in_flight": sim.dispatcher.in_flight,
            },
        }
    )
