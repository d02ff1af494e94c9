"""Set up Kafka for the platform, as the set-up principal (a super user): every service's SCRAM
user, the topics of a topic prefix, and the ACLs that let each service use only its own topics
and groups (the table is shared/kafka_access.py, derived from the topic registry).

    python -m tools.kafka_setup users --secrets-dir DIR      # a user per service principal
    python -m tools.kafka_setup grant [--prefix P]           # topics + ACLs of a prefix
    python -m tools.kafka_setup revoke --prefix P            # ACLs + topics of a prefix
    python -m tools.kafka_setup scram-args --secrets-dir DIR USER...
    python -m tools.kafka_setup passwords --secrets-dir DIR USER...

It connects with the usual KAFKA_* settings (KAFKA_SASL_USERNAME=hala-setup and its password).
A service added after the broker was set up gets its user from the next `users`, or, on a
broker that keeps running (the tests' shared one), from `ensure_missing_users`, which the tests'
`broker` fixture runs at the start of each session.
`users` reads each principal's password from DIR/<user>.password, generating the file (0600)
when missing, and (re)sets the user's credential on the broker: the file is the truth.
`scram-args` prints `--add-scram` arguments (salted, so no password reaches argv) for
`StorageTool format`, which is the only way to create the users the broker itself needs before
its first start; `passwords` only makes sure the files exist (the broker's controller password,
which lives in its configuration, not in a SCRAM user). deploy/local/infra.sh runs `users`
and `grant` at every `up`; docker-compose's `kafka-setup` runs them once; the tests and the
benchmarks `grant` (and `revoke`) their own prefixes through the functions below.

confluent-kafka's AdminClient does what aiokafka's cannot (ACLs, SCRAM users); its calls block,
so they run in a thread.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import os
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)
from pydantic import SecretStr

from shared.kafka import KafkaConfig, delete_topics, ensure_topics
from shared.kafka_access import SERVICES, SETUP_PRINCIPAL, Grant, grants, principal
from shared.messages import ALL_TOPICS, Topic
from shared.settings import ServiceSettings, load_settings

SCRAM_ITERATIONS = 8192  # Kafka's minimum is 4096
BROKER_USERS = ("kafka-broker", "kafka-controller", SETUP_PRINCIPAL)
SERVICE_USERS = tuple(principal(s) for s in SERVICES)
TIMEOUT_S = 30.0
DELETE_BATCH = 500  # ACL filters per DeleteAcls request

_RESOURCE = {"topic": ResourceType.TOPIC, "group": ResourceType.GROUP}
_PATTERN = {"literal": ResourcePatternType.LITERAL, "prefixed": ResourcePatternType.PREFIXED}
_OPERATION = {"read": AclOperation.READ, "write": AclOperation.WRITE}


# --- passwords --------------------------------------------------------------------------------


def password_file(secrets_dir: Path, user: str) -> Path:
    return secrets_dir / f"{user}.password"


def password(secrets_dir: Path, user: str) -> SecretStr:
    """The user's password from its file, which is created (0600, 43 URL-safe characters: no
    `,` or `"`, which Kafka's JAAS and SCRAM parsers would split on) when missing."""
    path = password_file(secrets_dir, user)
    try:
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        value = ""
    if not value:
        secrets_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        value = secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(value + "\n")
    return SecretStr(value)


def _new_password_file(secrets_dir: Path, user: str) -> bool:
    """Create the user's password file if it does not exist, atomically (two processes that
    both find it missing end with the same password); True when this call created it."""
    secrets_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = password_file(secrets_dir, user)
    partial = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secrets.token_urlsafe(32) + "\n")
    try:
        os.link(partial, path)  # fails if another process made it first: theirs stands
        return True
    except FileExistsError:
        return False
    finally:
        partial.unlink()


def existing_password(secrets_dir: Path, user: str) -> SecretStr:
    """The user's password from its file, which must exist (a client's view: only the set-up
    makes passwords)."""
    path = password_file(secrets_dir, user)
    try:
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        value = ""
    if not value:
        raise RuntimeError(
            f"no password for {user} in {path}: the set-up makes it "
            "(deploy/local/infra.sh up, tools/kafka_setup.py users)"
        )
    return SecretStr(value)


