"""The SMTP sink `make run` starts (deploy/local/stack.py mail-sink): a real aiosmtpd server on
loopback that saves every mail to a directory as one .eml file, run as `make run` runs it."""

from __future__ import annotations

import importlib.util
import signal
import smtplib
import subprocess
import sys
import time
from email.message import EmailMessage
from pathlib import Path
from types import ModuleType

import pytest

from shared.ports import free_loopback_port

REPO = Path(__file__).resolve().parents[2]
STACK = REPO / "deploy" / "local" / "stack.py"


def _stack() -> ModuleType:
    spec = importlib.util.spec_from_file_location("hala_stack", STACK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _alert(subject: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "alerts@hala.example"
    message["To"] = "ops@client.example"
    message["Subject"] = subject
    message.set_content("Your balance is 0.0132 USD, below your threshold of 0.03 USD.")
    message.add_alternative("<p>Your balance is <b>0.0132 USD</b>.</p>", subtype="html")
    return message


@pytest.fixture
def sink(tmp_path: Path) -> tuple[int, Path, ModuleType]:
    port, directory, stack = free_loopback_port(), tmp_path / "mail", _stack()
    process = subprocess.Popen(
        [sys.executable, str(STACK), "mail-sink", "--port", str(port), "--dir", str(directory)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while not stack._smtp_ready(port):
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            assert time.monotonic() < deadline, "the sink did not answer"
            time.sleep(0.05)
        yield port, directory, stack
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)
    assert process.returncode == 0  # it stops cleanly on SIGTERM


def test_every_mail_is_saved_as_one_eml_file(
    sink: tuple[int, Path, ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    port, directory, stack = sink
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.send_message(
            _alert("Low balance"), to_addrs=["ops@client.example", "cfo@client.example"]
        )
        smtp.send_message(_alert("Template rejected"))
    # the server answered 250 only after the file was written
    saved = sorted(directory.glob("*.eml"))
    assert len(saved) == 2 and not list(directory.glob("*.part"))
    first = stack.read_mail(saved[0])
    assert first["subject"] == "Low balance" and first["from"] == "alerts@hala.example"
    assert first["to"] == "ops@client.example, cfo@client.example"  # the envelope's
    assert "below your threshold" in first["text"]
    assert stack.read_mail(saved[1])["subject"] == "Template rejected"

    stack.mails(directory)
    listed = capsys.readouterr().out.splitlines()
    assert [line.split("  ")[0] for line in listed] == [p.name for p in saved]
    stack.mails(directory, show="latest")
    shown = capsys.readouterr().out
    assert "subject: Template rejected" in shown and "below your threshold" in shown


def test_the_services_are_pointed_at_the_sink(monkeypatch: pytest.MonkeyPatch) -> None:
    stack = _stack()
    monkeypatch.delenv("NOTIFY_SMTP_HOST", raising=False)
    monkeypatch.delenv("NOTIFY_SMTP_STARTTLS", raising=False)
    assert stack._sink_env() == {
        "NOTIFY_SMTP_HOST": "127.0.0.1",
        "NOTIFY_SMTP_PORT": str(stack.SMTP_SINK_PORT),
        "NOTIFY_SMTP_STARTTLS": "false",
    }
    monkeypatch.setenv("NOTIFY_SMTP_HOST", "smtp.relay.example")  # a real relay: no sink
    assert stack._sink_env() == {} and not stack._sink_wanted()
