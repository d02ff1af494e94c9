"""Start, stop and inspect the platform's own processes on loopback: the Meta simulator and the
five services. (The broker and the database are infra.sh's job; this script calls it.)

    python deploy/local/stack.py up       # background; returns when every component is ready
    python deploy/local/stack.py down     # stops exactly what `up` started (by PID)
    python deploy/local/stack.py status
    python deploy/local/stack.py run      # foreground: up, follow the logs, Ctrl-C stops all
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUN_DIR = Path(os.environ.get("HALA_RUN_DIR", REPO / ".run"))
PIDS = RUN_DIR / "pids"
LOGS = RUN_DIR / "logs"
INFRA = REPO / "deploy" / "local" / "infra.sh"
PYTHON = os.environ.get("HALA_PYTHON", sys.executable)


@dataclass(frozen=True)
class Component:
    name: str
    module: str
    port_env: str
    default_port: int

    @property
    def port(self) -> int:
        return int(os.environ.get(self.port_env, self.default_port))

    @property
    def ready_url(self) -> str:
        path = "/healthz" if self.name == "metasim" else "/readyz"
        return f"http://127.0.0.1:{self.port}{path}"


COMPONENTS = (
    Component("metasim", "tools.metasim", "METASIM_PORT", 8090),
    Component("billing", "services.billing", "BILLING_HTTP_PORT", 8083),
    Component("sender", "services.sender", "SENDER_HTTP_PORT", 8082),
    Component("status", "services.status", "STATUS_HTTP_PORT", 8081),
    Component("notify", "services.notify", "NOTIFY_HTTP_PORT", 8084),
    Component("ingest", "services.ingest", "INGEST_HTTP_PORT", 8080),
)


def _pid_file(c: Component) -> Path:
    return PIDS / f"{c.name}.pid"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _running_pid(c: Component) -> int | None:
    try:
        pid = int(_pid_file(c).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if _alive(pid) else None


def _ready(c: Component) -> bool:
    try:
        with urllib.request.urlopen(c.ready_url, timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _infra_env() -> dict[str, str]:
    out = subprocess.run([str(INFRA), "env"], capture_output=True, text=True, check=True).stdout
    return dict(line.split("=", 1) for line in out.split() if "=" in line)


def _token_keys() -> str:
    """The Fernet keys for access tokens: HALA_TOKEN_KEYS, or the local .run/secrets.env one."""
    sys.path.insert(0, str(Path(__file__).parent))
    from seed_demo import token_keys  # type: ignore[import-not-found]

    return str(token_keys())


def up(timeout: float = 120.0) -> None:
    subprocess.run([str(INFRA), "up"], check=True)
    status_port = next(c.port for c in COMPONENTS if c.name == "status")
    meta = f"http://127.0.0.1:{next(c.port for c in COMPONENTS if c.name == 'metasim')}"
    env = {**os.environ, **_infra_env(), "PYTHONUNBUFFERED": "1",
           "HALA_TOKEN_KEYS": _token_keys(),
           # loopback http webhook endpoints (make run's receivers) are allowed in development
           "HALA_ENV": os.environ.get("HALA_ENV", "development"),
           # The simulator calls the status service; the sender (sends) and ingest (mark-as-read,
           # media) call the simulator.
           "METASIM_WEBHOOK_URL": f"http://127.0.0.1:{status_port}/webhooks/meta",
           "SENDER_META_BASE_URL": os.environ.get("SENDER_META_BASE_URL", meta),
           "INGEST_META_BASE_URL": os.environ.get("INGEST_META_BASE_URL", meta)}
    PIDS.mkdir(parents=True, exist_ok=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    started = []
    for c in COMPONENTS:
        if _running_pid(c):
            print(f"{c.name:8} already running (pid {_running_pid(c)})")
            continue
        log = open(LOGS / f"{c.name}.log", "ab")  # handed to the child, closed with it
        proc = subprocess.Popen([PYTHON, "-m", c.module], cwd=REPO, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        _pid_file(c).write_text(str(proc.pid))
        started.append(c)
    deadline = time.monotonic() + timeout
    pending = list(COMPONENTS)
    while pending and time.monotonic() < deadline:
        for c in list(pending):
            if _ready(c):
                print(f"{c.name:8} ready    pid {_running_pid(c)}  {c.ready_url}")
                pending.remove(c)
            elif _running_pid(c) is None:
                sys.exit(f"{c.name} exited during start-up; see {LOGS / (c.name + '.log')}")
        time.sleep(0.3)
    if pending:
        sys.exit("not ready in time: " + ", ".join(c.name for c in pending)
                 + f" (logs in {LOGS})")
    _seed_demo(env)


def _seed_demo(env: dict[str, str]) -> None:
    """Create the demo account against the simulator, if the admin CLI exists yet."""
    seed = REPO / "deploy" / "local" / "seed_demo.py"
    if seed.exists():
        subprocess.run([PYTHON, str(seed)], cwd=REPO, env=env, check=True)


def down(stop_infra: bool = True) -> None:
    for c in reversed(COMPONENTS):
        pid = _running_pid(c)
        if pid is None:
            _pid_file(c).unlink(missing_ok=True)
            continue
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
        _pid_file(c).unlink(missing_ok=True)
        print(f"{c.name:8} stopped (pid {pid})")
    if stop_infra:
        subprocess.run([str(INFRA), "down"], check=True)


def status() -> int:
    code = subprocess.run([str(INFRA), "status"], check=False).returncode
    for c in COMPONENTS:
        pid = _running_pid(c)
        state = "ready" if pid and _ready(c) else ("starting/unhealthy" if pid else "stopped")
        print(f"{c.name:8} {state:18} {('pid ' + str(pid)) if pid else ''}")
        code = code or (0 if pid else 1)
    return code


def run() -> None:
    up()
    print(f"\nAll components ready. Logs: {LOGS}. Ctrl-C stops everything.\n")
    tail = subprocess.Popen(["tail", "-n", "0", "-F", *(str(LOGS / f"{c.name}.log")
                                                        for c in COMPONENTS)])
    try:
        while all(_running_pid(c) for c in COMPONENTS):
            time.sleep(1)
        print("a component exited; stopping everything")
    except KeyboardInterrupt:
        print("\nstopping…")
    finally:
        tail.terminate()
        down()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down", "status", "run"])
    args = parser.parse_args()
    if args.command == "up":
        up()
    elif args.command == "down":
        down()
    elif args.command == "status":
        sys.exit(status())
    else:
        run()


if __name__ == "__main__":
    main()
