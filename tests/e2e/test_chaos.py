"""Chaos: 10,000 messages through the whole pipeline (ingest -> billing -> sender -> Meta's
simulator -> status -> billing) while the broker is restarted once and each service (ingest,
billing, sender, status, notify) is killed with SIGKILL once and started again, spread over the
run. Then:

1. nothing lost: every message a 202 accepted reaches a final state (delivered or read; or, cut
   off by a killed sender before Meta accepted it, failed with `outcome_unknown`);
2. nothing sent twice: the simulator's record of sends has each of our message ids once at most;
3. nothing charged twice: per message, one reservation at most, one settlement (charge or
   release) at most, and one late charge at most (Meta billed a message whose reservation a
   guessed `failed` had released) in the ledger;
4. the ledger and the balances agree: per account, top-ups minus charges equal the available
   credit, nothing is left reserved, and that is the top-up minus the simulator's billable
   deliveries at rate-card prices.

The broker restarted here is the test's own: a second Kafka started by the project's script
(deploy/local/infra.sh) with its own run directory and free ports, stopped at the end. The
shared broker other tests use is never touched. The database is the shared one (each stack has
its own). A service that exits by itself (a dependency down past its retry budget is a reason
to exit and be restarted) is started again, as a supervisor would, and counted.

Bounded: submission paced over the run, every wait with a deadline, the whole test under
`DEADLINE_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pymongo.errors import PyMongoError

from shared.mongo import make_client
from shared.phone import parse_e164
from shared.ports import free_loopback_port
from shared.pricing import load_rate_card
from tests.conftest import INFRA, Broker, broker_from_env
from tests.e2e.conftest import TERMINAL, Account, Stack, eventually, seed_accounts
from tests.e2e.test_pipeline import _recipients

MESSAGES = int(os.environ.get("HALA_CHAOS_MESSAGES", 10_000))  # fewer: a quicker local run
DEADLINE_S = 20 * 60
TOP_UP = 2_000_000_000  # micros: enough for every message, so none is refused for credit
SERVICES = ("ingest", "billing", "sender", "status", "notify")
CONCURRENCY = 24
SUBMIT_RATE = 60.0  # requests/s: the submission spans the first part of the run


@dataclass
class OwnKafka:
    """A second broker, this test's alone, run by deploy/local/infra.sh."""

    run_dir: Path
    mongodb_url: str
    port: int = field(default_factory=free_loopback_port)
    controller_port: int = field(default_factory=free_loopback_port)

    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("KAFKA_") and k != "HALA_KAFKA_SECRETS_DIR"
        }
        env.update(
            {
                "HALA_RUN_DIR": str(self.run_dir),
                "KAFKA_PORT": str(self.port),
                "KAFKA_CONTROLLER_PORT": str(self.controller_port),
                "MONGODB_URL": self.mongodb_url,  # the database is not started here
                "HALA_PYTHON": sys.executable,
            }
        )
        return env

    async def infra(self, *args: str) -> str:
        process = await asyncio.create_subprocess_exec(
            str(INFRA), *args, env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        out, _ = await asyncio.wait_for(process.communicate(), timeout=300)
        text = out.decode(errors="replace")
        if process.returncode != 0:
            raise RuntimeError(f"infra.sh {' '.join(args)} failed:\n{text[-3000:]}")
        return text

    async def broker(self) -> Broker:
        env = dict(line.split("=", 1) for line in (await self.infra("env")).split() if "=" in line)
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == f"localhost:{self.port}"
        return broker_from_env(env)

    async def restart(self) -> float:
        """Stopped (SIGTERM) and started again; the seconds it was away."""
        started = time.monotonic()
        await self.infra("down")
        await self.infra("up")
        return time.monotonic() - started


@pytest.fixture
async def own_kafka(tmp_path: Path, mongodb_url: str) -> AsyncIterator[OwnKafka]:
    kafka = OwnKafka(tmp_path / "infra", mongodb_url)
    try:
        await kafka.infra("up")
        yield kafka
    finally:
        with contextlib.suppress(Exception):
            await kafka.infra("down")


class Supervisor:
    """Starts again a service that exited when no one killed it, and counts it."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.restarts: Counter[str] = Counter()
        self.paused: set[str] = set()
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        while True:
            for name, component in self.stack.components.items():
                process = component.process
                if name not in self.paused and process is not None and process.poll() is not None:
                    self.restarts[name] += 1
                    self.stack.start(name)
            await asyncio.sleep(0.5)

    async def kill_and_restart(self, name: str) -> None:
        """SIGKILL, then started again until it is ready: a start that exits (a dependency
        failing it, e.g. the busy database interrupting an index build) is started again, as
        a supervisor would, and counted."""
        self.paused.add(name)
        try:
            self.stack.kill(name, signal.SIGKILL)
            for attempt in range(5):
                self.stack.start(name)
                try:
                    await self.stack.wait_ready(name, within=120)
                    return
                except AssertionError:  # exited while starting
                    if attempt == 4:
                        raise
                    self.restarts[name] += 1
        finally:
            self.paused.discard(name)


@dataclass
class Planned:
    account: Account
    body: dict[str, Any]
    key: str
    message_id: str = ""
    attempts: int = 0


def plan(accounts: list[Account], total: int) -> list[Planned]:
    rng = random.Random(10_000)
    # 480 contacts in four markets: under the 2K tier's unique-recipient limit. Utility and
    # authentication templates: Meta caps marketing per user, and this test is not about that.
    recipients = [n for region, numbers in _recipients().items() if region != "US" for n in numbers]
    templates = [("receipt", 1), ("otp", 1)]
    result = []
    for i in range(total):
        account = accounts[i % len(accounts)]
        name, params = rng.choice(templates)
        body = {
            "from": rng.choice(account.numbers),
            "to": rng.choice(recipients),
            "type": "template",
            "template": {
                "name": name,
                "language": {"code": "en_US"},
                "components": [
                    {"type": "body", "parameters": [{"type": "text", "text": f"v{i}"}] * params}
                ],
            },
            "client_reference": f"chaos-{i}",
        }
        result.append(Planned(account, body, key=f"chaos-{i}"))
    return result


async def submit(stack: Stack, planned: list[Planned], accepted: list[int]) -> None:
    """Every request until it has its 202, at SUBMIT_RATE: a refused connection (ingest
    killed), a 503 (the broker away) or a 429 is tried again with the same Idempotency-Key, so a
    request that did reach the broker before its answer was lost keeps its one message."""
    queue: asyncio.Queue[Planned] = asyncio.Queue()
    for p in planned:
        queue.put_nowait(p)
    interval = CONCURRENCY / SUBMIT_RATE
    timeout = aiohttp.ClientTimeout(total=30)

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            p = queue.get_nowait()
            while True:
                p.attempts += 1
                began = time.monotonic()
                try:
                    async with session.post(
                        f"{stack.url('ingest')}/v1/messages",
                        json=p.body,
                        headers={
                            "Authorization": f"Bearer {p.account.api_key}",
                            "Idempotency-Key": p.key,
                        },
                    ) as resp:
                        body = await resp.json(content_type=None)
                        if resp.status == 202:
                            p.message_id = body["id"]
                            accepted[0] += 1
                            break
                        assert resp.status in (429, 503), (resp.status, body)
                        retry_after = float(resp.headers.get("Retry-After", "0.5"))
                except (TimeoutError, aiohttp.ClientError):
                    retry_after = 0.5
                assert p.attempts < 400, f"{p.key}: no 202 after {p.attempts} attempts"
                await asyncio.sleep(min(retry_after, 2.0))  # backoff before trying again
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - began)))

    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(CONCURRENCY)))


async def sends_accepted(stack: Stack) -> int:
    return int((await stack.sim("GET", "/_sim/stats"))["sends_accepted"])


@pytest.fixture
async def chaos_stack(
    tmp_path: Path, own_kafka: OwnKafka, mongodb_url: str
) -> AsyncIterator[tuple[Stack, OwnKafka]]:
    broker = await own_kafka.broker()
    stack = Stack(tmp_path / "stack", broker, mongodb_url)
    try:
        await stack.start_all()
        yield stack, own_kafka
    finally:
        stack.stop_all()
        mongo = make_client(mongodb_url)
        await mongo.drop_database(stack.database)
        await mongo.close()


# pytest-timeout's 900 s per test (pyproject.toml) is too short for this one: its own deadline
# (DEADLINE_S), plus the second broker's start and stop.
@pytest.mark.timeout(DEADLINE_S + 300)
async def test_ten_thousand_messages_survive_a_broker_restart_and_every_service_killed(
    chaos_stack: tuple[Stack, OwnKafka],
) -> None:
    stack, kafka = chaos_stack
    began = time.monotonic()
    async with asyncio.timeout(DEADLINE_S):
        await stack.sim("POST", "/_sim/webhooks/config", json={"profile": "realistic"})
        accounts = await seed_accounts(stack, TOP_UP)
        planned = plan(accounts, MESSAGES)
        supervisor = Supervisor(stack)
        supervisor.task = asyncio.create_task(supervisor.run())
        accepted = [0]
        events: list[tuple[float, str]] = []
        submitting = asyncio.create_task(submit(stack, planned, accepted))
        try:

            async def after(what: str, check: Any, within: float) -> None:
                await eventually(check, within=within, every=0.2, what=what)

            def accepted_at_least(n: int) -> Any:
                async def check() -> bool | str:
                    if submitting.done() and submitting.exception():
                        raise submitting.exception()  # type: ignore[misc]
                    return True if accepted[0] >= n else f"{accepted[0]} accepted"

                return check

            def sent_at_least(n: int) -> Any:
                async def check() -> bool | str:
                    sent = await sends_accepted(stack)
                    return True if sent >= n else f"{sent} sent"

                return check

            # While ingest takes requests: ingest itself, then the broker.
            await after("a fifth accepted", accepted_at_least(MESSAGES // 5), 300)
            await supervisor.kill_and_restart("ingest")
            events.append((time.monotonic() - began, "ingest killed -9 and restarted"))
            await after("half accepted", accepted_at_least(MESSAGES // 2), 300)
            away = await kafka.restart()
            events.append((time.monotonic() - began, f"broker restarted ({away:.0f} s away)"))
            # While the pipeline drains: the consumers, one at a time.
            for name, share in (
                ("billing", 0.3),
                ("sender", 0.45),
                ("status", 0.6),
                ("notify", 0.75),
            ):
                await after(f"{share:.0%} sent", sent_at_least(int(MESSAGES * share)), 400)
                await supervisor.kill_and_restart(name)
                events.append((time.monotonic() - began, f"{name} killed -9 and restarted"))
            await submitting
            submitted_in = time.monotonic() - began
            await check_properties(stack, accounts, planned)
        finally:
            if not submitting.done():
                submitting.cancel()
            supervisor.task.cancel()  # before the stack and the broker are stopped
    took = time.monotonic() - began
    print(
        f"\nchaos: {MESSAGES} messages, all final in {took:.0f} s "
        f"({MESSAGES / took:.1f} msg/s end to end; submission and chaos {submitted_in:.0f} s); "
        f"events: {events}; restarted by the supervisor: {dict(supervisor.restarts)}; "
        f"requests tried again: {sum(p.attempts - 1 for p in planned)}"
    )


async def check_properties(stack: Stack, accounts: list[Account], planned: list[Planned]) -> None:
    ids = [p.message_id for p in planned]
    assert len(set(ids)) == len(planned) and all(ids), "one message per request"
    mongo = make_client(stack.mongodb_url)
    db = mongo[stack.database]
    try:

        async def all_final() -> bool | str:
            try:  # counted by the database; the shared FerretDB is slow when the box is busy
                done = await db["messages"].count_documents({"status": {"$in": list(TERMINAL)}})
            except PyMongoError as exc:
                return f"not counted this time: {exc!r}"
            return True if done >= len(ids) else f"{done}/{len(ids)} final"

        await eventually(all_final, within=DEADLINE_S, every=5, what="every message final")
        docs = {
            d["_id"]: d
            for d in await patiently(
                lambda: (
                    db["messages"]
                    .find({}, {"status": 1, "status_reason": 1}, batch_size=2000)
                    .to_list(None)
                )
            )
        }
        sends = (await stack.sim("GET", "/_sim/sends"))["sends"]
        reached_meta = Counter(s["biz_opaque_callback_data"] for s in sends)

        # 1. nothing lost
        lost = [i for i in ids if i not in docs or docs[i]["status"] not in TERMINAL]
        assert not lost, f"{len(lost)} accepted messages never final, e.g. {lost[:5]}"
        wrong = Counter(
            (d["status"], d.get("status_reason"))
            for i, d in docs.items()
            if d["status"] not in ("delivered", "read")
            and not (
                d["status"] == "failed"
                and d.get("status_reason") == "outcome_unknown"
                and i not in reached_meta
            )
        )
        assert not wrong, f"messages in a wrong final state: {dict(wrong)}"

        # 2. nothing sent twice
        twice = {k: n for k, n in reached_meta.items() if n > 1}
        assert not twice, f"{len(twice)} messages sent twice, e.g. {list(twice.items())[:5]}"
        assert set(reached_meta) <= set(ids)

        # 3. nothing charged twice
        per_message: Counter[tuple[str, str]] = Counter()
        entries = await patiently(
            lambda: (
                db["ledger"]
                .find({}, {"account_id": 1, "kind": 1, "message_id": 1}, batch_size=2000)
                .to_list(None)
            )
        )
        for entry in entries:
            if entry.get("message_id"):
                kind = str(entry["_id"]).rsplit(":", 1)[-1]  # reserve, settle or late-charge
                per_message[(entry["message_id"], kind)] += 1
        double = {k: n for k, n in per_message.items() if n > 1}
        assert not double, f"charged or reserved twice: {list(double.items())[:5]}"

        # 4. the ledger and the balances agree, and with Meta's billable deliveries
        card = load_rate_card()
        owner = {n: a.account_id for a in accounts for n in a.numbers}
        expected = {a.account_id: a.top_up for a in accounts}
        for s in sends:
            if s["pricing"]["billable"]:
                expected[owner[s["phone_number_id"]]] -= card.price(
                    s["pricing"]["category"], parse_e164("+" + s["recipient"])[1]
                )

        async def settled() -> bool | dict[str, Any] | str:
            try:
                balances = {
                    b["_id"]: (b["available"], b["reserved"])
                    for b in await db["balances"]
                    .find({"_id": {"$in": list(expected)}})
                    .to_list(None)
                }
                movements = (
                    await db["ledger"]
                    .find(
                        {"kind": {"$in": ["topup", "charge"]}},
                        {"account_id": 1, "kind": 1, "amount": 1},
                    )
                    .to_list(None)
                )
            except PyMongoError as exc:
                return f"not read this time: {exc!r}"
            ledger: Counter[str] = Counter()
            for entry in movements:
                sign = 1 if entry["kind"] == "topup" else -1
                ledger[entry["account_id"]] += sign * entry["amount"]
            want = {k: (v, 0) for k, v in expected.items()}
            from_ledger = {k: (ledger[k], 0) for k in expected}
            # Exact: what Meta billed == the ledger == the balances, nothing left reserved. (A
            # message Meta billed after a guessed `failed` released it is charged late.)
            return (
                True
                if balances == from_ledger == want
                else {"balances": balances, "from_meta": want, "from_ledger": from_ledger}
            )

        await eventually(
            settled,
            within=180,
            every=5,
            what="balances == ledger == Meta's billable deliveries, nothing reserved",
        )
    finally:
        await mongo.close()


async def patiently(read: Callable[[], Awaitable[Any]], tries: int = 5) -> Any:
    """A read of thousands of documents, tried again when the busy shared database times out."""
    for attempt in range(tries):
        try:
            return await read()
        except PyMongoError:
            if attempt == tries - 1:
                raise
    raise AssertionError("unreachable")
