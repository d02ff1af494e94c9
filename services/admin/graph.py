"""The admin CLI's Meta adapter: list a WABA's message templates over the Graph API."""

from __future__ import annotations

from typing import Any, Protocol

import aiohttp

from shared.errors import DependencyUnavailable, PermanentError

_TEMPLATE_FIELDS = "id,name,language,status,category,parameter_format,components"
_PAGE_SIZE = 100
_MAX_PAGES = 1000  # a WABA holds at most 6,000 templates: more pages would be a paging bug


class TemplateSource(Protocol):
    async def list_templates(self, waba_id: str, access_token: str) -> list[dict[str, Any]]: ...


class GraphClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        graph_url: str,
        graph_version: str,
        page_size: int = _PAGE_SIZE,
    ) -> None:
        self._session = session
        self._base = graph_url.rstrip("/")
        self._version = graph_version
        self._page_size = page_size

    async def list_templates(self, waba_id: str, access_token: str) -> list[dict[str, Any]]:
        """Every template of the WABA, following the cursor paging to the end."""
        url = f"{self._base}/{self._version}/{waba_id}/message_templates"
        params: dict[str, str] = {"fields": _TEMPLATE_FIELDS, "limit": str(self._page_size)}
        headers = {"Authorization": f"Bearer {access_token}"}
        templates: list[dict[str, Any]] = []
        for _ in range(_MAX_PAGES):
            page = await self._get(url, params, headers)
            templates.extend(page.get("data") or [])
            paging = page.get("paging") or {}
            after = (paging.get("cursors") or {}).get("after")
            # Meta includes `next` only when another page exists; the cursor is re-sent against
            # our base URL rather than following `next`, whose host may be Meta's own.
            if not paging.get("next") or not after:
                return templates
            params = {**params, "after": after}
        raise PermanentError("template paging did not end", code="graph_paging_loop")

    async def _get(
        self, url: str, params: dict[str, str], headers: dict[str, str]
    ) -> dict[str, Any]:
        try:
            async with self._session.get(url, params=params, headers=headers) as resp:
                body = await resp.json(content_type=None)
                if resp.status >= 500:
                    raise DependencyUnavailable(
                        f"Graph API answered {resp.status}", details={"dependency": "graph"}
                    )
                if resp.status != 200:
                    error = (body or {}).get("error", {}) if isinstance(body, dict) else {}
                    raise PermanentError(
                        f"Graph API refused the template list: ({error.get('code')}) "
                        f"{error.get('message', resp.status)}",
                        code="graph_error",
                        details={"meta_code": error.get("code"), "http_status": resp.status},
                    )
                return body  # type: ignore[no-any-return]
        except aiohttp.ClientError as exc:
            raise DependencyUnavailable(
                f"Graph API unreachable: {type(exc).__name__}", details={"dependency": "graph"}
            ) from exc
