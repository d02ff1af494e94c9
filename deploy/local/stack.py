"""Start, stop and inspect the platform's own processes on loopback: the Meta simulator, the
services, and an SMTP sink for the alert emails. (The broker and the database are infra.sh's job;
this script calls it.)

Each service connects to Kafka as its own principal (passwords in .run/secrets/kafka, made by
infra.sh), serves its ops endpoints on its ops port, and ingest and status serve HTTPS with
certificates of the local CA (.run/tls, made here with tools/pki.py; the simulator trusts it
for its webhooks). Development mode (HALA_ENV=development): secrets may keep their defaults.

    python deploy/local/stack.py up       # background; returns when every component is ready
    python deploy/local/stack.py down     # stops exactly what `up` started (by PID)
    python deploy/local/stack.py status
    python deploy/local/stack.py run      # foreground: up, follow the logs, Ctrl-C stops all
    python deploy/local/stack.py mail-sink [--port N] [--dir D]   # the SMTP sink alone
    python deploy/local/stack.py mails [--show latest|FILE]      # the saved mails

The SMTP sink (aiosmtpd) listens on 127.0.0.1:$HALA_SMTP_SINK_PORT (8025) and saves every mail it
receives to .run/mail/ as one .eml file each; the services are given NOTIFY_SMTP_HOST/PORT
pointing at it (unless NOTIFY_SMTP_HOST is set: then that relay is used and no sink starts).
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
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
MAIL_DIR = RUN_DIR / "mail"
MAIL_SINK = "mailsink"
SMTP_SINK_HOST = "127.0.0.1"
SMTP_SINK_PORT = int(os.environ.get("HALA_SMTP_SINK_PORT", "8025"))


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
    Component("notify", "services.notify", "NOTIFY_OPS_PORT", 9184),
    Component("guard", "services.guard", "GUARD_OPS_PORT", 9185),
    Component("ingest", "services.ingest", "INGEST_OPS_PORT", 9180, "INGEST_HTTP_PORT", 8080),
)


def _pid_file(c: Component | str) -> Path:
    return PIDS / f"{c if isinstance(c, str) else c.name}.pid"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _running_pid(c: Component | str) -> int | None:
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
    return {
        "KAFKA_SASL_USERNAME": user,
        "KAFKA_SASL_PASSWORD_FILE": str(Path(infra["HALA_KAFKA_SECRETS_DIR"]) / f"{user}.password"),
    }


# --- the SMTP sink -----------------------------------------------------------------------------


class MailSaver:
    """aiosmtpd handler: every mail accepted is written to `directory` as one .eml file (the
    message as received, after two headers naming the envelope: X-MailFrom, X-RcptTo)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._numbers = itertools.count(1)

    def save(self, mail_from: str, rcpt_tos: list[str], content: bytes) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        path = self.directory / f"{stamp}-{os.getpid()}-{next(self._numbers):04d}.eml"
        envelope = (f"X-MailFrom: {mail_from}\r\nX-RcptTo: {', '.join(rcpt_tos)}\r\n").encode()
        partial = path.with_suffix(".eml.part")  # a reader never sees half a mail
        partial.write_bytes(envelope + content)
        partial.rename(path)
        return path

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        content = getattr(envelope, "original_content", None) or getattr(envelope, "content", b"")
        if isinstance(content, str):
            content = content.encode()
        mail_from = str(getattr(envelope, "mail_from", ""))
        rcpt_tos = [str(r) for r in getattr(envelope, "rcpt_tos", [])]
        path = self.save(mail_from, rcpt_tos, content)
        print(f"mail saved: {path} (to {', '.join(rcpt_tos)})", flush=True)
        return "250 Message accepted for delivery"


def mail_sink(
    port: int = SMTP_SINK_PORT, directory: Path = MAIL_DIR, stop: threading.Event | None = None
) -> None:
    """Run the SMTP sink on loopback until SIGTERM/SIGINT (or `stop`)."""
    from aiosmtpd.controller import Controller  # a dev dependency, pinned in pyproject.toml

    directory.mkdir(parents=True, exist_ok=True)
    controller = Controller(MailSaver(directory), hostname=SMTP_SINK_HOST, port=port)
    controller.start()
    print(
        f"SMTP sink on {SMTP_SINK_HOST}:{port}: every mail is saved to {directory}/ "
        "(one .eml each)",
        flush=True,
    )
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    try:
        stop.wait()
    finally:
        controller.stop()


