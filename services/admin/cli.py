"""`hala`: the operator's command line. Parses arguments, opens what the command needs, calls
services/admin/commands.py and prints the result (as JSON with `--json`).

Connections come from MONGODB_*, KAFKA_* (the admin principal, hala-admin) and
HALA_TOPIC_PREFIX; access tokens are encrypted with HALA_TOKEN_KEYS (comma-separated Fernet
keys, newest first). Secrets never come from argv, where `ps` and the shell history show them:
a Meta access token is read from a file (`--access-token-file PATH`) or from stdin
(`--access-token -`).

Every command that changes something writes an `audit_log` entry (services/admin/audit.py)
before it reports success, and a failed attempt writes one too: who (HALA_OPERATOR or the OS
user, and the host), what (the command and its arguments, secrets redacted), the target, when,
from where, and the outcome. A change whose entry cannot be written is reported as an error.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import socket
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiokafka.errors import KafkaError
from pymongo.errors import PyMongoError

from services.admin import audit, audit_core, commands, trust, webhooks
from services.admin.graph import GraphClient
from services.admin.settings import AdminSettings
from shared.clock import SystemClock
from shared.errors import ServiceError
from shared.ids import new_id
from shared.kafka import KafkaConfig, make_producer
from shared.mongo import make_client
from shared.secrets import TokenVault
from shared.settings import ServiceSettings, load_settings
from shared.webhook_endpoints import ms_of


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


STDIN = "-"


def _stdin_only(text: str) -> str:
    if text != STDIN:
        raise argparse.ArgumentTypeError(
            "a token on the command line shows in `ps` and the shell history: give "
            "`--access-token -` and write it to stdin, or `--access-token-file PATH`"
        )
    return text


def read_access_token(args: argparse.Namespace) -> str:
    """The token named by --access-token-file, or read from stdin for `--access-token -`
    (one line; surrounding whitespace removed)."""
    if args.access_token_file is not None:
        try:
            token = Path(args.access_token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ServiceError(
                f"cannot read {args.access_token_file}: {exc.strerror}",
                code="unreadable_token_file",
            ) from exc
        where = args.access_token_file
    else:
        token = sys.stdin.readline().strip()
        where = "stdin"
    if not token:
        raise ServiceError(f"no access token in {where}", code="missing_access_token")
    return token


def _comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _iso_time(text: str) -> int:
    """An ISO 8601 time (without a zone: UTC) as ms."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError("an ISO 8601 time, e.g. 2026-12-01T10:00:00Z") from None
    return ms_of(moment if moment.tzinfo else moment.replace(tzinfo=UTC))


def _rate_limit_arguments(
    parser: argparse.ArgumentParser, what: str, required: bool = False
) -> None:
    parser.add_argument(
        "--rate-limit",
        metavar="N/s|N/min|N/h|default",
        required=required,
        help=f"request rate limit of {what}; `default` removes it",
    )
    parser.add_argument(
        "--rate-limit-burst",
        type=_positive_int,
        metavar="N",
        help="requests allowed at once (default: N of --rate-limit)",
    )


def _rate_limit_of(args: argparse.Namespace) -> dict[str, Any] | str | None:
    if args.rate_limit is None:
        if args.rate_limit_burst is not None:
            raise ServiceError("--rate-limit-burst needs --rate-limit", code="invalid_field")
        return None
    return commands.core.rate_limit(args.rate_limit, args.rate_limit_burst)


