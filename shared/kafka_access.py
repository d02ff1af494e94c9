"""Who may do what on Kafka, derived from the topic registry (shared/messages.py).

Every service connects as its own principal, `hala-<service>` (the admin CLI as `hala-admin`),
and may touch only its own topics and consumer groups:

- a topic's producers may WRITE it;
- a topic's consumers may READ it, and WRITE its dead-letter topic `<topic>.dlq`;
- a service's consumer groups are named `<prefix><service>…` (status-processor, sender,
  billing's faust app id): it may READ (join, commit) the groups with that prefix;
- the admin CLI writes top-ups (it is their only producer in the registry) and works the
  dead letters: `hala dlq list|show` READs every `.dlq` topic and `hala dlq replay` WRITEs
  records back to their source topic.

READ and WRITE imply DESCRIBE. Nobody but the set-up principal (`hala-setup`, a super user of
the local broker, used by deploy/local/infra.sh, the tests and the benches) creates topics or
ACLs. A run with its own topic prefix (HALA_TOPIC_PREFIX) gets the same grants on its own names
(tools/kafka_setup.py creates them with the admin client).

Pure: no I/O. tools/kafka_setup.py turns the grants into ACL bindings.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from shared.messages import ALL_TOPICS, Topic

SETUP_PRINCIPAL = "hala-setup"
ADMIN = "admin"  # the operator's command line, `hala`

# Every service the registry names as a producer or consumer, plus those that only serve HTTP.
SERVICES: tuple[str, ...] = tuple(
    sorted({s for t in ALL_TOPICS for s in (*t.producers, *t.consumers)} | {"ingest", ADMIN})
)


def principal(service: str) -> str:
    """The SCRAM user name a service connects as."""
    return f"hala-{service}"


def group_prefix(service: str, topic_prefix: str = "") -> str:
    """Every consumer group of `service` starts with this."""
    return f"{topic_prefix}{service}"


Resource = Literal["topic", "group"]
Operation = Literal["read", "write"]
Pattern = Literal["literal", "prefixed"]


@dataclass(frozen=True, order=True)
class Grant:
    principal: str  # user name, without "User:"
    resource: Resource
    name: str
    pattern: Pattern
    operation: Operation


def topics_of(service: str, topics: Iterable[Topic[Any]] = ALL_TOPICS) -> list[str]:
    """The topic names (unprefixed) a service uses: what it produces, consumes, and the
    dead-letter topics of what it consumes."""
    names: list[str] = []
    for topic in topics:
        if service in topic.producers or service in topic.consumers:
            names.append(topic.name)
        if service in topic.consumers:
            names.append(topic.dlq)
    return names


def grants(prefix: str = "", topics: Iterable[Topic[Any]] = ALL_TOPICS) -> list[Grant]:
    """Every ACL of every service principal for topics and groups named with `prefix`."""
    topics = tuple(topics)
    found: set[Grant] = set()

    def allow(
        service: str,
        resource: Resource,
        name: str,
        operation: Operation,
        pattern: Pattern = "literal",
    ) -> None:
        found.add(Grant(principal(service), resource, name, pattern, operation))

    for topic in topics:
        name, dlq = prefix + topic.name, prefix + topic.dlq
        for service in topic.producers:
            allow(service, "topic", name, "write")
        for service in topic.consumers:
            allow(service, "topic", name, "read")
            allow(service, "topic", dlq, "write")
        # hala dlq list/show/replay
        allow(ADMIN, "topic", dlq, "read")
        allow(ADMIN, "topic", name, "write")
    for service in SERVICES:
        if any(service in t.consumers for t in topics):
            allow(service, "group", group_prefix(service, prefix), "read", "prefixed")
    return sorted(found)