def read_mail(path: Path) -> dict[str, str]:
    """A saved mail's envelope, headers and plain-text part (what `mails --show` prints)."""
    import email
    import email.policy

    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    body = message.get_body(preferencelist=("plain", "html"))
    return {
        "file": str(path),
        "date": str(message.get("Date", "")),
        "from": str(message.get("From", "")),
        "to": str(message.get("X-RcptTo", "")),
        "subject": str(message.get("Subject", "")),
        "text": body.get_content() if body is not None else "",
    }  # type: ignore[attr-defined]


def mails(directory: Path = MAIL_DIR, last: int = 20, show: str | None = None) -> None:
    """List the newest saved mails, or print one (`latest`, or a file) as text."""
    saved = sorted(directory.glob("*.eml")) if directory.is_dir() else []
    if show is not None:
        if not saved and show == "latest":
            sys.exit(f"no mail in {directory}")
        mail = read_mail(saved[-1] if show == "latest" else Path(show))
        print("\n".join(f"{k}: {v}" for k, v in mail.items() if k != "text"))
        print("\n" + mail["text"])
        return
    if not saved:
        print(f"no mail in {directory} yet")
    for path in saved[-last:]:
        mail = read_mail(path)
        print(f"{path.name}  to {mail['to']}  {mail['subject']}")


def _smtp_ready(port: int) -> bool:
    """The sink answers with its 220 greeting."""
    try:
        with socket.create_connection((SMTP_SINK_HOST, port), timeout=2) as sock:
            return sock.recv(3) == b"220"
    except OSError:
        return False


def _sink_wanted() -> bool:
    return "NOTIFY_SMTP_HOST" not in os.environ