def build_parser() -> argparse.ArgumentParser:
    # `--json` is accepted before or after the command: `hala --json accounts list` and
    # `hala accounts list --json` both work.
    json_flag = argparse.ArgumentParser(add_help=False)
    json_flag.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print machine-readable JSON"
    )

    parser = argparse.ArgumentParser(prog="hala", description="Hala Whatsup administration")
    parser.add_argument(
        "--json", action="store_true", default=False, help="print machine-readable JSON"
    )
    groups = parser.add_subparsers(dest="group", required=True, metavar="GROUP")

    def command(group: Any, name: str, help_text: str) -> argparse.ArgumentParser:
        return group.add_parser(name, help=help_text, parents=[json_flag])

    accounts = groups.add_parser("accounts", help="client accounts").add_subparsers(
        dest="command", required=True, metavar="COMMAND"
    )
    create = command(accounts, "create", "create an account (prints its id)")
    create.add_argument("--name", required=True)
    create.add_argument("--email", required=True)
    create.add_argument("--phone", required=True, help="E.164, e.g. +971501234567")
    create.add_argument("--business-name", required=True)
    create.add_argument("--fb-business-manager-id", required=True)
    create.add_argument(
        "--low-balance-threshold",
        type=_non_negative_int,
        default=commands.core.DEFAULT_LOW_BALANCE_THRESHOLD,
        metavar="MICROS",
    )
    for name, text in (
        ("suspend", "refuse the account's requests"),
        ("activate", "accept the account's requests again"),
        ("show", "an account with its numbers, keys and balance"),
    ):
        command(accounts, name, text).add_argument("account_id", metavar="ID")
    command(accounts, "list", "every account")
    erase = command(
        accounts,
        "erase",
        "remove a suspended account's personal data everywhere "
        "and keep its ledger under a pseudonym",
    )
    erase.add_argument("account_id", metavar="ID")
    erase.add_argument("--yes", action="store_true", help="confirm: this cannot be undone")
    update = command(accounts, "update", "change an account's settings")
    update.add_argument("account_id", metavar="ID")
    update.add_argument(
        "--customer-service-window-check",
        choices=("on", "off"),
        help="refuse free-form messages to contacts who have not written in "
        "24 h (on, the default) or let Meta refuse them (off)",
    )
    update.add_argument(
        "--alert-emails",
        metavar="A@X,B@Y",
        help="where alerts go besides the account's email (comma-separated; empty clears them)",
    )
    update.add_argument(
        "--low-balance-threshold",
        type=_non_negative_int,
        metavar="MICROS",
        help="alert when the available credit falls below this",
    )
    _rate_limit_arguments(update, "the account's requests at ingest (every route)")
    update.add_argument(
        "--max-in-flight",
        metavar="N|default",
        help="most messages accepted and not yet delivered, failed or "
        "expired (0: no cap; default: BILLING_MAX_IN_FLIGHT)",
    )
    update.add_argument(
        "--opt-out-keywords",
        metavar="STOP,BAJA,...",
        help="a user's whole message equal to one of these suppresses them for "
        'marketing (comma-separated; `default` for the defaults, "" '
        "for none)",
    )
    update.add_argument(
        "--opt-in-keywords",
        metavar="START,...",
        help='undo a keyword opt-out (comma-separated; `default`, or "")',
    )
    update.add_argument(
        "--guard-rule",
        action="append",
        default=[],
        metavar="RULE.FIELD=N",
        help="override a fraud and spam rule for this account, e.g. "
        "failure_rate.threshold=0.8 or volume_spike.minimum=5000 "
        "(repeatable; RULE=default drops the rule's overrides)",
    )
    release = command(
        accounts,
        "release",
        "release an account held by the fraud and spam rules (guard applies it)",
    )
    release.add_argument("account_id", metavar="ID")
    release.add_argument("--reason", required=True, help="why it may send again (audited)")

    suppressions = groups.add_parser("suppressions", help="marketing opt-outs").add_subparsers(
        dest="command", required=True, metavar="COMMAND"
    )
    listed = command(suppressions, "list", "an account's suppressed contacts, latest first")
    listed.add_argument("--account", required=True, dest="account_id")
    listed.add_argument("--phone-number-id", default=None)
    listed.add_argument("--limit", type=_positive_int, default=50)
    for name, text in (
        ("add", "suppress a contact for marketing from one of the account's numbers"),
        ("remove", "resubscribe a contact (only one who asked for it)"),
    ):
        change = command(suppressions, name, text)
        change.add_argument("--account", required=True, dest="account_id")
        change.add_argument("--phone-number-id", required=True)
        change.add_argument("--recipient", required=True, help="international, e.g. +4479...")
        change.add_argument("--note", default="")

    blocks = groups.add_parser("blocks", help="numbers an account never sends to").add_subparsers(
        dest="command", required=True, metavar="COMMAND"
    )
    blocks_list = command(blocks, "list", "an account's blocked numbers, newest first")
    blocks_list.add_argument("--account", required=True, dest="account_id")
    blocks_list.add_argument("--limit", type=_positive_int, default=50)
    blocks_add = command(blocks, "add", "block a number (no message of any type goes to it)")
    blocks_add.add_argument("--account", required=True, dest="account_id")
    blocks_add.add_argument("--recipient", required=True)
    blocks_add.add_argument("--note", default="")
    blocks_remove = command(blocks, "remove", "unblock a number")
    blocks_remove.add_argument("--account", required=True, dest="account_id")
    blocks_remove.add_argument("--recipient", required=True)

    hooks = groups.add_parser("webhooks", help="a client's webhook endpoints").add_subparsers(
        dest="command", required=True, metavar="COMMAND"
    )

    def hook_command(name: str, help_text: str, *, with_id: bool = True) -> argparse.ArgumentParser:
        sub = command(hooks, name, help_text)
        if with_id:
            sub.add_argument("endpoint_id", metavar="ENDPOINT_ID")
        sub.add_argument(
            "--account", required=True, dest="account_id", help="the client account it belongs to"
        )
        return sub

    hook_command("list", "the account's endpoints with their health", with_id=False)
    hook_create = hook_command(
        "create", "register an endpoint (its secret is printed once)", with_id=False
    )
    hook_create.add_argument("--url", required=True)
    hook_create.add_argument(
        "--events",
        required=True,
        type=_comma_list,
        help="event types, <prefix>.* or *, comma-separated",
    )
    hook_create.add_argument("--format", choices=("standard", "meta"), default="standard")
    hook_create.add_argument("--description", default="")
    hook_command("show", "an endpoint with its health")
    hook_update = hook_command("update", "change an endpoint (only what is given)")
    hook_update.add_argument("--url")
    hook_update.add_argument("--events", type=_comma_list)
    hook_update.add_argument("--description")
    switch = hook_update.add_mutually_exclusive_group()
    switch.add_argument(
        "--enable",
        action="store_true",
        default=None,
        dest="enabled",
        help="deliver again (also after notify disabled it for failing)",
    )
    switch.add_argument("--disable", action="store_false", default=None, dest="enabled")
    hook_command("delete", "delete an endpoint (nothing more is delivered)")
    hook_command(
        "rotate", "give an endpoint a new secret (printed once); the old one signs for 24 h more"
    )
    hook_command("test", "send a test event (endpoint.test) now")
    hook_replay = hook_command("replay", "deliver past events again, with their ids")
    what = hook_replay.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--since",
        type=_iso_time,
        metavar="ISO_TIME",
        help="events from this time (a time without zone is UTC)",
    )
    what.add_argument("--event-id")
    hook_replay.add_argument(
        "--until", type=_iso_time, metavar="ISO_TIME", help="up to this time (default: now)"
    )
    hook_deliveries = hook_command("deliveries", "the latest delivery attempts, newest first")
    hook_deliveries.add_argument("--limit", type=_positive_int, default=50)

    wabas = groups.add_parser("wabas", help="WhatsApp Business Accounts").add_subparsers(
        dest="command", required=True, metavar="COMMAND"
    )
    waba = command(wabas, "register", "register a WABA to an account")
    waba.add_argument("--account", required=True, dest="account_id")
    waba.add_argument("--waba-id", required=True)
    waba.add_argument("--portfolio-id", required=True)
    waba.add_argument("--name", default="")
    command(wabas, "list", "an account's WABAs").add_argument(
        "--account", required=True, dest="account_id"
    )

    numbers = groups.add_parser("numbers", help="business phone numbers").add_subparsers(
        dest="command", required=True, metavar="COMMAND"
    )
    number = command(numbers, "register", "register a phone number (token stored encrypted)")
    number.add_argument("--account", required=True, dest="account_id")
    number.add_argument("--waba-id", required=True)
    number.add_argument("--phone-number-id", required=True)
    number.add_argument("--display-phone-number", required=True)
    token = number.add_mutually_exclusive_group(required=True)
    token.add_argument(
        "--access-token",
        type=_stdin_only,
        metavar="-",
        help="`-`: read the token from stdin (never from argv)",
    )
    token.add_argument("--access-token-file", metavar="PATH", help="read the token from this file")
    number.add_argument("--throughput-mps", type=_positive_int, default=80)
    number.add_argument(
        "--messaging-limit", default="TIER_UNLIMITED", choices=commands.core.MESSAGING_LIMITS
    )
    command(numbers, "list", "an account's numbers").add_argument(
        "--account", required=True, dest="account_id"
    )

    keys = groups.add_parser("keys", help="API keys").add_subparsers(
        dest="command", required=True, metavar="COMMAND"
    )
    issue = command(keys, "issue", "issue an API key (printed once)")
    issue.add_argument("--account", required=True, dest="account_id")
    issue.add_argument("--name", default="")
    _rate_limit_arguments(issue, "this key's requests, on top of its account's limit")
    key_update = command(keys, "update", "change an API key's own request rate limit")
    key_update.add_argument("key", metavar="KEY_ID_OR_PREFIX")
    _rate_limit_arguments(
        key_update, "this key's requests, on top of its account's limit", required=True
    )
    command(keys, "revoke", "revoke an API key").add_argument("key", metavar="KEY_ID_OR_PREFIX")
    command(keys, "list", "an account's API keys").add_argument(
        "--account", required=True, dest="account_id"
    )
    command(keys, "generate-encryption-key", "print a new Fernet key for HALA_TOKEN_KEYS")

    credits_ = groups.add_parser("credits", help="prepaid credit").add_subparsers(
        dest="command", required=True, metavar="COMMAND"
    )
    topup = command(credits_, "topup", "add credit (billing applies it)")
    topup.add_argument("--account", required=True, dest="account_id")
    topup.add_argument("--amount", required=True, type=_positive_int, metavar="MICROS")
    topup.add_argument("--note", default="")

    balance = groups.add_parser("balance", help="balances").add_subparsers(
        dest="command", required=True, metavar="COMMAND"
    )
    command(balance, "show", "an account's balance").add_argument(
        "--account", required=True, dest="account_id"
    )

    ledger = groups.add_parser("ledger", help="credit movements").add_subparsers(
        dest="command", required=True, metavar="COMMAND"
    )
    ledger_show = command(ledger, "show", "an account's latest ledger entries")
    ledger_show.add_argument("--account", required=True, dest="account_id")
    ledger_show.add_argument("--limit", type=_positive_int, default=50)

    templates = groups.add_parser("templates", help="message templates").add_subparsers(
        dest="command", required=True, metavar="COMMAND"
    )
    sync = command(templates, "sync", "copy a WABA's templates from Meta")
    sync.add_argument("--waba-id", required=True)
    sync.add_argument("--graph-url", default=None, help="default http://127.0.0.1:8090")
    sync.add_argument("--graph-version", default=None, help="default v24.0")
    command(templates, "list", "a WABA's synced templates").add_argument("--waba-id", required=True)

    tokens = groups.add_parser("tokens", help="access token encryption").add_subparsers(
        dest="command", required=True, metavar="COMMAND"
    )
    command(tokens, "rotate", "re-encrypt every access token under the newest key")

    dlq = groups.add_parser("dlq", help="dead letters").add_subparsers(
        dest="command", required=True, metavar="COMMAND"
    )
    command(dlq, "list", "every dead-letter topic and how many records it holds")
    show = command(dlq, "show", "dead letters with why they failed and their decoded value")
    show.add_argument(
        "topic",
        metavar="TOPIC",
        help="the .dlq topic, or its source topic (the prefix may be left out)",
    )
    show.add_argument("--limit", type=_positive_int, default=20)
    show.add_argument(
        "--offset",
        type=_non_negative_int,
        default=None,
        help="from this offset on (default: the oldest kept)",
    )
    show.add_argument("--partition", type=_non_negative_int, default=None)
    show.add_argument(
        "--traceback-lines",
        type=_non_negative_int,
        default=commands.core.TRACEBACK_LINES,
        metavar="N",
        help="the traceback's last N lines (--json prints all of it)",
    )
    replay = command(dlq, "replay", "write dead letters back to their source topic, once each")
    replay.add_argument("topic", metavar="TOPIC")
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("--offset", type=_non_negative_int, default=None)
    which.add_argument("--all", action="store_true", dest="replay_all")
    replay.add_argument("--partition", type=_non_negative_int, default=None)
    replay.add_argument(
        "--dry-run", action="store_true", help="say what would be replayed, write nothing"
    )

    audit_log = groups.add_parser(
        "audit", parents=[json_flag], help="what operators did: the audit log, newest first"
    )
    audit_log.set_defaults(command="list")
    audit_log.add_argument(
        "--account",
        dest="account_id",
        default=None,
        help="only entries whose target is this account",
    )
    audit_log.add_argument(
        "--since",
        default=None,
        metavar="WHEN",
        help="ISO date or date-time (UTC), or a span back: 90m, 24h, 7d",
    )
    audit_log.add_argument("--limit", type=_positive_int, default=50)
    return parser


