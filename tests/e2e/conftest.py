"""The whole platform as separate processes — the Meta simulator, ingest, billing, sender,
status, notify and guard — on free loopback ports, against the real Kafka and MongoDB-compatible
server (started once per session by tests/conftest.py's fixture). Each stack gets its own topic
prefix, database and faust app id, so stacks never see each other's data.

As deployed: each service connects to Kafka as its own principal, with the ACLs the set-up
grants the stack's prefix; each serves its ops endpoints on a port of its own; status receives
the simulator's webhooks over HTTPS, with a certificate of a CA made for the stack, which the
simulator is told to trust."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from services.admin import commands
from services.admin.graph import GraphClient
from shared.kafka import make_producer
from shared.mongo import make_client
from shared.ports import free_loopback_port
from shared.secrets import TokenVault, new_key
from tests.conftest import Broker
from tools import pki
from tools.kafka_setup import revoke

REPO = Path(__file__).resolve().parents[2]
SIM_CONFIG = Path(__file__).with_name("metasim_e2e.yaml")
TERMINAL = frozenset({"delivered", "read", "failed", "expired", "rejected"})


async def eventually(
    check: Callable[[], Awaitable[Any]],
    *,
    within: float,
    every: float = 0.5,
    what: str = "condition",
) -> Any:
    """Poll `check` until it returns True; anything else it returns describes what is missing,
    and the last such description is in the failure at the deadline."""
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last is True:
            return last
        await asyncio.sleep(every)
    raise TimeoutError(f"{what} not reached within {within}s (last: {last!r})")


@dataclass
class Component:
    name: str
    args: list[str]
    port: int  # the client port (the simulator's only one); the ops port of sender and billing
    ready_path: str
    env: dict[str, str]
    log: Path
    ops_port: int | None = None  # /healthz, /readyz, /metrics (the simulator: on `port`)
    scheme: str = "http"
    process: subprocess.Popen[bytes] | None = None


@dataclass
class Stack:
    """A running platform. Components can be killed (-9) and restarted mid-run."""

    tmp: Path
    broker: Broker
    mongodb_url: str
    unique: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    components: dict[str, Component] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.prefix = f"e{self.unique}."
        self.database = f"e2e_{self.unique}"
        self.token_keys = new_key()
        self.topup_signing_key = secrets.token_urlsafe(24)  # shared by billing and the seeding
        ports = {name: free_loopback_port() for name in ("metasim", "ingest", "status", "smtp")}
        ops = {
            name: free_loopback_port()
            for name in ("ingest", "status", "sender", "billing", "notify", "guard")
        }
        self.smtp_port = ports["smtp"]
        tls = pki.issue(self.tmp / "tls", "status")
        sim_config = yaml.safe_load(SIM_CONFIG.read_text())
        sim_config["webhooks"]["callback_url"] = (
            f"https://127.0.0.1:{ports['status']}/webhooks/meta"
        )
        self.sim_config_path = self.tmp / "metasim.yaml"
        self.sim_config_path.write_text(yaml.safe_dump(sim_config))
        self.sim_config = sim_config
        base = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "HALA_ENV": "development",
            "MONGODB_URL": self.mongodb_url,
            "MONGODB_DATABASE": self.database,
            "HALA_TOPIC_PREFIX": self.prefix,
            "HALA_TOKEN_KEYS": self.token_keys,
            "HALA_TOPUP_SIGNING_KEY": self.topup_signing_key,
        }
        meta = f"http://127.0.0.1:{ports['metasim']}"
        specific = {
            "metasim": (
                {"METASIM_PORT": str(ports["metasim"]), "METASIM_WEBHOOK_CA_FILE": str(tls.ca)},
                [
                    "-m",
                    "tools.metasim",
                    "--port",
                    str(ports["metasim"]),
                    "--config",
                    str(self.sim_config_path),
                ],
                "/healthz",
            ),
            "ingest": (
                {
                    "INGEST_HTTP_PORT": str(ports["ingest"]),
                    "INGEST_OPS_PORT": str(ops["ingest"]),
                    "INGEST_META_BASE_URL": meta,
                },
                ["-m", "services.ingest"],
                "/readyz",
            ),
            "status": (
                {
                    "STATUS_HTTP_PORT": str(ports["status"]),
                    "STATUS_OPS_PORT": str(ops["status"]),
                    "STATUS_TLS_CERT_FILE": str(tls.cert),
                    "STATUS_TLS_KEY_FILE": str(tls.key),
                    "STATUS_APP_SECRET": sim_config["app_secret"],
                    "STATUS_VERIFY_TOKEN": sim_config["verify_token"],
                    # Ambiguous sends (a sender killed mid-call) are settled within the test.
                    "STATUS_UNKNOWN_TIMEOUT_SECONDS": "20",
                    "STATUS_SWEEP_INTERVAL_SECONDS": "5",
                    "STATUS_SWEEP_MESSAGES_INTERVAL_SECONDS": "5",
                },
                ["-m", "services.status"],
                "/readyz",
            ),
            "sender": (
                {"SENDER_OPS_PORT": str(ops["sender"]), "SENDER_META_BASE_URL": meta},
                ["-m", "services.sender"],
                "/readyz",
            ),
            "billing": (
                {
                    "BILLING_OPS_PORT": str(ops["billing"]),
                    "BILLING_FAUST_APP_ID": f"billing-{self.unique}",
                },
                ["-m", "services.billing"],
                "/readyz",
            ),
            # a test that reads mail starts an SMTP server on smtp_port
            "notify": (
                {
                    "NOTIFY_OPS_PORT": str(ops["notify"]),
                    "NOTIFY_SMTP_PORT": str(ports["smtp"]),
                    "NOTIFY_POLL_INTERVAL_SECONDS": "0.2",
                },
                ["-m", "services.notify"],
                "/readyz",
            ),
            # The tests' accounts are brand new, write to hundreds of numbers they never wrote to,
            # send thousands in minutes with no baseline, and fail many messages on purpose
            # (131047 and the like): exactly what the new-recipients, volume-spike and
            # failure-rate rules hold. Those are left to their own tests (tests/unit/guard,
            # tests/integration/trust); Meta's spam and quality signals run as configured.
            "guard": (
                {
                    "GUARD_OPS_PORT": str(ops["guard"]),
                    "GUARD_NEW_RECIPIENTS_MINIMUM": "1000000",
                    "GUARD_VOLUME_SPIKE_MINIMUM": "1000000",
                    "GUARD_FAILURE_RATE_MINIMUM": "1000000",
                },
                ["-m", "services.guard"],
                "/readyz",
            ),
        }
        for name, (env, args, ready) in specific.items():
            kafka = self.broker.env(name) if name != "metasim" else {}
            self.components[name] = Component(
                name,
                args,
                ports.get(name) or ops[name],
                ready,
                {**base, **kafka, **env},
                self.tmp / f"{name}.log",
                ops_port=ops.get(name),
                scheme="https" if name == "status" else "http",
            )

    def url(self, name: str) -> str:
        """A component's client port (sender, billing, notify and guard have none: their ops
        port)."""
        c = self.components[name]
        return f"{c.scheme}://127.0.0.1:{c.port}"

    def ops_url(self, name: str) -> str:
        """Where a component serves /healthz, /readyz and /metrics."""
        c = self.components[name]
        return f"http://127.0.0.1:{c.ops_port or c.port}"

    def start(self, name: str) -> None:
        c = self.components[name]
        log = c.log.open("ab")
        c.process = subprocess.Popen(
            [sys.executable, *c.args], cwd=REPO, env=c.env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        c = self.components[name]
        assert c.process is not None
        c.process.send_signal(sig)
        c.process.wait(timeout=30)

    def log_tail(self, name: str, chars: int = 3000) -> str:
        log = self.components[name].log
        return log.read_text(errors="replace")[-chars:] if log.exists() else ""

    async def wait_ready(self, *names: str, within: float = 90) -> None:
        async with aiohttp.ClientSession() as session:
            for name in names:
                c = self.components[name]

                async def ready(c: Component = c) -> bool:
                    if c.process is not None and c.process.poll() is not None:
                        raise AssertionError(f"{c.name} exited:\n{self.log_tail(c.name)}")
                    try:
                        async with session.get(f"{self.ops_url(c.name)}{c.ready_path}") as resp:
                            return resp.status == 200
                    except aiohttp.ClientError:
                        return False

                await eventually(ready, within=within, what=f"{name} ready")

    async def start_all(self) -> None:
        await self.broker.grant(self.prefix)
        for name in self.components:
            self.start(name)
        await self.wait_ready(*self.components)

    def stop_all(self) -> None:
        for c in self.components.values():
            if c.process is not None and c.process.poll() is None:
                c.process.send_signal(signal.SIGTERM)
        for c in self.components.values():
            if c.process is not None:
                try:
                    c.process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    c.process.kill()

    async def sim(self, method: str, path: str, **kwargs: Any) -> Any:
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, f"{self.url('metasim')}{path}", **kwargs) as resp,
        ):
            assert resp.status < 300, f"{method} {path}: {resp.status} {await resp.text()}"
            return await resp.json()


@dataclass
class Account:
    account_id: str
    api_key: str
    numbers: list[str]
    waba_id: str
    top_up: int


async def seed_accounts(
    stack: Stack, top_up: int, customer_service_window_check: bool = True
) -> list[Account]:
    """One platform account per simulated business portfolio, with its numbers, synced
    templates, an API key and prepaid credit — done with the admin CLI's own commands.
    `customer_service_window_check=False` lets free-form messages to closed windows through
    ingest, for tests of Meta's own refusal (131047)."""
    vault = TokenVault(stack.token_keys)
    mongo = make_client(stack.mongodb_url)
    producer = make_producer(stack.broker.as_service("admin"))  # top-ups: only hala-admin
    await producer.start()
    tokens = {t["wabas"][0]: t["token"] for t in stack.sim_config["access_tokens"]}
    accounts = []
    try:
        db = mongo[stack.database]
        await commands.prepare(db)
        async with aiohttp.ClientSession() as session:
            graph = GraphClient(session, stack.url("metasim"), "v24.0")
            for i, portfolio in enumerate(stack.sim_config["portfolios"]):
                account = await commands.create_account(
                    db,
                    name=f"E2E {i}",
                    email=f"ops{i}@example.com",
                    phone="+14155552671",
                    business_name=f"Business {i}",
                    fb_business_manager_id=f"90000000000{i}",
                )
                account_id = account["_id"]
                if not customer_service_window_check:
                    await commands.update_account(
                        db, account_id, customer_service_window_check=False
                    )
                waba = portfolio["wabas"][0]
                await commands.register_waba(
                    db, account_id=account_id, waba_id=waba["id"], portfolio_id=portfolio["id"]
                )
                for number in waba["phone_numbers"]:
                    await commands.register_number(
                        db,
                        vault,
                        account_id=account_id,
                        waba_id=waba["id"],
                        phone_number_id=number["id"],
                        display_phone_number=number["display_phone_number"],
                        access_token=tokens[waba["id"]],
                        throughput_mps=number["throughput_mps"],
                        messaging_limit=portfolio["messaging_tier"],
                    )
                await commands.sync_templates(db, vault, graph, waba_id=waba["id"])
                api_key, _ = await commands.issue_key(db, account_id=account_id)
                await commands.top_up(
                    db,
                    producer,
                    account_id=account_id,
                    amount=top_up,
                    signing_key=stack.topup_signing_key.encode(),
                    operator="e2e",
                    topic_prefix=stack.prefix,
                )
                accounts.append(
                    Account(
                        account_id,
                        api_key,
                        [n["id"] for n in waba["phone_numbers"]],
                        waba["id"],
                        top_up,
                    )
                )

            async def topped_up() -> bool:
                docs = (
                    await db["balances"]
                    .find({"_id": {"$in": [a.account_id for a in accounts]}})
                    .to_list(None)
                )
                return len(docs) == len(accounts) and all(d["available"] == top_up for d in docs)

            await eventually(topped_up, within=60, what="top-ups applied by billing")
    finally:
        await producer.stop()
        await mongo.close()
    return accounts


@pytest.fixture
async def stack(tmp_path: Path, broker: Broker, mongodb_url: str) -> AsyncIterator[Stack]:
    running = Stack(tmp_path, broker, mongodb_url)
    try:
        await running.start_all()
        yield running
    finally:
        running.stop_all()
        mongo = make_client(mongodb_url)
        await mongo.drop_database(running.database)
        await mongo.close()
        # Its topics, faust's and their ACLs, all named with the stack's id.
        await revoke(broker.setup, lambda name: running.unique in name)
