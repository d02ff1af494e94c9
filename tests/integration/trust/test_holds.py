"""A planted burst of failures on the real broker holds the account: guard reads the statuses,
writes the hold and publishes it; ingest answers 403 account_held; `hala accounts release`
(audited) publishes the release, guard applies it, and ingest accepts the account's sends
again (202). Another account is never held."""

from __future__ import annotations

import time

from shared import holds
from shared.collections import ACCOUNT_HOLDS, AUDIT_LOG
from shared.messages import ACCOUNT_HOLD_CHANGED, STATUS_CHANGED, MetaError, StatusChanged
from tests.integration.ingest.kafka_probe import read_published
from tests.integration.trust.conftest import Trust, text


def outcome(account_id: str, i: int, failed: bool) -> StatusChanged:
    return StatusChanged(
        event_id=f"wamid.B{i}:{'failed' if failed else 'delivered'}",
        message_id=f"msg_b{i}",
        account_id=account_id,
        status="failed" if failed else "delivered",
        occurred_at=int(time.time() * 1000),
        source="webhook",
        error=MetaError(code=131026, title="Message undeliverable") if failed else None,
    )


async def test_a_burst_of_failures_holds_the_account_until_an_operator_releases_it(
    trust: Trust,
) -> None:
    account, other = trust.platform.a.account_id, trust.platform.b.account_id
    assert (await trust.send(text()))[0] == 202
    await trust.publish(
        STATUS_CHANGED, *(outcome(account, i, failed=i % 4 != 0) for i in range(16))
    )
    await trust.publish(STATUS_CHANGED, *(outcome(other, 100 + i, failed=False) for i in range(16)))
    refused = await trust.until_send(text(), 403, "the hold")
    assert refused["error"]["code"] == "account_held"
    [rule] = refused["error"]["details"]["rules"]
    assert rule["rule"] == "failure_rate" and "75% of the 16 messages" in rule["reason"]
    [event] = [
        ACCOUNT_HOLD_CHANGED.decode(r.value)
        for r in await read_published(
            trust.platform.kafka, ACCOUNT_HOLD_CHANGED, trust.platform.prefix
        )
    ]
    assert (event.account_id, event.held, event.rule) == (account, True, "failure_rate")
    assert not holds.is_held(await trust.db[ACCOUNT_HOLDS].find_one({"_id": other}))

    shown = await trust.hala("accounts", "show", account)
    assert shown["hold"]["held"] is True
    released = await trust.hala(
        "accounts", "release", account, "--reason", "list checked with the customer"
    )
    assert released["released_rules"] == ["failure_rate"]
    await trust.until_send(text(), 202, "the release to apply")
    [entry] = await trust.db[AUDIT_LOG].find({"command": "accounts release"}).to_list(None)
    assert (entry["outcome"], entry["target"]["account_id"], entry["arguments"]["reason"]) == (
        "ok",
        account,
        "list checked with the customer",
    )

    async def release_published() -> list[object]:
        events = [
            ACCOUNT_HOLD_CHANGED.decode(r.value)
            for r in await read_published(
                trust.platform.kafka, ACCOUNT_HOLD_CHANGED, trust.platform.prefix
            )
        ]
        return [e for e in events if e.change == "released"]

    [release] = await trust.until(release_published, "the release event")
    assert (release.held, release.operator) == (False, "ana@ops-1")