class Context:
    """What a command may need, opened lazily and closed at the end."""

    def __init__(self, settings: AdminSettings, operator: audit_core.Operator) -> None:
        self.settings = settings
        self.operator = operator
        self.mongo = make_client(
            settings.mongodb_url,
            timeout_ms=settings.mongodb_timeout_ms,
            **settings.mongo_credentials(),
        )
        self.db = self.mongo[settings.mongodb_database]
        self._producer: Any = None

    def vault(self) -> TokenVault:
        if self.settings.token_keys is None:
            raise ServiceError(
                "set HALA_TOKEN_KEYS (generate one with `hala keys generate-encryption-key`)",
                code="no_token_keys",
            )
        return TokenVault(self.settings.token_keys)

    def kafka(self) -> KafkaConfig:
        problems = ServiceSettings.startup_problems(self.settings)
        if problems:
            raise ServiceError("; ".join(problems), code="no_kafka_credentials")
        return self.settings.kafka

    async def producer(self) -> Any:
        if self._producer is None:
            self._producer = make_producer(self.kafka())
            await self._producer.start()
        return self._producer

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
        await self.mongo.close()


def current_operator(settings: AdminSettings) -> audit_core.Operator:
    try:
        os_user = getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        os_user = "unknown"
    return audit_core.operator(
        configured=settings.operator,
        os_user=os_user,
        host=socket.gethostname(),
        ssh_connection=settings.ssh_connection,
    )