def scram_args(secrets_dir: Path, users: Iterable[str]) -> list[str]:
    """`--add-scram` arguments for StorageTool format with a salted password (RFC 5802's
    SaltedPassword is PBKDF2-HMAC with the mechanism's hash), so no password is in argv."""
    args = []
    for user in users:
        salt = secrets.token_bytes(32)
        salted = hashlib.pbkdf2_hmac(
            "sha512",
            password(secrets_dir, user).get_secret_value().encode(),
            salt,
            SCRAM_ITERATIONS,
        )
        args += [
            "--add-scram",
            f"SCRAM-SHA-512=[name={user},iterations={SCRAM_ITERATIONS},"
            f'salt="{base64.b64encode(salt).decode()}",'
            f'saltedpassword="{base64.b64encode(salted).decode()}"]',
        ]
    return args


# --- the admin client -------------------------------------------------------------------------


def _admin(kafka: KafkaConfig) -> AdminClient:
    # log_level 4: librdkafka's info lines (a purged queue at every close) are noise here.
    return AdminClient({**kafka.rdkafka_options(), "socket.timeout.ms": 10000, "log_level": 4})


def _wait_all(futures: Iterable[Future[Any]]) -> None:
    for future in futures:
        future.result(timeout=TIMEOUT_S)


def _binding(grant: Grant) -> AclBinding:
    return AclBinding(
        _RESOURCE[grant.resource],
        grant.name,
        _PATTERN[grant.pattern],
        f"User:{grant.principal}",
        "*",
        _OPERATION[grant.operation],
        AclPermissionType.ALLOW,
    )


def _ensure_users(kafka: KafkaConfig, passwords: dict[str, SecretStr]) -> None:
    admin = _admin(kafka)
    upserts = [
        UserScramCredentialUpsertion(
            user,
            ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS),
            secret.get_secret_value().encode(),
        )
        for user, secret in passwords.items()
    ]
    _wait_all(admin.alter_user_scram_credentials(upserts).values())


def _create_acls(kafka: KafkaConfig, wanted: Sequence[Grant]) -> None:
    """Create the ACLs and return once the broker enforces them: the controller acknowledges
    an ACL before the broker's authorizer has applied it, and a client that asks for metadata
    in between is refused the topic (and aiokafka remembers the refusal)."""
    if not wanted:
        return
    admin = _admin(kafka)  # kept until the futures are done: its end cancels them
    bindings = [_binding(g) for g in wanted]
    _wait_all(admin.create_acls(bindings).values())
    everything = AclBindingFilter(
        ResourceType.ANY,
        None,
        ResourcePatternType.ANY,
        None,
        None,
        AclOperation.ANY,
        AclPermissionType.ANY,
    )
    missing = {_key(b) for b in bindings}
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        missing -= {_key(b) for b in admin.describe_acls(everything).result(timeout=TIMEOUT_S)}
        if not missing:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{len(missing)} ACLs created but not in force after {TIMEOUT_S:.0f} s"
            )
        time.sleep(0.05)


def _key(binding: AclBinding) -> tuple[Any, ...]:
    return (
        binding.restype,
        binding.name,
        binding.resource_pattern_type,
        binding.principal,
        binding.operation,
        binding.permission_type,
    )


def _delete_acls(kafka: KafkaConfig, matches: Callable[[str], bool]) -> int:
    """Delete the ACLs (of any principal) whose resource name `matches`; returns how many."""
    admin = _admin(kafka)
    everything = AclBindingFilter(
        ResourceType.ANY,
        None,
        ResourcePatternType.ANY,
        None,
        None,
        AclOperation.ANY,
        AclPermissionType.ANY,
    )
    found = admin.describe_acls(everything).result(timeout=TIMEOUT_S)
    doomed = [b for b in found if matches(b.name)]
    filters = [
        AclBindingFilter(
            b.restype,
            b.name,
            b.resource_pattern_type,
            b.principal,
            b.host,
            b.operation,
            b.permission_type,
        )
        for b in doomed
    ]
    # In pieces: a test session leaves ~100 ACLs per test prefix, and one request deleting
    # ten thousand of them outlasted the request timeout (seen here).
    for start in range(0, len(filters), DELETE_BATCH):
        _wait_all(admin.delete_acls(filters[start : start + DELETE_BATCH]).values())
    return len(doomed)


