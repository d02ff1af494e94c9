"""A service added after the shared broker was set up (guard's `hala-guard`, which the broker
of a running `infra.sh up` did not know) gets its SCRAM user without a restart: the tests'
`broker` fixture runs tools/kafka_setup.ensure_missing_users at the start of each session.
Here, with a user of this test's own (deleted at the end): it can't connect before, it can
after, and a second run changes nothing (its password file is never replaced)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiokafka.errors import KafkaConnectionError, KafkaError
from confluent_kafka import KafkaError as KafkaError_
from confluent_kafka import KafkaException
from confluent_kafka.admin import ScramMechanism, UserScramCredentialDeletion

from shared.kafka import KafkaConfig, make_admin
from tests.conftest import Broker
from tools.kafka_setup import (
    TIMEOUT_S,
    _admin,
    _users_on_broker,
    ensure_missing_users,
    existing_password,
    password_file,
)


async def _connects(kafka: KafkaConfig) -> bool:
    admin = make_admin(kafka)
    try:
        await asyncio.wait_for(admin.start(), 30)
        await asyncio.wait_for(admin.list_topics(), 30)
        return True
    except (KafkaConnectionError, KafkaError, TimeoutError, OSError):
        return False
    finally:
        await admin.close()


def _delete_user(kafka: KafkaConfig, user: str) -> None:
    admin = _admin(kafka)  # kept until the futures are done: its end cancels them
    futures = admin.alter_user_scram_credentials(
        [UserScramCredentialDeletion(user, ScramMechanism.SCRAM_SHA_512)]
    )
    for future in futures.values():
        try:
            future.result(timeout=TIMEOUT_S)
        except KafkaException as exc:  # not made (the test failed before): nothing to delete
            if exc.args[0].code() != KafkaError_.RESOURCE_NOT_FOUND:
                raise


async def test_a_principal_unknown_to_the_running_broker_gets_its_user_once(
    broker: Broker, unique: str, tmp_path: Path
) -> None:
    user = f"hala-it-{unique}"
    secrets_dir = tmp_path / "secrets"
    assert not await _connects(broker.setup.as_user(user, "a-password-before-the-user-01"))
    try:
        assert await ensure_missing_users(broker.setup, secrets_dir, [user]) == [user]
        first = existing_password(secrets_dir, user)
        assert password_file(secrets_dir, user).stat().st_mode & 0o077 == 0
        assert user in await asyncio.to_thread(_users_on_broker, broker.setup)
        assert await _connects(broker.setup.as_user(user, first))

        # Known now: nothing is created or replaced, so connected clients stay connected.
        assert await ensure_missing_users(broker.setup, secrets_dir, [user]) == []
        assert existing_password(secrets_dir, user) == first
        assert not await _connects(broker.setup.as_user(user, "not-the-password-of-it-0123"))
    finally:
        await asyncio.to_thread(_delete_user, broker.setup, user)
    assert user not in await asyncio.to_thread(_users_on_broker, broker.setup)


async def test_every_service_principal_of_the_registry_has_its_user(broker: Broker) -> None:
    """What the fixture did for this session: guard among them."""
    on_broker = await asyncio.to_thread(_users_on_broker, broker.setup)
    assert "hala-guard" in on_broker
    assert await _connects(broker.as_service("guard"))