async def run(
    args: argparse.Namespace, settings: AdminSettings, operator: audit_core.Operator | None = None
) -> Any:
    """Execute a parsed command; returns what to print."""
    if (args.group, args.command) == ("keys", "generate-encryption-key"):
        return {"key": commands.generate_encryption_key()}
    ctx = Context(settings, operator or current_operator(settings))
    try:
        if not audit_core.is_audited(args.group, args.command, vars(args)):
            return await _dispatch(args, ctx)
        return await _audited(args, ctx)
    finally:
        await ctx.close()


async def _audited(args: argparse.Namespace, ctx: Context) -> Any:
    """Run a command that changes something and append its audit entry, success or not."""
    arguments = vars(args)

    async def append(result: Any, error: BaseException | None) -> None:
        now_ms = SystemClock().now_ms()
        await audit.append(
            ctx.db,
            audit_core.entry(
                entry_id=new_id(audit_core.AUDIT_ID_PREFIX, now_ms),
                operator=ctx.operator,
                group=args.group,
                command=args.command,
                arguments=arguments,
                result=result,
                error=error,
                now_ms=now_ms,
            ),
        )

    try:
        result = await _dispatch(args, ctx)
    except Exception as exc:
        try:
            await append(None, exc)
        except PyMongoError as audit_error:
            print(
                f"warning: the failed attempt could not be audited ({type(audit_error).__name__})",
                file=sys.stderr,
            )
        raise
    try:
        await append(result, None)
    except PyMongoError as exc:
        raise ServiceError(
            "the command was carried out, but its audit entry could not be "
            f"written ({type(exc).__name__}); it is not reported as done",
            code="audit_write_failed",
        ) from exc
    return result


