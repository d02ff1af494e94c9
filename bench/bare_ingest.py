"""The upper bound of benchmark `ingest`: an aiohttp handler on ingest's route that only reads and
parses the JSON body and answers 202 with a small JSON body, with no authentication, no
database, no broker and no logging. Run by bench/bench_ingest.py on the same core as ingest.

    .venv/bin/python bench/bare_ingest.py --port 8099
"""

from __future__ import annotations

import argparse

import orjson
from aiohttp import web


async def post_message(request: web.Request) -> web.Response:
    body = orjson.loads(await request.read())
    answer = {"id": "msg_bare", "status": "accepted", "to": body.get("to")}
    return web.Response(body=orjson.dumps(answer), status=202, content_type="application/json")


async def healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = web.Application()
    app.router.add_post("/v1/messages", post_message)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
