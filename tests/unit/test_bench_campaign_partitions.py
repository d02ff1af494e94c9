"""The campaign bench says whether its two tenants share a partition of the account-keyed topics,
with the partition Kafka's own producer would choose."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import bench_campaign  # noqa: E402 (bench/ is put on the path above)

# Kafka's UtilsTest.testMurmur2 (apache/kafka, clients): murmur2("21") = -973932308,
# murmur2("foobar") = -790332482, murmur2("a-little-bit-long-string") = -985981536. Made
# positive (& 0x7fffffff) and taken modulo 6 partitions: 0, 0 and 2.


def test_keys_on_one_partition_share_every_account_keyed_topic() -> None:
    assert bench_campaign.shared_partitions("21", "foobar") == [
        "messages.send-requested.v1",
        "messages.status-changed.v1",
    ]


def test_keys_on_different_partitions_share_none() -> None:
    assert bench_campaign.shared_partitions("21", "a-little-bit-long-string") == []


def test_an_id_is_drawn_again_until_it_lands_on_the_first_ones_partitions() -> None:
    # "21" and "foobar" land on partition 0 of 6, "a-little-bit-long-string" on 2.
    draws = iter(["a-little-bit-long-string", "a-little-bit-long-string", "foobar"])
    _, home = bench_campaign.id_on_partitions(lambda: "21", None, (6,))
    assert home == {6: 0}
    assert bench_campaign.id_on_partitions(lambda: next(draws), home, (6,)) == ("foobar", home)


def test_seeding_under_same_partition_ids_puts_every_account_on_one_partition() -> None:
    from services.admin import commands

    original = commands.new_id
    with bench_campaign.same_partition_ids():
        ids = [commands.new_id("acc") for _ in range(5)]
        other = commands.new_id("key")
    assert commands.new_id is original
    assert len(set(ids)) == 5 and other.startswith("key_")
    assert all(bench_campaign.shared_partitions(ids[0], i) for i in ids[1:])
    assert len(bench_campaign.shared_partitions(ids[0], ids[1])) == 2