def _start_mail_sink(env: dict[str, str]) -> None:
    if not _sink_wanted():
        print(f"{MAIL_SINK:8} not started: NOTIFY_SMTP_HOST={os.environ['NOTIFY_SMTP_HOST']}")
        return
    if _running_pid(MAIL_SINK):
        print(f"{MAIL_SINK:8} already running (pid {_running_pid(MAIL_SINK)})")
    else:
        log = open(LOGS / f"{MAIL_SINK}.log", "ab")  # handed to the child, closed with it
        proc = subprocess.Popen(
            [
                PYTHON,
                str(Path(__file__).resolve()),
                "mail-sink",
                "--port",
                str(SMTP_SINK_PORT),
                "--dir",
                str(MAIL_DIR),
            ],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _pid_file(MAIL_SINK).write_text(str(proc.pid))
    deadline = time.monotonic() + 30
    while not _smtp_ready(SMTP_SINK_PORT):
        if _running_pid(MAIL_SINK) is None:
            sys.exit(f"the SMTP sink exited during start-up; see {LOGS / (MAIL_SINK + '.log')}")
        if time.monotonic() > deadline:
            sys.exit(f"the SMTP sink did not answer on {SMTP_SINK_HOST}:{SMTP_SINK_PORT}")
        time.sleep(0.2)
    print(
        f"{MAIL_SINK:8} ready    pid {_running_pid(MAIL_SINK)}  "
        f"smtp://{SMTP_SINK_HOST}:{SMTP_SINK_PORT} -> mails saved to {MAIL_DIR}/"
    )


def _sink_env() -> dict[str, str]:
    """What points the services (notify) at the sink: plain SMTP on loopback, no STARTTLS."""
    if not _sink_wanted():
        return {}
    return {
        "NOTIFY_SMTP_HOST": SMTP_SINK_HOST,
        "NOTIFY_SMTP_PORT": str(SMTP_SINK_PORT),
        "NOTIFY_SMTP_STARTTLS": os.environ.get("NOTIFY_SMTP_STARTTLS", "false"),
    }


def _stop_pid(name: str) -> None:
    pid = _running_pid(name)
    if pid is None:
        _pid_file(name).unlink(missing_ok=True)
        return
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        os.killpg(pid, signal.SIGKILL)
    _pid_file(name).unlink(missing_ok=True)
    print(f"{name:8} stopped (pid {pid})")


# --- the stack --------------------------------------------------------------------------------


def up(timeout: float = 120.0) -> None:
    subprocess.run([str(INFRA), "up"], check=True)
    infra = _infra_env()
    status = next(c for c in COMPONENTS if c.name == "status")
    meta = f"http://127.0.0.1:{next(c.port for c in COMPONENTS if c.name == 'metasim')}"
    env = {
        **os.environ,
        **infra,
        **_certificates(),
        "PYTHONUNBUFFERED": "1",
        "HALA_ENV": "development",
        "HALA_TOKEN_KEYS": _token_keys(),
        # The simulator calls the status service (over HTTPS, trusting the local CA); the
        # sender (sends) and ingest (mark-as-read, media) call the simulator.
        "METASIM_WEBHOOK_URL": f"https://localhost:{status.https_port}/webhooks/meta",
        "METASIM_WEBHOOK_CA_FILE": str(TLS / "ca.pem"),
        "SENDER_META_BASE_URL": os.environ.get("SENDER_META_BASE_URL", meta),
        "INGEST_META_BASE_URL": os.environ.get("INGEST_META_BASE_URL", meta),
        **_sink_env(),
    }
    env.pop("KAFKA_SASL_PASSWORD", None)  # each gets its own, by file
    PIDS.mkdir(parents=True, exist_ok=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    _start_mail_sink(env)
    started = []
    for c in COMPONENTS:
        if _running_pid(c):
            print(f"{c.name:8} already running (pid {_running_pid(c)})")
            continue
        own = _kafka_principal(infra, c.name) if c.name != "metasim" else {}
        log = open(LOGS / f"{c.name}.log", "ab")  # handed to the child, closed with it
        proc = subprocess.Popen(
            [PYTHON, "-m", c.module],
            cwd=REPO,
            env={**env, **own},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
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
        sys.exit("not ready in time: " + ", ".join(c.name for c in pending) + f" (logs in {LOGS})")
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
    print(
        f"""
ingest and status serve HTTPS with certificates of the local CA {ca}.
Trust it per command:   curl --cacert {ca} https://localhost:{ingest.https_port}/openapi.json
or in the system store (Debian/Ubuntu):
    sudo cp {ca} /usr/local/share/ca-certificates/hala-local-ca.crt && sudo update-ca-certificates
(macOS: sudo security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain {ca})
Python clients: SSL_CERT_FILE={ca} (or an ssl context with cafile=...).
Ops endpoints (/metrics, /readyz) are on loopback: """
        + ", ".join(f"{c.name} {c.port}" for c in COMPONENTS if c.name != "metasim")
    )


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
    _stop_pid(MAIL_SINK)
    if stop_infra:
        subprocess.run([str(INFRA), "down"], check=True)


def status() -> int:
    code = subprocess.run([str(INFRA), "status"], check=False).returncode
    for c in COMPONENTS:
        pid = _running_pid(c)
        state = "ready" if pid and _ready(c) else ("starting/unhealthy" if pid else "stopped")
        print(f"{c.name:8} {state:18} {('pid ' + str(pid)) if pid else ''}")
        code = code or (0 if pid else 1)
    pid = _running_pid(MAIL_SINK)
    if pid or _sink_wanted():
        state = (
            "ready"
            if pid and _smtp_ready(SMTP_SINK_PORT)
            else ("starting/unhealthy" if pid else "stopped")
        )
        print(
            f"{MAIL_SINK:8} {state:18} {('pid ' + str(pid)) if pid else ''}"
            f"{'  mails in ' + str(MAIL_DIR) if pid else ''}"
        )
        code = code or (0 if pid else 1)
    return code


def run() -> None:
    up()
    mails = (
        f" Alert emails: {MAIL_DIR}/ (one .eml each; `python deploy/local/stack.py "
        "mails` lists them)."
        if _sink_wanted()
        else ""
    )
    print(f"\nAll components ready. Logs: {LOGS}.{mails} Ctrl-C stops everything.\n")
    logs = [*(c.name for c in COMPONENTS), *([MAIL_SINK] if _sink_wanted() else [])]
    tail = subprocess.Popen(
        ["tail", "-n", "0", "-F", *(str(LOGS / f"{name}.log") for name in logs)]
    )
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
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["up", "down", "status", "run", "mail-sink", "mails"])
    parser.add_argument("--port", type=int, default=SMTP_SINK_PORT, help="mail-sink: its port")
    parser.add_argument(
        "--dir", type=Path, default=MAIL_DIR, help="mail-sink, mails: where mails are saved"
    )
    parser.add_argument("--last", type=int, default=20, help="mails: how many to list")
    parser.add_argument("--show", metavar="FILE|latest", help="mails: print one as text")
    args = parser.parse_args()
    if args.command == "mail-sink":
        mail_sink(args.port, args.dir)
    elif args.command == "mails":
        mails(args.dir, args.last, args.show)
    elif args.command == "up":
        up()
    elif args.command == "down":
        down()
    elif args.command == "status":
        sys.exit(status())
    else:
        run()


if __name__ == "__main__":
    main()
