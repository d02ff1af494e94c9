#!/usr/bin/env bash
# Debian tools the tests and benchmarks use: promtool/prometheus (rule tests and a real scrape),
# wrk (HTTP load), patch (infra.sh applies deploy/local/ferretdb/patches to FerretDB's module
# before building it) and PostgreSQL's server (FerretDB's other backend: infra.sh runs it with
# HALA_DB_BACKEND=postgresql, bench/bench_db.py compares the two). Installed with apt when
# missing; CI and developers run as root here. Debian's package also makes a `main` cluster of
# its own, which nothing here starts or uses: infra.sh runs its own server from .run/postgres.
set -euo pipefail
missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v patch >/dev/null 2>&1 || missing+=(patch)
compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || missing+=(postgresql)
[[ ${#missing[@]} -eq 0 ]] && exit 0
SUDO=""
[[ $(id -u) -eq 0 ]] || SUDO="sudo"
echo "[tools] installing ${missing[*]} from Debian's packages"
$SUDO apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