async def _dispatch(args: argparse.Namespace, ctx: Context) -> Any:
    db, action = ctx.db, (args.group, args.command)
    await commands.prepare(db)
    if action == ("accounts", "create"):
        return await commands.create_account(
            db,
            name=args.name,
            email=args.email,
            phone=args.phone,
            business_name=args.business_name,
            fb_business_manager_id=args.fb_business_manager_id,
            low_balance_threshold=args.low_balance_threshold,
        )
    if action == ("accounts", "suspend"):
        return await commands.set_account_status(db, args.account_id, "suspended")
    if action == ("accounts", "activate"):
        return await commands.set_account_status(db, args.account_id, "active")
    if action == ("accounts", "list"):
        return await commands.list_accounts(db)
    if action == ("accounts", "update"):
        return await _update_account(args, ctx)
    if action == ("accounts", "show"):
        return {
            **await commands.show_account(db, args.account_id),
            "hold": await trust.show_hold(db, args.account_id),
            "opt_out_keywords": await trust.show_keywords(db, args.account_id),
        }
    if action == ("accounts", "release"):
        return await trust.release(
            db,
            await ctx.producer(),
            account_id=args.account_id,
            reason=args.reason,
            operator=ctx.operator.label,
            topic_prefix=ctx.settings.topic_prefix,
        )
    if args.group in ("suppressions", "blocks"):
        return await _contact_lists(args, ctx)
    if action == ("accounts", "erase"):
        if not args.yes:
            raise ServiceError("erasing cannot be undone: add --yes", code="confirmation_required")
        return await commands.erase_account(
            db, args.account_id, pseudonym_key=ctx.settings.erasure_key()
        )
    if action == ("wabas", "register"):
        return await commands.register_waba(
            db,
            account_id=args.account_id,
            waba_id=args.waba_id,
            portfolio_id=args.portfolio_id,
            name=args.name,
        )
    if action == ("wabas", "list"):
        return await commands.list_wabas(db, args.account_id)
    if action == ("numbers", "register"):
        return await commands.register_number(
            db,
            ctx.vault(),
            account_id=args.account_id,
            waba_id=args.waba_id,
            phone_number_id=args.phone_number_id,
            display_phone_number=args.display_phone_number,
            access_token=read_access_token(args),
            throughput_mps=args.throughput_mps,
            messaging_limit=args.messaging_limit,
        )
    if action == ("numbers", "list"):
        return await commands.list_numbers(db, args.account_id)
    if action == ("keys", "issue"):
        rate_limit = _rate_limit_of(args)
        if rate_limit == commands.core.DEFAULT:
            rate_limit = None  # a new key has no override to remove
        api_key, record = await commands.issue_key(
            db, account_id=args.account_id, name=args.name, rate_limit=rate_limit
        )  # type: ignore[arg-type]
        return {"api_key": api_key, **record, "note": "store this key now: it is not shown again"}
    if action == ("keys", "revoke"):
        return await commands.revoke_key(db, args.key)
    if action == ("keys", "update"):
        rate_limit = _rate_limit_of(args)
        assert rate_limit is not None  # --rate-limit is required
        return await commands.update_key(db, args.key, rate_limit=rate_limit)
    if action == ("keys", "list"):
        return await commands.list_keys(db, args.account_id)
    if action == ("credits", "topup"):
        key = ctx.settings.topup_key()
        event = await commands.top_up(
            db,
            await ctx.producer(),
            account_id=args.account_id,
            amount=args.amount,
            note=args.note,
            signing_key=key,
            operator=ctx.operator.label,
            topic_prefix=ctx.settings.topic_prefix,
        )
        return {
            "event_id": event.event_id,
            "account_id": event.account_id,
            "amount": event.amount,
            "unit": "micros",
            "operator": event.operator,
            "note": "billing applies it shortly; see `hala balance show`",
        }
    if action == ("balance", "show"):
        return await commands.show_balance(db, args.account_id)
    if action == ("ledger", "show"):
        return await commands.show_ledger(db, args.account_id, args.limit)
    if action == ("templates", "sync"):
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            graph = GraphClient(
                session,
                args.graph_url or ctx.settings.graph_url,
                args.graph_version or ctx.settings.graph_version,
            )
            return await commands.sync_templates(db, ctx.vault(), graph, waba_id=args.waba_id)
    if action == ("templates", "list"):
        return [
            {
                k: t.get(k)
                for k in (
                    "name",
                    "language",
                    "category",
                    "status",
                    "parameter_format",
                    "body_params",
                )
            }
            for t in await commands.list_templates(db, args.waba_id)
        ]
    if action == ("tokens", "rotate"):
        return await commands.rotate_tokens(db, ctx.vault())
    if args.group == "dlq":
        return await _dlq(args, ctx)
    if args.group == "webhooks":
        return await _webhooks(args, ctx)
    if action == ("audit", "list"):
        since = (
            None if args.since is None else audit_core.since_ms(args.since, SystemClock().now_ms())
        )
        return [
            audit_core.view(doc)
            for doc in await audit.entries(
                db, account_id=args.account_id, since_ms=since, limit=args.limit
            )
        ]
    raise AssertionError(f"unhandled command {action}")


