#!/usr/bin/env bash
# Debian tools the tests and benchmarks use: promtool/prometheus (rule tests and a real scrape)
# and wrk (HTTP load). Installed with apt when missing; CI and developers run as root here.
set -euo pipefail
missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
[[ ${#missing[@]} -eq 0 ]] && exit 0
SUDO=""
[[ $(id -u) -eq 0 ]] || SUDO="sudo"
echo "[tools] installing ${missing[*]} from Debian's packages"
$SUDO apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
