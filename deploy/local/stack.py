"""Start, stop and inspect the platform's own processes on loopback: the Meta simulator and the
four services. (The broker and the database are infra.sh's job; this script calls it.)

Each service connects to Kafka as its own principal (passwords in .run/secrets/kafka, made by
infra.sh), serves its ops endpoints on its ops port, and ingest and status serve HTTPS with
certificates of the local CA (.run/tls, made here with tools/pki.py; the simulator trusts it
for its webhooks). Development mode (HALA_ENV=development): secrets may keep their defaults.

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


TLS = RUN_DIR / "tls"


@dataclass(frozen=True)
class Component:
    name: str
    module: str
    port_env: str  # where it is probed: the ops port (the simulator: its only port)
    default_port: int
    https_port_env: str | None = None  # the client port, served over HTTPS
    default_https_port: int = 0

    @property
    def port(self) -> int:
        return int(os.environ.get(self.port_env, self.default_port))

    @property
    def https_port(self) -> int:
        assert self.https_port_env is not None
        return int(os.environ.get(self.https_port_env, self.default_https_port))

    @property
    def ready_url(self) -> str:
        path = "/healthz" if self.name == "metasim" else "/readyz"
        return f"http://127.0.0.1:{self.port}{path}"


COMPONENTS = (
    Component("metasim", "tools.metasim", "METASIM_PORT", 8090),
    Component("billing", "services.billing", "BILLING_OPS_PORT", 9183),
    Component("sender", "services.sender", "SENDER_OPS_PORT", 9182),
    Component("status", "services.status", "STATUS_OPS_PORT", 9181, "STATUS_HTTP_PORT", 8081),
    Component("ingest", "services.ingest", "INGEST_OPS_PORT", 9180, "INGEST_HTTP_PORT", 8080),
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


def _certificates() -> dict[str, str]:
    """The local CA's certificates for ingest and status (localhost, 127.0.0.1), made or kept
    by tools/pki.py, as their settings."""
    sys.path.insert(0, str(REPO))
    from tools import pki

    settings = {}
    for name in ("ingest", "status"):
        issued = pki.issue(TLS, name)
        settings[f"{name.upper()}_TLS_CERT_FILE"] = str(issued.cert)
        settings[f"{name.upper()}_TLS_KEY_FILE"] = str(issued.key)
    return settings


def _kafka_principal(infra: dict[str, str], service: str) -> dict[str, str]:
    """KAFKA_SASL_USERNAME/PASSWORD_FILE of a service's own principal (infra.sh made it)."""
    user = f"hala-{service}"
    return {"KAFKA_SASL_USERNAME": user, "KAFKA_SASL_PASSWORD_FILE":
            str(Path(infra["HALA_KAFKA_SECRETS_DIR"]) / f"{user}.password")}


def up(timeout: float = 120.0) -> None:
    subprocess.run([str(INFRA), "up"], check=True)
    infra = _infra_env()
    status = next(c for c in COMPONENTS if c.name == "status")
    meta = f"http://127.0.0.1:{next(c.port for c in COMPONENTS if c.name == 'metasim')}"
    env = {**os.environ, **infra, **_certificates(), "PYTHONUNBUFFERED": "1",
           "HALA_ENV": "development", "HALA_TOKEN_KEYS": _token_keys(),
           # The simulator calls the status service (over HTTPS, trusting the local CA); the
           # sender (sends) and ingest (mark-as-read, media) call the simulator.
           "METASIM_WEBHOOK_URL": f"https://localhost:{status.https_port}/webhooks/meta",
           "METASIM_WEBHOOK_CA_FILE": str(TLS / "ca.pem"),
           "SENDER_META_BASE_URL": os.environ.get("SENDER_META_BASE_URL", meta),
           "INGEST_META_BASE_URL": os.environ.get("INGEST_META_BASE_URL", meta)}
    env.pop("KAFKA_SASL_PASSWORD", None)  # each gets its own, by file
    PIDS.mkdir(parents=True, exist_ok=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    started = []
    for c in COMPONENTS:
        if _running_pid(c):
            print(f"{c.name:8} already running (pid {_running_pid(c)})")
            continue
        own = _kafka_principal(infra, c.name) if c.name != "metasim" else {}
        log = open(LOGS / f"{c.name}.log", "ab")  # handed to the child, closed with it
        proc = subprocess.Popen([PYTHON, "-m", c.module], cwd=REPO, env={**env, **own},
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
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
    # As the operator: the admin principal (the only one that may write top-ups).
    _seed_demo({**env, **_kafka_principal(infra, "admin")})
    _print_trust()


def _seed_demo(env: dict[str, str]) -> None:
    """Create the demo account against the simulator, if the admin CLI exists yet."""
    seed = REPO / "deploy" / "local" / "seed_demo.py"
    if seed.exists():
        subprocess.run([PYTHON, str(seed)], cwd=REPO, env=env, check=True)


def _print_trust() -> None:
    ca = TLS / "ca.pem"
    ingest = next(c for c in COMPONENTS if c.name == "ingest")
    print(f"""
ingest and status serve HTTPS with certificates of the local CA {ca}.
Trust it per command:   curl --cacert {ca} https://localhost:{ingest.https_port}/openapi.json
or in the system store (Debian/Ubuntu):
    sudo cp {ca} /usr/local/share/ca-certificates/hala-local-ca.crt && sudo update-ca-certificates
(macOS: sudo security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain {ca})
Python clients: SSL_CERT_FILE={ca} (or an ssl context with cafile=...).
Ops endpoints (/metrics, /readyz) are on loopback: """ + ", ".join(
        f"{c.name} {c.port}" for c in COMPONENTS if c.name != "metasim"))


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