async def _update_account(args: argparse.Namespace, ctx: Context) -> Any:
    """Settings on the account document, and the keyword lists in their own collection."""
    db, account_id = ctx.db, args.account_id
    check, emails = args.customer_service_window_check, args.alert_emails
    keywords = args.opt_out_keywords is not None or args.opt_in_keywords is not None
    rate_limit = _rate_limit_of(args)
    max_in_flight = (
        None if args.max_in_flight is None else commands.core.max_in_flight(args.max_in_flight)
    )
    on_account = (
        check is not None
        or emails is not None
        or args.low_balance_threshold is not None
        or bool(args.guard_rule)
        or rate_limit is not None
        or max_in_flight is not None
    )
    guard_rules = None
    if args.guard_rule:
        account = await commands.get_account(db, account_id)
        guard_rules = trust.guard_rule_overrides(account.get("guard_rules"), args.guard_rule)
    result: dict[str, Any] = {}
    if keywords:
        result["opt_out_keywords"] = await trust.set_keywords(
            db, account_id, opt_out_text=args.opt_out_keywords, opt_in_text=args.opt_in_keywords
        )
    if on_account or not keywords:  # nothing given at all: update_account says what to give
        result = {
            **await commands.update_account(
                db,
                account_id,
                customer_service_window_check=None
                if check is None
                else commands.core.on_off(check),
                alert_emails=None if emails is None else commands.core.alert_emails(emails),
                low_balance_threshold=args.low_balance_threshold,
                guard_rules=guard_rules,
                rate_limit=rate_limit,
                max_in_flight=max_in_flight,
            ),
            **result,
        }
    return result


