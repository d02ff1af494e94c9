"""Set up a demo tenant against the local Meta simulator; safe to run again and again.

    python deploy/local/seed_demo.py        (make up / make run call it once everything is ready)

Creates (or reuses) the "Demo Co" account, registers every WABA and phone number of the
simulator's world (tools/metasim/default.yaml, or METASIM_CONFIG) with an access token the
simulator accepts, syncs their templates, tops up credit when it is low, and prints an API key
with a ready-to-paste curl command.

Environment: MONGODB_*, KAFKA_* (as the admin principal, hala-admin: the only one that may
write top-ups; deploy/local/stack.py gives it), HALA_TOPIC_PREFIX, HALA_TOKEN_KEYS (when
absent, read from or created in .run/secrets.env — every service that decrypts tokens must get
the same value), METASIM_PORT, INGEST_HTTP_PORT (HTTPS with the local CA of .run/tls).
"""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
import orjson  # noqa: E402

from services.admin import commands, core  # noqa: E402
from services.admin.graph import GraphClient  # noqa: E402
from services.admin.settings import AdminSettings  # noqa: E402
from shared.collections import LEDGER  # noqa: E402
from shared.kafka import make_producer  # noqa: E402
from shared.mongo import make_client  # noqa: E402
from shared.secrets import TokenVault, new_key  # noqa: E402
from shared.settings import load_settings  # noqa: E402
from tools.metasim.config import DEFAULT_CONFIG_PATH, SimConfig, load_config  # noqa: E402

RUN_DIR = Path(os.environ.get("HALA_RUN_DIR", REPO / ".run"))
SECRETS_FILE = RUN_DIR / "secrets.env"
DEMO_KEY_FILE = RUN_DIR / "demo_api_key"
DEMO_ACCOUNT = "Demo Co"
LOW_CREDIT = 5_000_000  # micros: top up below 5 units of the currency
TOP_UP = 100_000_000
DEMO_RECIPIENT = "+447912345678"


def token_keys(
    env: dict[str, str] | os._Environ[str] = os.environ, secrets_file: Path = SECRETS_FILE
) -> str:
    """HALA_TOKEN_KEYS from the environment, else from .run/secrets.env, else a new key written
    there (mode 600). deploy/local/stack.py can call this to pass the same value to services."""
    if env.get("HALA_TOKEN_KEYS"):
        return env["HALA_TOKEN_KEYS"]
    if secrets_file.exists():
        for line in secrets_file.read_text().splitlines():
            name, _, value = line.partition("=")
            if name.strip() == "HALA_TOKEN_KEYS" and value.strip():
                return value.strip()
    keys = new_key()
    secrets_file.parent.mkdir(parents=True, exist_ok=True)
    with open(secrets_file, "a", encoding="utf-8") as handle:
        handle.write(f"HALA_TOKEN_KEYS={keys}\n")
    secrets_file.chmod(0o600)
    print(f"generated HALA_TOKEN_KEYS in {secrets_file}")
    return keys


def sending_token(config: SimConfig, waba_id: str) -> str:
    """A simulator token that may send and manage this WABA; a WABA's own token beats the BSP's."""
    usable = [
        t
        for t in config.access_tokens
        if not t.expired
        and not t.invalidated
        and {"whatsapp_business_messaging", "whatsapp_business_management"} <= set(t.permissions)
    ]
    for token in usable:
        if isinstance(token.wabas, list) and waba_id in token.wabas:
            return token.token.get_secret_value()
    for token in usable:
        if token.wabas == "*":
            return token.token.get_secret_value()
    raise SystemExit(f"the simulator config has no usable token for WABA {waba_id}")


async def _wait_for(url: str, within_seconds: float = 30.0) -> None:
    deadline = time.monotonic() + within_seconds
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"{url} did not answer within {within_seconds:.0f} s")
            await asyncio.sleep(0.5)


