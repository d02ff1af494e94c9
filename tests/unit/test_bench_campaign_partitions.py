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