async def _contact_lists(args: argparse.Namespace, ctx: Context) -> Any:
    db, account = ctx.db, args.account_id
    if (args.group, args.command) == ("suppressions", "list"):
        return await trust.list_suppressions(
            db, account, phone_number_id=args.phone_number_id, limit=args.limit
        )
    if args.group == "suppressions":
        return await trust.change_suppression(
            db,
            await ctx.producer(),
            account_id=account,
            phone_number_id=args.phone_number_id,
            recipient_text=args.recipient,
            suppressed=args.command == "add",
            note=args.note,
            operator=ctx.operator.label,
            topic_prefix=ctx.settings.topic_prefix,
        )
    if args.command == "list":
        return await trust.list_blocks(db, account, limit=args.limit)
    if args.command == "add":
        return await trust.block(
            db, account_id=account, recipient_text=args.recipient, note=args.note
        )
    if args.command == "remove":
        return await trust.unblock(db, account_id=account, recipient_text=args.recipient)
    raise AssertionError(f"unhandled command {args.group} {args.command}")


async def _webhooks(args: argparse.Namespace, ctx: Context) -> Any:
    db, account, settings = ctx.db, args.account_id, ctx.settings
    loopback = settings.allow_loopback_http
    if args.command == "list":
        return await webhooks.list_endpoints(db, account)
    if args.command == "create":
        return await webhooks.create_endpoint(
            db,
            ctx.vault(),
            account_id=account,
            url=args.url,
            events=args.events,
            format=args.format,
            description=args.description,
            allow_loopback_http=loopback,
        )
    endpoint_id = args.endpoint_id
    if args.command == "show":
        return await webhooks.show_endpoint(db, account, endpoint_id)
    if args.command == "update":
        given = {
            name: getattr(args, name)
            for name in ("url", "events", "enabled", "description")
            if getattr(args, name) is not None
        }
        return await webhooks.update_endpoint(
            db, account, endpoint_id, given, allow_loopback_http=loopback
        )
    if args.command == "delete":
        return await webhooks.delete_endpoint(db, account, endpoint_id)
    if args.command == "rotate":
        return await webhooks.rotate_secret(db, ctx.vault(), account, endpoint_id)
    if args.command == "deliveries":
        return await webhooks.list_deliveries(db, account, endpoint_id, args.limit)
    if args.command == "test":
        return await webhooks.send_test(
            db, await ctx.producer(), account, endpoint_id, topic_prefix=settings.topic_prefix
        )
    if args.command == "replay":
        return await webhooks.replay(
            db,
            await ctx.producer(),
            account,
            endpoint_id,
            since=args.since,
            until=args.until,
            event_id=args.event_id,
            topic_prefix=settings.topic_prefix,
        )
    raise AssertionError(f"unhandled command webhooks {args.command}")