async def seed() -> None:
    config = load_config(os.environ.get("METASIM_CONFIG") or DEFAULT_CONFIG_PATH)
    vault = TokenVault(token_keys())
    metasim = f"http://127.0.0.1:{os.environ.get('METASIM_PORT', '8090')}"
    ingest = f"https://localhost:{os.environ.get('INGEST_HTTP_PORT', '8080')}"
    # The topics exist: infra.sh's set-up made them (and the admin principal may not). As the
    # operator: the admin CLI's settings (its principal, its top-up signing key).
    settings = load_settings(AdminSettings)
    prefix = settings.topic_prefix
    mongo = make_client(settings.mongodb_url, **settings.mongo_credentials())
    db = mongo[settings.mongodb_database]
    producer = make_producer(settings.kafka)
    await producer.start()
    try:
        await commands.prepare(db)
        found = await commands.find_accounts_by_name(db, DEMO_ACCOUNT)
        account = (
            found[0]
            if found
            else await commands.create_account(
                db,
                name=DEMO_ACCOUNT,
                email="demo@hala-whatsup.example",
                phone="+971501234567",
                business_name="Demo Co LLC",
                fb_business_manager_id="100000000000001",
                low_balance_threshold=10_000_000,
            )
        )
        account_id = account["_id"]
        if account.get("status") != "active":
            await commands.set_account_status(db, account_id, "active")
        print(f"account  {account_id} ({DEMO_ACCOUNT}, {'reused' if found else 'created'})")

        await _wait_for(f"{metasim}/healthz")
        waba_ids = []
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            graph = GraphClient(session, metasim, config.webhooks.graph_version)
            for portfolio in config.portfolios:
                for waba in portfolio.wabas:
                    await commands.register_waba(
                        db,
                        account_id=account_id,
                        waba_id=waba.id,
                        portfolio_id=portfolio.id,
                        name=waba.name,
                    )
                    for number in waba.phone_numbers:
                        await commands.register_number(
                            db,
                            vault,
                            account_id=account_id,
                            waba_id=waba.id,
                            phone_number_id=number.id,
                            display_phone_number=number.display_phone_number,
                            access_token=sending_token(config, waba.id),
                            throughput_mps=number.throughput_mps,
                            messaging_limit=portfolio.messaging_tier,
                        )
                    synced = await commands.sync_templates(db, vault, graph, waba_id=waba.id)
                    waba_ids.append(waba.id)
                    print(
                        f"waba     {waba.id}: {len(waba.phone_numbers)} numbers, "
                        f"{synced['synced']} templates {synced['by_status']}"
                    )

        balance = await commands.show_balance(db, account_id)
        if balance["available"] < LOW_CREDIT:
            # One id per top-up generation: until billing applied it, a re-run re-sends the
            # same event, which billing applies once.
            applied = await db[LEDGER].count_documents({"account_id": account_id, "kind": "topup"})
            event = await commands.top_up(
                db,
                producer,
                account_id=account_id,
                amount=TOP_UP,
                note="demo seed",
                signing_key=settings.topup_key(),
                operator="seed_demo",
                topic_prefix=prefix,
                event_id=f"topup_demo_{account_id}_{applied + 1}",
            )
            print(f"credit   top-up of {TOP_UP} micros requested ({event.event_id})")
        else:
            print(f"credit   {balance['available']} micros available")

        api_key = DEMO_KEY_FILE.read_text().strip() if DEMO_KEY_FILE.exists() else ""
        if not api_key or not await commands.key_is_active(db, api_key):
            api_key, _ = await commands.issue_key(db, account_id=account_id, name="demo")
            DEMO_KEY_FILE.parent.mkdir(parents=True, exist_ok=True)
            DEMO_KEY_FILE.write_text(api_key + "\n")
            DEMO_KEY_FILE.chmod(0o600)
        print(f"api key  {api_key}   (also in {DEMO_KEY_FILE})")
        print(_curl(ingest, api_key, await _demo_request(db, config, waba_ids)))
    finally:
        await producer.stop()
        await mongo.close()


async def _demo_request(db: Any, config: SimConfig, waba_ids: list[str]) -> dict[str, Any]:
    """A send with an approved template, preferring one without a media header."""
    numbers = {w.id: w.phone_numbers[0].id for p in config.portfolios for w in p.wabas}
    candidates = [
        t
        for waba_id in waba_ids
        for t in await commands.list_templates(db, waba_id)
        if t["status"] == "APPROVED"
    ]
    if not candidates:
        raise SystemExit("no approved template was synced from the simulator")
    candidates.sort(
        key=lambda t: (
            t.get("header_format") not in (None, "TEXT"),
            t["category"] != "UTILITY",
            t["language"] != "en_US",
            t["name"],
        )
    )
    template = candidates[0]
    return {
        "from": numbers[template["waba_id"]],
        "to": DEMO_RECIPIENT,
        "type": "template",
        "template": {
            "name": template["name"],
            "language": {"code": template["language"]},
            "components": core.example_components(template),
        },
        "client_reference": "demo-1",
    }


def _curl(ingest: str, api_key: str, body: dict[str, Any]) -> str:
    ca = shlex.quote(str(RUN_DIR / "tls" / "ca.pem"))
    return (
        "\nSend a message:\n\n"
        f"curl -sS --cacert {ca} -X POST {ingest}/v1/messages \\\n"
        f"  -H 'Authorization: Bearer {api_key}' \\\n"
        "  -H 'Content-Type: application/json' \\\n"
        '  -H "Idempotency-Key: demo-$(date +%s)" \\\n'
        f"  -d {shlex.quote(orjson.dumps(body).decode())}\n\n"
        "Then follow it:\n\n"
        f"curl -sS --cacert {ca} {ingest}/v1/messages "
        f"-H 'Authorization: Bearer {api_key}'\n"
    )


def main() -> None:
    asyncio.run(seed())


if __name__ == "__main__":
    main()
