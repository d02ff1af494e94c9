"""The Go tests of our FerretDB wrapper (deploy/local/ferretdb): its indexer never creates a
database file, and what FerretDB would refuse to start next to is removed before it starts."""

import os
import shutil
import subprocess

from tests.conftest import REPO


def test_the_ferretdb_wrappers_go_tests_pass() -> None:
    go = shutil.which("go")
    assert go, "Go is needed to build the local FerretDB (deploy/local/infra.sh)"
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=readonly", "CGO_ENABLED": "0"}
    run = subprocess.run(
        [go, "test", "./..."],
        cwd=REPO / "deploy" / "local" / "ferretdb",
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout + run.stderr
