"""A fixed CPU budget for one benchmark process, the way a Kubernetes CPU limit sets it: a cgroup
of its own with a CFS quota (e.g. 0.3 core = 30 ms of CPU per 100 ms period).

cgroup v1 (a mounted `cpu` hierarchy: `cpu.cfs_quota_us`) and v2 (`cpu.max`) are both handled;
either needs root. Where neither is writable, `CpuQuota` raises `CpuQuotaUnavailable` with the
reason, so a benchmark can say it did not measure rather than report an unlimited figure.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

PERIOD_US = 100_000  # the kernel's default CFS period, and Kubernetes'


class CpuQuotaUnavailable(RuntimeError):
    pass


def _cgroup_mounts() -> tuple[Path | None, Path | None]:
    """(v1 mount holding the `cpu` controller, v2 mount), from /proc/mounts."""
    v1 = v2 = None
    for line in Path("/proc/mounts").read_text().splitlines():
        _, mountpoint, fstype, options, *_ = line.split()
        if fstype == "cgroup" and "cpu" in options.split(","):
            v1 = Path(mountpoint)
        elif fstype == "cgroup2" and v2 is None:
            v2 = Path(mountpoint)
    return v1, v2


class CpuQuota:
    """A new cgroup limited to `cores`; `add` moves a process (all its threads) into it, and
    children it starts later inherit it. `remove` after the processes have exited."""

    def __init__(self, name: str, cores: float) -> None:
        self.cores = cores
        quota_us = round(cores * PERIOD_US)
        v1, v2 = _cgroup_mounts()
        # v1 first: on a hybrid host the v2 mount (/sys/fs/cgroup/unified) has no cpu controller.
        if v1 is not None:
            self.version, self.path = 1, v1 / name
        elif v2 is not None:
            self.version, self.path = 2, v2 / name
        else:
            raise CpuQuotaUnavailable("no cgroup mounted")
        made = False
        try:
            if v2 is not None and self.version == 2:
                # A child group gets a cpu.max only once its parent delegates the controller;
                # the root is exempt from "no processes in inner groups", so children of it.
                (v2 / "cgroup.subtree_control").write_text("+cpu")
            self.path.mkdir()
            made = True
            if self.version == 1:
                (self.path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
                (self.path / "cpu.cfs_quota_us").write_text(str(quota_us))
            else:
                (self.path / "cpu.max").write_text(f"{quota_us} {PERIOD_US}")
        except OSError as exc:
            if made:
                with contextlib.suppress(OSError):
                    self.path.rmdir()
            raise CpuQuotaUnavailable(f"cgroup v{self.version} {self.path}: {exc}") from exc

    def add(self, pid: int) -> None:
        try:
            (self.path / "cgroup.procs").write_text(str(pid))
        except OSError as exc:
            raise CpuQuotaUnavailable(f"moving {pid} into {self.path}: {exc}") from exc

    def throttling(self) -> dict[str, float]:
        """Counters since the group was made: CFS periods in which the group ran, how many of
        them it was stopped at its quota, and for how long in all."""
        stat = dict(line.split() for line in (self.path / "cpu.stat").read_text().splitlines())
        throttled_s = (
            int(stat.get("throttled_time", 0)) / 1e9  # v1: nanoseconds
            if self.version == 1
            else int(stat.get("throttled_usec", 0)) / 1e6
        )
        return {
            "periods": int(stat.get("nr_periods", 0)),
            "throttled_periods": int(stat.get("nr_throttled", 0)),
            "throttled_s": round(throttled_s, 3),
        }

    def remove(self) -> None:
        """Delete the group; the kernel refuses while a process is still in it, so a process
        just killed gets a moment to be gone."""
        deadline = time.monotonic() + 5
        while True:
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


def throttled_share(before: dict[str, float], after: dict[str, float]) -> float | None:
    """Share of the CFS periods between two `throttling()` readings in which the group used up
    its quota: near 1 means the process wanted more CPU than it was given all along."""
    periods = after["periods"] - before["periods"]
    if periods <= 0:
        return None
    return round((after["throttled_periods"] - before["throttled_periods"]) / periods, 3)