async def ensure_users(
    kafka: KafkaConfig, secrets_dir: Path, users: Iterable[str] = SERVICE_USERS
) -> None:
    """Every service principal as a SCRAM-SHA-512 user, with the password of its file."""
    passwords = {user: password(secrets_dir, user) for user in users}
    await asyncio.to_thread(_ensure_users, kafka, passwords)


def _users_on_broker(kafka: KafkaConfig) -> set[str]:
    admin = _admin(kafka)
    return set(admin.describe_user_scram_credentials().result(timeout=TIMEOUT_S))


async def ensure_missing_users(
    kafka: KafkaConfig, secrets_dir: Path, users: Iterable[str] = SERVICE_USERS
) -> list[str]:
    """The service principals the broker has no SCRAM user for (a service added since the
    broker was set up) get one, with the password of their file, made first if missing (never
    replaced); users that exist are left alone, so their clients stay connected. For a running
    broker shared by test sessions: no restart needed. Returns the users created."""
    missing = sorted(set(users) - await asyncio.to_thread(_users_on_broker, kafka))
    if missing:
        for user in missing:
            if not password_file(secrets_dir, user).exists():
                _new_password_file(secrets_dir, user)
        passwords = {user: existing_password(secrets_dir, user) for user in missing}
        await asyncio.to_thread(_ensure_users, kafka, passwords)
    return missing


async def grant(
    kafka: KafkaConfig, prefix: str = "", topics: Iterable[Topic[Any]] = ALL_TOPICS
) -> None:
    """The topics of `prefix` (all, or those given) and every service's ACLs on them
    (idempotent)."""
    topics = tuple(topics)
    await ensure_topics(kafka, prefix, topics)
    await asyncio.to_thread(_create_acls, kafka, grants(prefix, topics))


async def revoke(kafka: KafkaConfig, matches: Callable[[str], bool]) -> None:
    """Delete the ACLs and topics whose names `matches` (a finished test's or benchmark's)."""
    await asyncio.to_thread(_delete_acls, kafka, matches)
    await delete_topics(kafka, matches)


def credentials(kafka: KafkaConfig, secrets_dir: Path, service: str) -> KafkaConfig:
    """The same broker, as `service`'s principal."""
    user = principal(service)
    return kafka.as_user(user, existing_password(secrets_dir, user))


# --- command line -----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tools.kafka_setup",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    users = commands.add_parser("users", help="a SCRAM user per service principal")
    users.add_argument("--secrets-dir", type=Path, required=True)
    grant_cmd = commands.add_parser("grant", help="topics and ACLs of a topic prefix")
    grant_cmd.add_argument("--prefix", default="")
    revoke_cmd = commands.add_parser("revoke", help="ACLs and topics of a topic prefix")
    revoke_cmd.add_argument("--prefix", required=True)
    scram = commands.add_parser("scram-args", help="--add-scram arguments for StorageTool")
    scram.add_argument("--secrets-dir", type=Path, required=True)
    scram.add_argument("users", nargs="+", metavar="USER")
    files = commands.add_parser("passwords", help="create missing password files")
    files.add_argument("--secrets-dir", type=Path, required=True)
    files.add_argument("users", nargs="+", metavar="USER")
    args = parser.parse_args(argv)

    if args.command == "scram-args":
        print("\n".join(scram_args(args.secrets_dir, args.users)))
        return
    if args.command == "passwords":
        for user in args.users:
            password(args.secrets_dir, user)
        return
    kafka = load_settings(ServiceSettings).kafka
    try:
        if args.command == "users":
            asyncio.run(ensure_users(kafka, args.secrets_dir))
            print(f"users: {', '.join(SERVICE_USERS)}")
        elif args.command == "grant":
            asyncio.run(grant(kafka, args.prefix))
            print(f"topics and ACLs of prefix {args.prefix!r}: {len(grants(args.prefix))} ACLs")
        else:
            prefix = args.prefix
            if not prefix:
                raise SystemExit("revoke needs a non-empty --prefix")
            asyncio.run(revoke(kafka, lambda name: name.startswith(prefix)))
    except KafkaException as exc:
        raise SystemExit(f"kafka set-up failed: {exc}") from None


if __name__ == "__main__":
    main()
