"""The OpenAPI document matches the app: its generated schemas are those of the declarations,
every route is documented, and every documented error code is one ingest can answer with (and
the other way round)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgspec
import yaml

from services.ingest import openapi
from services.ingest.app import OPENAPI_PATH
from services.ingest.errors import ERROR_CODES
from services.ingest.schemas import MetaMarkRead, MetaSendRequest, V1MarkRead, V1SendRequest
from tests.unit.ingest.fakes import World

DOC: dict[str, Any] = yaml.safe_load(OPENAPI_PATH.read_text())
INGEST_SOURCES = Path(OPENAPI_PATH).parent
# Codes answered by shared code that ingest relies on, and where they come from.
RAISED_ELSEWHERE = {
    "not_found": "shared/http.py",  # also ingest's own 404 for messages
    "method_not_allowed": "shared/http.py",
    "http_error": "shared/http.py",
    "internal_error": "shared/http.py",
    "dependency_unavailable": "shared/errors.py",  # DependencyUnavailable's code
    # the webhook endpoint rules ingest shares with the admin CLI (services/ingest/endpoints.py
    # answers their refusals with these codes)
    "invalid_url": "shared/webhook_urls.py",
    "insecure_url": "shared/webhook_urls.py",
    "private_address": "shared/webhook_urls.py",
    "unknown_event_type": "shared/webhook_endpoints.py",
    "endpoint_limit_reached": "shared/webhook_endpoints.py",
}


def _app_routes() -> set[tuple[str, str]]:
    app = World().app
    routes = set()
    for route in app.router.routes():
        if route.method in ("HEAD", "*"):
            continue
        path = re.sub(r"\{(\w+):[^}]*\}", r"{\1}", route.resource.canonical)
        routes.add((route.method.lower(), path))
    return routes


def _documented_routes() -> set[tuple[str, str]]:
    return {
        (method, path)
        for path, item in DOC["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    }


def test_the_document_is_openapi_3_1() -> None:
    assert DOC["openapi"] == "3.1.0"


def test_the_served_document_holds_exactly_the_schemas_of_the_declarations() -> None:
    # What `python -m services.ingest.openapi --check` checks; run it as CI would.
    assert openapi.main(["--check"]) == 0, "run: python -m services.ingest.openapi --write"
    generated = openapi.generated_schemas()
    served = DOC["components"]["schemas"]
    assert {name: served[name] for name in generated} == generated


def test_the_check_fails_when_a_declaration_changes(tmp_path: Path) -> None:
    stale = tmp_path / "openapi.yaml"
    text = OPENAPI_PATH.read_text()
    stale.write_text(text.replace("maxLength: 4096", "maxLength: 4000", 1))
    assert not openapi.is_current(stale)
    without_marker = tmp_path / "broken.yaml"
    without_marker.write_text(text.replace(openapi.MARKER, ""))
    try:
        openapi.is_current(without_marker)
    except ValueError as exc:
        assert "marker" in str(exc)
    else:
        raise AssertionError("a document without its marker line was accepted")


def test_every_reference_in_the_document_resolves() -> None:
    refs = set(re.findall(r"#/components/schemas/(\w+)", OPENAPI_PATH.read_text()))
    assert refs and refs <= set(DOC["components"]["schemas"])


def test_the_send_routes_name_the_generated_request_schemas() -> None:
    def schemas_of(path: str) -> set[str]:
        body = DOC["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        refs = body["schema"].get("oneOf", [body["schema"]])
        return {str(ref["$ref"]).rsplit("/", 1)[-1] for ref in refs}

    assert schemas_of("/v1/messages") == {V1SendRequest.__name__}
    # Meta's messages endpoint takes sends and mark-as-read
    assert schemas_of("/{graph_version}/{phone_number_id}/messages") == {
        MetaSendRequest.__name__,
        MetaMarkRead.__name__,
    }
    assert schemas_of("/v1/messages/{wamid}/read") == {V1MarkRead.__name__}
    # and the generated ones say what the decoders accept
    v1 = DOC["components"]["schemas"]["V1SendRequest"]
    assert set(v1["required"]) == {"from", "to", "type"}
    assert set(v1["properties"]) == {f.encode_name for f in msgspec.structs.fields(V1SendRequest)}


def test_every_route_of_the_app_is_documented_and_nothing_else() -> None:
    assert _app_routes() == _documented_routes()


def test_the_documented_error_codes_are_exactly_the_ones_ingest_has() -> None:
    assert set(DOC["components"]["schemas"]["ErrorCode"]["enum"]) == set(ERROR_CODES)


def test_every_operations_error_codes_are_known() -> None:
    for path, item in DOC["paths"].items():
        for method, operation in item.items():
            unknown = set(operation.get("x-error-codes", [])) - set(ERROR_CODES)
            assert not unknown, f"{method} {path} documents {unknown}"


def test_every_error_code_is_raised_somewhere() -> None:
    source = "\n".join(p.read_text() for p in INGEST_SOURCES.glob("*.py") if p.name != "errors.py")
    raised_here = set(re.findall(r'reject\(\s*"(\w+)"', source))
    raised_here |= {"invalid_field"} if "invalid_field(" in source else set()
    assert raised_here <= set(ERROR_CODES), raised_here - set(ERROR_CODES)
    missing = set(ERROR_CODES) - raised_here - set(RAISED_ELSEWHERE)
    assert not missing, f"documented but never raised: {missing}"
    repo = INGEST_SOURCES.parents[1]
    for code, where in RAISED_ELSEWHERE.items():
        assert f'"{code}"' in (repo / where).read_text(), (code, where)
