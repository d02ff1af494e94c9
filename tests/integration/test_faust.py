"""faust-streaming 0.15.3 against the real broker: an agent consumes what we produce, and a
restarted worker resumes after what it already processed (faust commits for us)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from aiokafka.admin import NewTopic

from shared.kafka import make_admin, make_producer
from tests.conftest import Broker

REPO = Path(__file__).resolve().parents[2]


def _start_probe(broker: Broker, app_id: str, topic: str, output: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        **broker.env(None),
        "PROBE_APP_ID": app_id,
        "PROBE_TOPIC": topic,
        "PROBE_OUTPUT": str(output),
        "PROBE_DATADIR": str(output.parent / "faust-data"),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.faust_probe"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _wait_for_lines(
    output: Path, count: int, proc: subprocess.Popen, timeout: float = 60
) -> list[bytes]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = output.read_bytes().splitlines() if output.exists() else []
        if len(lines) >= count:
            return lines
        if proc.poll() is not None:
            raise AssertionError(f"faust worker exited: {proc.stdout.read().decode()[-3000:]}")
        time.sleep(0.2)
    raise AssertionError(f"only {len(lines)} of {count} values consumed in {timeout}s")


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


async def test_a_faust_agent_consumes_from_the_real_broker_and_resumes_after_restart(
    broker: Broker, unique: str, tmp_path: Path
) -> None:
    topic, app_id, output = f"it.faust.{unique}", f"it-faust-{unique}", tmp_path / "seen.txt"
    admin = make_admin(broker.setup)
    await admin.start()
    await admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    await admin.close()

    producer = make_producer(broker.setup)
    await producer.start()
    try:
        for i in range(5):
            await producer.send_and_wait(topic, value=f"first-{i}".encode(), key=str(i).encode())

        proc = _start_probe(broker, app_id, topic, output)
        try:
            first = _wait_for_lines(output, 5, proc)
        finally:
            assert _stop(proc) == 0, "faust worker did not shut down cleanly on SIGTERM"

        for i in range(3):
            await producer.send_and_wait(topic, value=f"second-{i}".encode(), key=str(i).encode())
    finally:
        await producer.stop()

    proc = _start_probe(broker, app_id, topic, output)
    try:
        lines = _wait_for_lines(output, 8, proc)
    finally:
        _stop(proc)
    assert sorted(first) == sorted(f"first-{i}".encode() for i in range(5))
    # The restarted worker continued after its committed offsets: nothing from the first batch
    # was processed twice.
    assert sorted(lines) == sorted(
        [f"first-{i}".encode() for i in range(5)] + [f"second-{i}".encode() for i in range(3)]
    )
