"""The hand-maintained OpenAPI document matches the app: every route is documented, and every
documented error code is one ingest can answer with (and the other way round)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from services.ingest.app import OPENAPI_PATH, create_app
from services.ingest.errors import ERROR_CODES
from tests.unit.ingest.fakes import World

DOC: dict[str, Any] = yaml.safe_load(OPENAPI_PATH.read_text())
INGEST_SOURCES = Path(OPENAPI_PATH).parent
# Codes answered by shared code that ingest relies on, and where they come from.
RAISED_ELSEWHERE = {
    "invalid_phone_number": "shared/phone.py",
    "not_found": "shared/http.py",  # also ingest's own 404 for messages
    "method_not_allowed": "shared/http.py",
    "http_error": "shared/http.py",
    "internal_error": "shared/http.py",
    "dependency_unavailable": "shared/errors.py",  # DependencyUnavailable's code
}


def _app_routes() -> set[tuple[str, str]]:
    app = create_app({}, World().ingest)
    routes = set()
    for route in app.router.routes():
        if route.method in ("HEAD", "*"):
            continue
        path = re.sub(r"\{(\w+):[^}]*\}", r"{\1}", route.resource.canonical)
        routes.add((route.method.lower(), path))
    return routes


def _documented_routes() -> set[tuple[str, str]]:
    return {(method, path) for path, item in DOC["paths"].items() for method in item
            if method in ("get", "post", "put", "patch", "delete")}


def test_the_document_is_openapi_3_1() -> None:
    assert DOC["openapi"] == "3.1.0"


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
    source = "\n".join(p.read_text() for p in INGEST_SOURCES.glob("*.py")
                       if p.name != "errors.py")
    raised_here = set(re.findall(r'reject\(\s*"(\w+)"', source))
    raised_here |= {"invalid_field"} if "invalid_field(" in source else set()
    assert raised_here <= set(ERROR_CODES), raised_here - set(ERROR_CODES)
    missing = set(ERROR_CODES) - raised_here - set(RAISED_ELSEWHERE)
    assert not missing, f"documented but never raised: {missing}"
    repo = INGEST_SOURCES.parents[1]
    for code, where in RAISED_ELSEWHERE.items():
        assert f'"{code}"' in (repo / where).read_text(), (code, where)
