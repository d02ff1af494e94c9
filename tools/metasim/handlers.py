"""HTTP handlers: the Graph API surface Meta exposes, and the simulator's `/_sim` control API.

Handlers are thin: parse -> world/core -> schedule webhooks -> respond. Graph errors leave in
Meta's envelope; control-API errors in the house shape {"error": {"code", "message", "details"}}.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import secrets
from typing import TYPE_CHECKING, Any, Literal

import orjson
import phonenumbers
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tools.metasim.config import Habits, StatusDelaysConfig, TemplateConfig, TemplateStatus
from tools.metasim.core import (
    TEMPLATE_CATEGORIES,
    check_template_name,
    check_version,
    version_number,
)
from tools.metasim.errors import ERROR_TABLE, GraphError, graph_error_body
from tools.metasim.sends import ReadReceipt, success_body
from tools.metasim.state import FaultRule, PhoneNumber, Template, World

if TYPE_CHECKING:
    from tools.metasim.app import Simulator

SIM: web.AppKey[Simulator] = web.AppKey("metasim")

_JSON = "application/json"
_VERSION = r"{version:v\d+\.\d+}"
_NODE = r"{node:\d+}"


def add_routes(app: web.Application) -> None:
    for prefix in (f"/{_VERSION}", ""):
        app.router.add_post(f"{prefix}/{_NODE}/messages", post_messages)
        app.router.add_get(f"{prefix}/{_NODE}/message_templates", get_message_templates)
        app.router.add_post(f"{prefix}/{_NODE}/message_templates", post_message_templates)
        app.router.add_get(f"{prefix}/{_NODE}", get_node)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    control = [
        ("POST", "/_sim/inbound", post_inbound),
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
    sim.records.add_error(
        error.code, number_id, error.recipient, error.callback_data, sim.clock.wall()
    )
    sim.metrics.error(error.code)
    status = error.http_status
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = f'OAuth "Facebook Platform" "invalid_token" "{error.details}"'
    return web.Response(
        body=orjson.dumps(graph_error_body(error.code, error.details, sim.fbtrace_id())),
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


async def _json_body(request: web.Request) -> Any:
    raw = await request.read()
    try:
        return orjson.loads(raw) if raw else {}
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
    try:
        check_version(request.match_info.get("version"))
        token = world.authenticate(_bearer(request))
        number = world.numbers.get(number_id)
        if number is None:
            raise world.node_missing(number_id, "post")
        World.authorize(token, number.waba_id, "whatsapp_business_messaging")
        payload = await _json_body(request)
        now = sim.clock.monotonic()
        if number.upgrading_until is not None:
            _settle_upgrade(sim, number, now)
        result = sim.pipeline.submit(number, payload, now, sim.clock.wall())
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
            await asyncio.wait_for(
                asyncio.shield(waiter), min(sim.dispatcher.config.timeout_seconds, 1.0)
            )
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
    full["quality_score"] = {"score": "GREEN" if template.status == "APPROVED" else "UNKNOWN"}
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
            body = _TemplateCreate.model_validate(await _json_body(request))
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


class _Inbound(_Body):
    phone_number_id: str
    from_: str = Field(alias="from")
    text: str = "Hello"
    name: str = "Test User"
    # How long ago the user wrote: 0 opens a full 24 h window, 86400+ an already closed one.
    age_seconds: float = Field(0.0, ge=0)
    # Optional full message object (type + fields) instead of a text, e.g. a button reply.
    message: dict[str, Any] | None = None
    context_message_id: str | None = None


@_control
async def post_inbound(request: web.Request, sim: Simulator) -> web.Response:
    body = await _parse(request, _Inbound)
    number = _number_or_404(sim, body.phone_number_id)
    wa_id = body.from_.lstrip("+").replace(" ", "").replace("-", "")
    if not wa_id.isdigit():
        raise _ControlError(400, "invalid_request", "`from` must be a phone number")
    now, wall = sim.clock.monotonic(), sim.clock.wall()
    wamid = "wamid.IN" + base64.b64encode(sim.rng.randbytes(18)).decode()
    sim.world.record_inbound(number, wa_id, wamid, now - body.age_seconds, now)
    sim.records.inbound_total += 1
    sim.metrics.inbound.inc()
    message = body.message or {"type": "text", "text": {"body": body.text}}
    if body.context_message_id:
        message = {
            "context": {"from": number.display_phone_number, "id": body.context_message_id},
            **message,
        }
    sim.dispatcher.emit_inbound(number, wa_id, body.name, wamid, wall - body.age_seconds, message)
    window_end = wall - body.age_seconds + sim.config.limits.customer_service_window_seconds
    return _json({"wamid": wamid, "wa_id": wa_id, "window_open_until": window_end})


class _TemplateStatus(_Body):
    template_id: str | None = None
    waba_id: str | None = None
    name: str | None = None
    language: str | None = None
    status: TemplateStatus
    reason: str | None = "NONE"


@_control
async def post_template_status(request: web.Request, sim: Simulator) -> web.Response:
    body = await _parse(request, _TemplateStatus)
    world = sim.world
    template = None
    if body.template_id:
        template = world.templates.get(body.template_id)
    elif body.waba_id and body.name and body.language and body.waba_id in world.wabas:
        template = world.wabas[body.waba_id].by_key.get((body.name, body.language))
    if template is None:
        raise _ControlError(
            404, "unknown_template", "no such template (give template_id, or waba_id+name+language)"
        )
    template.status = body.status
    other_info = None
    if body.status == "PAUSED":
        other_info = {"title": "FIRST_PAUSE", "description": "Template paused due to low quality."}
    elif body.status == "DISABLED":
        other_info = {
            "title": "DISABLED",
            "description": "Template disabled after repeated pauses.",
        }
    sim.dispatcher.emit_template_status(template, body.status, body.reason, other_info)
    return _json({"template": template.as_graph()})


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
            "billable_delivered": billable,
            "webhooks": {
                **sim.dispatcher.counts,
                "pending": len(sim.timeline),
                "in_flight": sim.dispatcher.in_flight,
            },
        }
    )
