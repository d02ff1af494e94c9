"""The reference servers of benchmark `ingest`, run by bench/bench_ingest.py on ingest's core.

bare (the upper bound): an aiohttp handler on ingest's route that only reads and parses the JSON
body and answers 202 with a small JSON body, with no authentication, no database, no broker and
no logging.

--floor: the same handler behind what any ingest request pays before doing any work of its own:
ingest's error/metrics middleware, and waiting for an acknowledgement that another thread gives
(handed to the event loop in one call per batch; ingest's event loop now collects librdkafka's
delivery reports itself, which costs it less: shared/rdkafka_producer.py). No broker is
involved, so this is the most a handler that answers only after a durable publish can reach in
this framework, whatever it does besides.

    .venv/bin/python bench/bare_ingest.py --port 8099 [--floor]
"""

from __future__ import annotations

import argparse
import asyncio
import queue
import threading

import orjson
from aiohttp import web

from shared.http import SERVICE_KEY, error_middleware


async def post_message(request: web.Request) -> web.Response:
    body = orjson.loads(await request.read())
    answer = {"id": "msg_bare", "status": "accepted", "to": body.get("to")}
    return web.Response(body=orjson.dumps(answer), status=202, content_type="application/json")


class Acknowledger:
    """A thread that acknowledges what it is given, a batch at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._waiting: queue.SimpleQueue[asyncio.Future[None]] = queue.SimpleQueue()
        threading.Thread(target=self._run, name="acknowledger", daemon=True).start()

    async def acknowledged(self) -> None:
        future = self._loop.create_future()
        self._waiting.put(future)
        await future

    def _run(self) -> None:
        while True:
            # No waiting to gather more: whatever queued while the loop was busy is one batch,
            # so the floor is bound by CPU, not by a delay of ours.
            batch = [self._waiting.get()]
            while not self._waiting.empty():
                batch.append(self._waiting.get_nowait())
            self._loop.call_soon_threadsafe(_settle, batch)


def _settle(batch: list[asyncio.Future[None]]) -> None:
    for future in batch:
        if not future.done():
            future.set_result(None)


ACKNOWLEDGER = web.AppKey("acknowledger", Acknowledger)


async def post_acknowledged(request: web.Request) -> web.Response:
    body = orjson.loads(await request.read())
    await request.app[ACKNOWLEDGER].acknowledged()
    answer = {"id": "msg_floor", "status": "accepted", "to": body.get("to")}
    return web.Response(body=orjson.dumps(answer), status=202, content_type="application/json")


def floor_app() -> web.Application:
    app = web.Application(middlewares=[error_middleware])
    app[SERVICE_KEY] = "ingest-floor"

    async def start_acknowledger(app: web.Application) -> None:
        app[ACKNOWLEDGER] = Acknowledger(asyncio.get_running_loop())

    app.on_startup.append(start_acknowledger)
    app.router.add_post("/v1/messages", post_acknowledged)
    return app


async def healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--floor",
        action="store_true",
        help="behind ingest's middleware, answering after another thread's ack",
    )
    args = parser.parse_args()
    if args.floor:
        app = floor_app()
    else:
        app = web.Application()
        app.router.add_post("/v1/messages", post_message)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
