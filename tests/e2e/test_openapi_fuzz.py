"""schemathesis over ingest's own OpenAPI document (`/openapi.json`, generated from the msgspec
declarations), against ingest running as a process: its own Kafka principal on the real broker,
the real database, an account seeded by the admin commands (numbers, synced templates, an API key,
credit applied by billing) and the Meta simulator behind its pass-through calls.

Every operation of the document is exercised with the account's API key, bounded: the
documented examples, at most `MAX_EXAMPLES` generated cases per operation (valid ones and ones
that break the schema) and schemathesis's coverage cases (boundaries of every field) for all but
the two send operations; about a minute on the shared 2-core machine.

Checks (every one a defect when it fails), on the valid cases:
- `not_a_server_error`: no input gives a 5xx. The point of the test.
- `status_code_conformance`: every status answered is one the document lists for the operation.
- `content_type_conformance`: the answer's Content-Type is the documented one.
- `response_schema_conformance`: the body of a documented answer matches its schema.
- `ignored_auth`: the same request without the API key (or with a wrong one) is refused.
On the cases that break the schema: `not_a_server_error`, `content_type_conformance` and
`negative_data_rejection` (refused with a 4xx, never accepted). Their status and body are not
held to the operation's list: a path parameter that breaks its pattern makes a path that is not
the operation's at all, answered by the router's 404 `not_found`.
Left out: `positive_data_acceptance` (a valid request may still be refused by a business rule:
an unknown template, a closed 24 h window, a number that is not the account's) and the stateful
checks `use_after_free`/`ensure_resource_availability` (they need links between operations, which
the document does not declare).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, Phase, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.config import SchemathesisConfig

from services.ingest.openapi import OPENAPI_PATH
from shared.mongo import make_client
from tests.conftest import Broker
from tests.e2e.conftest import Account, Stack, seed_accounts
from tools.kafka_setup import revoke

MAX_EXAMPLES = 20
TOP_UP = 50_000_000
CHECKS = {
    GenerationMode.POSITIVE: [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
        ignored_auth,
    ],
    GenerationMode.NEGATIVE: [
        not_a_server_error,
        negative_data_rejection,
        content_type_conformance,
    ],
}


@pytest.fixture(scope="module")
async def ingest_api(
    tmp_path_factory: pytest.TempPathFactory, broker: Broker, mongodb_url: str
) -> AsyncIterator[tuple[Stack, Account]]:
    """ingest, billing (applies the seeding's top-up) and the simulator, nothing else."""
    stack = Stack(tmp_path_factory.mktemp("fuzz"), broker, mongodb_url)
    try:
        await broker.grant(stack.prefix)
        for name in ("metasim", "ingest", "billing"):
            stack.start(name)
        await stack.wait_ready("metasim", "ingest", "billing")
        [account, *_] = await seed_accounts(stack, TOP_UP)
        yield stack, account
    finally:
        stack.stop_all()
        mongo = make_client(mongodb_url)
        await mongo.drop_database(stack.database)
        await mongo.close()
        await revoke(broker.setup, lambda name: stack.unique in name)


# The document ingest serves is this file (the test below checks it), which a unit test keeps
# equal to the declarations. Loaded at collection: one test per operation.
# The two send operations take one of every Cloud API message shape: schemathesis's coverage
# phase makes thousands of boundary cases of them (about 3,700 each, over a minute on this
# machine); they get the examples and the fuzzing phases, every other operation all three.
CONFIG = SchemathesisConfig.from_str("""
[[operations]]
include-operation-id = ["sendMessage", "sendMessageMetaCompatible"]
phases.coverage.enabled = false
""")
schema = schemathesis.openapi.from_path(OPENAPI_PATH, config=CONFIG)


async def test_the_fuzzed_document_is_the_one_ingest_serves(
    ingest_api: tuple[Stack, Account],
) -> None:
    stack, _ = ingest_api
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{stack.url('ingest')}/openapi.json") as resp,
    ):
        assert resp.status == 200
        assert await resp.json() == yaml.safe_load(OPENAPI_PATH.read_text())


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_no_input_gives_a_server_error_and_answers_match_the_document(
    case: Any, ingest_api: tuple[Stack, Account]
) -> None:
    stack, account = ingest_api
    if case.meta.generation.mode is GenerationMode.POSITIVE:
        _from_our_number(case, account.numbers[0])
    case.call_and_validate(
        base_url=stack.url("ingest"),
        headers={"Authorization": f"Bearer {account.api_key}"},
        checks=CHECKS[case.meta.generation.mode],
        timeout=10,
    )


def _from_our_number(case: Any, number: str) -> None:
    """A valid send from a number that is not the account's stops at 403: half of the valid
    sends come from the account's own number, so that they reach the template, window, credit
    and publishing steps."""
    if hash(repr(case.body)) % 2:
        return
    if case.operation.path == "/v1/messages" and isinstance(case.body, dict):
        case.body["from"] = number
    elif case.operation.path == "/{graph_version}/{phone_number_id}/messages":
        case.path_parameters["phone_number_id"] = number
