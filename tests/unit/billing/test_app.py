"""The faust app's wiring, without a broker: what it reads and how it commits."""

from __future__ import annotations

from services.billing.app import create_app
from services.billing.settings import BillingSettings


def test_the_agent_reads_the_three_prefixed_input_topics_as_raw_bytes() -> None:
    app, _ = create_app(BillingSettings(HALA_TOPIC_PREFIX="t1.", faust_app_id="billing-t1"))
    [agent] = app.agents.values()
    channel = agent.channel
    assert set(channel.topics) == {"t1.messages.send-requested.v1",
                                   "t1.messages.status-changed.v1",
                                   "t1.billing.topup-requested.v1"}
    assert channel.schema.value_serializer == "raw"
    assert channel.schema.key_serializer == "raw"
    assert agent.concurrency == 1


def test_faust_commits_often_and_keeps_a_small_buffer() -> None:
    app, _ = create_app(BillingSettings(commit_every=7, stream_buffer_maxsize=64))
    assert app.conf.processing_guarantee.value == "at_least_once"
    assert app.conf.web_enabled is False
    assert (app.conf.broker_commit_every, app.conf.stream_buffer_maxsize) == (7, 64)


def test_the_consumer_group_is_prefixed_like_the_topics() -> None:
    app, _ = create_app(BillingSettings(HALA_TOPIC_PREFIX="t2.", faust_app_id="hala-billing",
                                        faust_datadir="/var/lib/billing"))
    assert app.conf.id == "t2.hala-billing"
    assert str(app.conf.datadir) == "/var/lib/billing/t2.hala-billing-data"