async def _dlq(args: argparse.Namespace, ctx: Context) -> Any:
    kafka, prefix = ctx.kafka(), ctx.settings.topic_prefix
    if args.command == "list":
        return await commands.list_dead_letters(ctx.db, kafka, prefix)
    if args.command == "show":
        return await commands.show_dead_letters(
            ctx.db,
            kafka,
            prefix,
            args.topic,
            offset=args.offset,
            limit=args.limit,
            partition=args.partition,
            traceback_lines=None if args.json else args.traceback_lines,
        )
    if args.command == "replay":
        return await commands.replay_dead_letters(
            ctx.db,
            await ctx.producer(),
            kafka,
            prefix,
            args.topic,
            offset=args.offset,
            replay_all=args.replay_all,
            partition=args.partition,
            dry_run=args.dry_run,
        )
    raise AssertionError(f"unhandled command dlq {args.command}")


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError


def render(result: Any, as_json: bool) -> str:
    if as_json:
        return orjson.dumps(result, default=_default, option=orjson.OPT_INDENT_2).decode()
    return _human(result)


def _human(result: Any, indent: str = "") -> str:
    if isinstance(result, list):
        if not result:
            return f"{indent}(none)"
        return "\n".join(
            _human(item, indent) + ("\n" if isinstance(item, dict) else "") for item in result
        ).rstrip()
    if isinstance(result, dict):
        lines = []
        for key, value in result.items():
            if isinstance(value, dict | list) and value:
                lines.append(f"{indent}{key}:")
                lines.append(_human(value, indent + "  "))
            else:
                shown = value.isoformat() if isinstance(value, datetime) else value
                lines.append(f"{indent}{key}: {shown}")
        return "\n".join(lines)
    return f"{indent}{result}"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = asyncio.run(run(args, load_settings(AdminSettings)))
    except ServiceError as exc:
        print(f"error: {exc.message} ({exc.code})", file=sys.stderr)
        return 1
    except PyMongoError as exc:
        print(f"error: database unavailable ({type(exc).__name__})", file=sys.stderr)
        return 2
    except KafkaError as exc:
        print(f"error: broker unavailable ({type(exc).__name__})", file=sys.stderr)
        return 2
    if not args.json and (args.group, args.command) in (
        ("accounts", "create"),
        ("keys", "generate-encryption-key"),
    ):
        # Scripts capture these: `export HALA_TOKEN_KEYS=$(hala keys generate-encryption-key)`.
        print(result["_id"] if args.group == "accounts" else result["key"])
    else:
        print(render(result, args.json))
    return 0


if __name__ == "__main__":
    sys.exit(main())
