#!/usr/bin/env bash
# Local infrastructure for Hala Whatsup, without Docker: a single-node Kafka (KRaft)
# built from Maven Central jars and a MongoDB-compatible server (FerretDB embedded in
# a tiny Go program, on SQLite files or on a PostgreSQL server that this script runs too, or a
# real `mongod` if one is on PATH).
#
# Kafka runs SASL_SSL (SCRAM-SHA-512 over TLS) with ACLs: a local CA and the broker's
# certificate (tools/pki.py) in .run/tls, one generated password per principal in
# .run/secrets/kafka (0600, never committed), one SCRAM user per service, and ACLs that let
# each service use only its own topics and groups (tools/kafka_setup.py, run at every `up`).
#
# Usage: deploy/local/infra.sh <command>
#   up [--fresh]   start what is not running yet and wait until it answers
#                  (--fresh: stop and wipe runtime data first)
#   down           stop what `up` started (SIGTERM, SIGKILL after a deadline)
#   status         show what runs (exit 0 only if every managed service is up)
#   logs [NAME] [-f]  tail the logs (NAME: kafka, ferretdb, postgres, mongod; -f follows)
#   env            print the variables clients need (KAFKA_* with the admin CLI's principal,
#                  HALA_KAFKA_SECRETS_DIR for the others' passwords, MONGODB_URL)
#   reset          down, then wipe runtime data and logs (keeps .run/tls and .run/secrets)
#
# Environment:
#   KAFKA_PORT (9092), KAFKA_CONTROLLER_PORT (9093), MONGO_PORT (27017): loopback ports
#   KAFKA_BOOTSTRAP_SERVERS / MONGODB_URL: if set, that service is not started here
#   KAFKA_VERSION (4.4.0), KAFKA_HEAP_OPTS (-Xms512m -Xmx1g)
#   KAFKA_JMX_PORT: if set, the broker serves JMX on 127.0.0.1:<port> (for `make bench`'s
#                  Kafka requests per message), read-only, user hala-monitor, password in
#                  .run/secrets/jmx/hala-monitor.password; unset (default): no JMX
#   HALA_CACHE_DIR: downloads and builds (default ${XDG_CACHE_HOME:-~/.cache}/hala-whatsup)
#   HALA_RUN_DIR: data, logs, pid files (default <repo>/.run)
#   HALA_MONGO_IMPL: auto (mongod if on PATH, else ferretdb) | ferretdb | mongod
#   HALA_DB_BACKEND: FerretDB's backend, sqlite (default) | postgresql. postgresql runs
#                Debian's PostgreSQL server (installed by ensure_tools.sh if missing) from
#                <run dir>/postgres, on a unix socket there only (no TCP port); as root, as the
#                `postgres` user. deploy/local/NOTES.md has the measurement behind the default.
#   HALA_PG_URL_PARAMS: more pgx parameters for FerretDB's PostgreSQL URL (e.g. pool_max_conns=200;
#                FerretDB's default pool is 50 connections)
#   HALA_PG_BIN_DIR: PostgreSQL's programs (default: the newest /usr/lib/postgresql/*/bin)
#   HALA_FERRETDB_LOG_LEVEL (warn; FerretDB logs every unsupported command at warn)
#   HALA_FERRETDB_PATCHES: none builds FerretDB without deploy/local/ferretdb/patches (default: with)
#   HALA_FERRETDB_DEBUG_ADDR: a loopback address (127.0.0.1:6060) for FerretDB's Go profiler
#     (/debug/pprof/); unset: none
#   HALA_READY_TIMEOUT (90 s), HALA_STOP_TIMEOUT (30 s)
#   HALA_PYTHON: Python with the project installed (default <repo>/.venv/bin/python): makes the
#                certificates and users, probes readiness
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)

CACHE_DIR=${HALA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hala-whatsup}
RUN_DIR=${HALA_RUN_DIR:-$REPO/.run}
KAFKA_PORT=${KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-9093}
MONGO_PORT=${MONGO_PORT:-27017}
KAFKA_VERSION=${KAFKA_VERSION:-4.4.0}
KAFKA_JMX_PORT=${KAFKA_JMX_PORT:-}
KAFKA_HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xms512m -Xmx1g}
KAFKA_JVM_OPTS=${KAFKA_JVM_OPTS:--XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -XX:MaxInlineLevel=15 -Djava.awt.headless=true}
READY_TIMEOUT=${HALA_READY_TIMEOUT:-90}
STOP_TIMEOUT=${HALA_STOP_TIMEOUT:-30}
MONGO_IMPL=${HALA_MONGO_IMPL:-auto}
DB_BACKEND=${HALA_DB_BACKEND:-sqlite}
case $DB_BACKEND in
  sqlite | postgresql) ;;
  *) printf '[infra] ERROR: HALA_DB_BACKEND must be sqlite or postgresql (got %s)\n' "$DB_BACKEND" >&2; exit 2 ;;
esac
# The socket file's name only (.s.PGSQL.<port>): PostgreSQL listens on no TCP port.
PG_PORT=5432

PIDS_DIR=$RUN_DIR/pids
LOGS_DIR=$RUN_DIR/logs
TLS_DIR=$RUN_DIR/tls
SECRETS_DIR=$RUN_DIR/secrets/kafka
# Recorded with the formatted data: data formatted for another layout (the plaintext broker
# of earlier versions has no SCRAM users) cannot be reused.
KAFKA_LAYOUT="sasl_ssl-scram-1"
# In stop order: FerretDB before the PostgreSQL server it uses.
ALL_SERVICES=(kafka ferretdb postgres mongod)
STARTED=() # what this `up` started: stopped again if any start fails

# ---------------------------------------------------------------- helpers
say() { printf '[infra] %s\n' "$*"; }
warn() { printf '[infra] WARNING: %s\n' "$*" >&2; }
die() { printf '[infra] ERROR: %s\n' "$*" >&2; exit 1; }
now_ms() { date +%s%3N; }
elapsed() { local ms=$(($(now_ms) - $1)); printf '%d.%01ds' $((ms / 1000)) $((ms % 1000 / 100)); }

need() { # need CMD WHY
  command -v "$1" >/dev/null 2>&1 || die "'$1' not found on PATH: $2"
}

# Python used for readiness probes: the project's venv if present (has aiokafka, pymongo).
PY=${HALA_PYTHON:-}
if [[ -z $PY && -x $REPO/.venv/bin/python ]]; then PY=$REPO/.venv/bin/python; fi
py_has() { [[ -n $PY ]] && "$PY" -c "import $1" >/dev/null 2>&1; }
# The project's own tools (tools.pki, tools.kafka_setup), run from the repository.
py_tool() { (cd "$REPO" && "$PY" -m "$@"); }
need_project_python() {
  [[ -n $PY ]] && py_has cryptography && py_has confluent_kafka ||
    die "Kafka's certificates and users are made with the project's Python: run 'make venv' (or set HALA_PYTHON)"
}

port_open() { # port_open PORT -> 0 if something accepts on 127.0.0.1:PORT
  timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" >/dev/null 2>&1
}

sha() { cat "$@" | sha256sum | cut -c1-16; }

# lock_cache NAME: serialise downloads/builds of NAME across concurrent runs sharing the
# cache. Call it in a subshell: the lock is released when that subshell exits.
lock_cache() {
  command -v flock >/dev/null 2>&1 || return 0
  local fd
  exec {fd}>"$CACHE_DIR/.$1.lock"
  flock -w 900 "$fd" || die "timed out waiting for $CACHE_DIR/.$1.lock"
}

pid_file() { echo "$PIDS_DIR/$1.pid"; }
log_file() { echo "$LOGS_DIR/$1.log"; }

# A marker that only our own process of that service has on its command line, so a
# pid file whose pid was reused by another process is never acted upon.
marker() {
  case $1 in
    kafka) echo "$RUN_DIR/kafka/server.properties" ;;
    ferretdb) echo "$RUN_DIR/ferretdb/data" ;;
    mongod) echo "$RUN_DIR/mongod/data" ;;
    postgres) echo "$PG_DIR/data" ;;
  esac
}
service_port() {
  case $1 in kafka) echo "$KAFKA_PORT" ;; *) echo "$MONGO_PORT" ;; esac
}

# Prints the pid if the service runs (pid alive and ours), else returns 1.
running_pid() {
  local f pid
  f=$(pid_file "$1")
  [[ -f $f ]] || return 1
  pid=$(<"$f")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$(marker "$1")" || return 1
  echo "$pid"
}

# start_bg NAME CMD...: run CMD detached (own session, stdin closed, output to the log),
# the process itself writes its pid file (exec keeps the pid).
start_bg() {
  local name=$1 pidf log
  shift
  pidf=$(pid_file "$name")
  log=$(log_file "$name")
  rm -f "$pidf"
  # Keep one previous log once it passes ~20 MB.
  if [[ -f $log ]] && (($(stat -c %s "$log") > 20000000)); then mv -f "$log" "$log.1"; fi
  printf '===== %s: starting %s\n' "$(date -Is)" "$name" >>"$log"
  local launcher=()
  if command -v setsid >/dev/null 2>&1; then launcher=(setsid); fi
  # shellcheck disable=SC2016  # $$ and $@ are for the inner bash
  "${launcher[@]}" bash -c 'echo $$ >"$0.tmp" && mv "$0.tmp" "$0" && exec "$@"' "$pidf" "$@" \
    </dev/null >>"$log" 2>&1 9>&- &
  local i
  for ((i = 0; i < 100; i++)); do
    [[ -s $pidf ]] && return 0
    sleep 0.05
  done
  die "$name did not start (no pid file); see $log"
}

fail_start() { # fail_start NAME MESSAGE
  local log
  log=$(log_file "$1")
  printf '[infra] ERROR: %s\n[infra] ---- last 40 lines of %s ----\n' "$2" "$log" >&2
  tail -n 40 "$log" >&2 || true
  local name
  for name in "${STARTED[@]}"; do stop_service "$name" quiet || true; done
  exit 1
}

# wait_ready NAME PROBE_FN: poll PROBE_FN until it succeeds, the process dies, or the deadline.
wait_ready() {
  local name=$1 probe=$2 deadline=$(($(date +%s) + READY_TIMEOUT))
  while :; do
    if ! running_pid "$name" >/dev/null; then
      fail_start "$name" "$name exited during start-up"
    fi
    if "$probe"; then return 0; fi
    if (($(date +%s) >= deadline)); then
      fail_start "$name" "$name not ready after ${READY_TIMEOUT}s"
    fi
    sleep 0.25
  done
}

check_port_free() { # check_port_free PORT WHAT ENVVAR
  if port_open "$1"; then
    die "127.0.0.1:$1 ($2) is already in use by a process not started by this script. Stop it, pick another port with $3=..., or point the app at it with the matching *_URL/*_SERVERS variable."
  fi
}

# ---------------------------------------------------------------- Kafka
kafka_libs_dir() { echo "$CACHE_DIR/kafka-$KAFKA_VERSION/libs"; }

ensure_kafka_libs() {
  local base="$CACHE_DIR/kafka-$KAFKA_VERSION" stamp want
  want="$(sha "$HERE/kafka/pom.xml") $KAFKA_VERSION"
  stamp="$base/.complete"
  if [[ -f $stamp && $(<"$stamp") == "$want" ]]; then return 0; fi
  mkdir -p "$CACHE_DIR"
  lock_cache "kafka-$KAFKA_VERSION"
  if [[ -f $stamp && $(<"$stamp") == "$want" ]]; then return 0; fi # another run did it

  need mvn "Apache Maven is needed once to download the Kafka $KAFKA_VERSION jars from Maven Central (Debian: apt-get install maven)."
  say "resolving Kafka $KAFKA_VERSION jars with Maven into $base (first run only) ..."
  local t0 tmp mlog
  t0=$(now_ms)
  mkdir -p "$CACHE_DIR"
  tmp=$(mktemp -d "$CACHE_DIR/.kafka-$KAFKA_VERSION.XXXXXX")
  mlog="$CACHE_DIR/kafka-$KAFKA_VERSION.maven.log"
  if ! mvn -q -B -Dstyle.color=never -f "$HERE/kafka/pom.xml" \
    -Dkafka.version="$KAFKA_VERSION" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp/libs" \
    >"$mlog" 2>&1; then
    printf '[infra] ERROR: Maven failed to resolve Kafka %s. Output (%s):\n' "$KAFKA_VERSION" "$mlog" >&2
    sed 's/\x1b\[[0-9;]*m//g' "$mlog" | tail -n 60 >&2
    rm -rf "$tmp"
    exit 1
  fi
  local libs="$tmp/libs"
  [[ -f $libs/kafka_2.13-$KAFKA_VERSION.jar ]] || { rm -rf "$tmp"; die "Maven finished but kafka_2.13-$KAFKA_VERSION.jar is missing"; }
  ls "$libs"/log4j-core-*.jar >/dev/null 2>&1 || { rm -rf "$tmp"; die "no log4j-core jar resolved: the broker would log nothing"; }
  # The SLF4J binding must match the slf4j-api that Kafka brings, or the broker is silent.
  if ls "$libs"/slf4j-api-2.*.jar >/dev/null 2>&1 && ! ls "$libs"/log4j-slf4j2-impl-*.jar >/dev/null 2>&1; then
    rm -rf "$tmp"
    die "Kafka $KAFKA_VERSION brings slf4j-api 2.x: use log4j-slf4j2-impl in deploy/local/kafka/pom.xml"
  fi
  if ls "$libs"/slf4j-api-1.*.jar >/dev/null 2>&1 && ! ls "$libs"/log4j-slf4j-impl-*.jar >/dev/null 2>&1; then
    rm -rf "$tmp"
    die "Kafka $KAFKA_VERSION brings slf4j-api 1.7.x: use log4j-slf4j-impl in deploy/local/kafka/pom.xml"
  fi
  rm -rf "$base"
  mkdir -p "$base"
  mv "$libs" "$base/libs"
  rmdir "$tmp" 2>/dev/null || rm -rf "$tmp"
  echo "$want" >"$stamp"
  say "Kafka jars ready ($(find "$base/libs" -name '*.jar' | wc -l) jars, $(du -sh "$base/libs" | cut -f1)) in $(elapsed "$t0")"
}

check_java() {
  need java "Java 17+ is needed to run Kafka 4.x (Debian: apt-get install openjdk-17-jre-headless)."
  local v major
  v=$(java -version 2>&1 | sed -n 's/.*version "\([^"]*\)".*/\1/p' | head -n1)
  major=${v%%.*}
  [[ $major == 1 ]] && major=$(echo "$v" | cut -d. -f2)
  [[ $major =~ ^[0-9]+$ ]] || { warn "cannot parse java version '$v'; trying anyway"; return 0; }
  ((major >= 17)) || die "Kafka 4.x needs Java 17+, found $v ($(command -v java))"
}

# The broker's certificate (signed by the local CA, kept while valid) and the passwords of
# its own principals (generated once).
prepare_kafka_security() {
  mkdir -p "$TLS_DIR" "$SECRETS_DIR"
  chmod 700 "$RUN_DIR/secrets" "$SECRETS_DIR"
  py_tool tools.pki issue "$TLS_DIR" kafka --host localhost --host 127.0.0.1 --bundle >/dev/null
  py_tool tools.kafka_setup passwords --secrets-dir "$SECRETS_DIR" \
    kafka-broker kafka-controller hala-setup
}

secret_of() { tr -d '\n' <"$SECRETS_DIR/$1.password"; }

render_kafka_config() {
  local out="$RUN_DIR/kafka/server.properties" data="$RUN_DIR/kafka/data"
  # Holds the broker's passwords: readable by its owner only, from the first byte.
  (umask 077 && sed -e "s|\${KAFKA_PORT}|$KAFKA_PORT|g" \
    -e "s|\${KAFKA_LISTEN_HOST}|127.0.0.1|g" -e "s|\${KAFKA_ADVERTISED_HOST}|localhost|g" \
    -e "s|\${KAFKA_CONTROLLER_PORT}|$KAFKA_CONTROLLER_PORT|g" \
    -e "s|\${KAFKA_DATA_DIR}|$data|g" \
    -e "s|\${KAFKA_KEYSTORE}|$TLS_DIR/kafka-bundle.pem|g" \
    -e "s|\${KAFKA_TRUSTSTORE}|$TLS_DIR/ca.pem|g" \
    -e "s|\${KAFKA_BROKER_PASSWORD}|$(secret_of kafka-broker)|g" \
    -e "s|\${KAFKA_CONTROLLER_PASSWORD}|$(secret_of kafka-controller)|g" \
    "$HERE/kafka/server.properties.template" >"$out.tmp")
  if grep -qF "\${" "$out.tmp"; then die "unrendered placeholder in $out.tmp"; fi
  mv "$out.tmp" "$out"
}

kafka_java() { # kafka_java MAIN_CLASS ARGS... (foreground, for the storage tool)
  java -Xms64m -Xmx256m -XX:TieredStopAtLevel=1 \
    -Dlog4j2.configurationFile="$HERE/kafka/log4j2.properties" \
    -Dkafka.logs.dir="$RUN_DIR/kafka/logs" \
    -cp "$(kafka_libs_dir)/*" "$@"
}

format_kafka_storage() {
  local data="$RUN_DIR/kafka/data" marker_file="$RUN_DIR/kafka/formatted-with"
  local cfg="controller=$KAFKA_CONTROLLER_PORT" layout_file="$RUN_DIR/kafka/layout"
  if [[ -f $data/meta.properties ]]; then
    if [[ ! -f $layout_file || $(<"$layout_file") != "$KAFKA_LAYOUT" ]]; then
      die "Kafka data in $data was formatted for the plaintext broker of earlier versions (no SCRAM users, no ACLs). Run '$0 reset' (wipes local Kafka and database data), then '$0 up'."
    fi
    # --standalone records the controller endpoint in the metadata log. A single node
    # still starts after a port change (tried), but say so in case anything looks odd.
    if [[ -f $marker_file && $(<"$marker_file") != "$cfg" ]]; then
      warn "Kafka data was formatted with $(<"$marker_file"), now controller=$KAFKA_CONTROLLER_PORT; if Kafka misbehaves, run '$0 reset'"
    fi
    return 0
  fi
  local id=""
  # Cluster id: 16 random bytes, URL-safe base64 without padding (what `random-uuid` prints).
  while [[ -z $id || $id == -* ]]; do
    id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
  done
  say "formatting Kafka storage (cluster id $id) ..."
  # The users the broker needs before it can serve anyone: its own inter-broker identity and
  # the set-up principal (salted credentials: no password in argv). The format tool prints
  # the credentials it stores, so its output is shown only when it fails, without them.
  local scram=() out
  mapfile -t scram < <(py_tool tools.kafka_setup scram-args --secrets-dir "$SECRETS_DIR" \
    kafka-broker hala-setup)
  ((${#scram[@]} == 4)) || die "could not prepare the SCRAM users for the storage format"
  if ! out=$(kafka_java kafka.tools.StorageTool format --standalone -t "$id" \
    -c "$RUN_DIR/kafka/server.properties" --ignore-formatted "${scram[@]}" 2>&1); then
    printf '[infra] ERROR: kafka storage format failed:\n%s\n' \
      "$(grep -v UserScramCredentialRecord <<<"$out" | tail -n 30)" >&2
    exit 1
  fi
  echo "$cfg" >"$marker_file"
  echo "$KAFKA_LAYOUT" >"$layout_file"
}

probe_kafka() {
  port_open "$KAFKA_PORT" || return 1
  # An authenticated metadata round trip over TLS, not just an open socket: the listener
  # accepts connections before the authorizer has loaded the ACLs.
  "$PY" - "localhost:$KAFKA_PORT" "$TLS_DIR/ca.pem" "$SECRETS_DIR/hala-setup.password" \
    >/dev/null 2>&1 <<'EOF'
import asyncio, sys
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.helpers import create_ssl_context

async def main():
    admin = AIOKafkaAdminClient(
        bootstrap_servers=sys.argv[1], request_timeout_ms=5000, security_protocol="SASL_SSL",
        ssl_context=create_ssl_context(cafile=sys.argv[2]), sasl_mechanism="SCRAM-SHA-512",
        sasl_plain_username="hala-setup",
        sasl_plain_password=open(sys.argv[3]).read().strip())
    await admin.start()
    try:
        await admin.list_topics()
    finally:
        await admin.close()

asyncio.run(asyncio.wait_for(main(), 10))
EOF
}

# Every service principal's SCRAM user, the unprefixed topics and every ACL on them
# (idempotent: run at every `up`, so that new services and topics get theirs).
setup_kafka() {
  local t0
  t0=$(now_ms)
  if ! (
    unset KAFKA_SASL_PASSWORD
    export KAFKA_BOOTSTRAP_SERVERS="localhost:$KAFKA_PORT" KAFKA_SECURITY_PROTOCOL=SASL_SSL \
      KAFKA_SASL_MECHANISM=SCRAM-SHA-512 KAFKA_SSL_CA_FILE="$TLS_DIR/ca.pem" \
      KAFKA_SASL_USERNAME=hala-setup KAFKA_SASL_PASSWORD_FILE="$SECRETS_DIR/hala-setup.password"
    py_tool tools.kafka_setup users --secrets-dir "$SECRETS_DIR" &&
      py_tool tools.kafka_setup grant
  ) >>"$(log_file kafka-setup)" 2>&1; then
    printf '[infra] ERROR: Kafka users and ACLs could not be set up:\n' >&2
    tail -n 20 "$(log_file kafka-setup)" >&2
    exit 1
  fi
  say "kafka users, topics and ACLs set up in $(elapsed "$t0")"
}

# kafka_wanted: 0 if this `up` has to start Kafka (says why not otherwise).
kafka_wanted() {
  if [[ -n ${KAFKA_BOOTSTRAP_SERVERS:-} ]]; then
    say "KAFKA_BOOTSTRAP_SERVERS=$KAFKA_BOOTSTRAP_SERVERS is set: not starting Kafka, using it"
    return 1
  fi
  local pid
  if pid=$(running_pid kafka); then
    say "kafka already running (pid $pid, localhost:$KAFKA_PORT)"
    return 1
  fi
  need_project_python
  check_java
  check_port_free "$KAFKA_PORT" "Kafka" KAFKA_PORT
  check_port_free "$KAFKA_CONTROLLER_PORT" "Kafka controller" KAFKA_CONTROLLER_PORT
}

# kafka_jmx_opts: the JVM options of KAFKA_JMX_PORT (none when unset). Loopback only,
# authenticated, one read-only role: reading the broker's metrics is all the bench does.
kafka_jmx_opts() {
  [[ -n $KAFKA_JMX_PORT ]] || return 0
  [[ $KAFKA_JMX_PORT =~ ^[0-9]+$ ]] || die "KAFKA_JMX_PORT must be a port number"
  check_port_free "$KAFKA_JMX_PORT" "Kafka JMX" KAFKA_JMX_PORT
  local dir="$RUN_DIR/secrets/jmx"
  (umask 077 && mkdir -p "$dir")
  if [[ ! -s $dir/hala-monitor.password ]]; then
    (umask 077 && head -c 24 /dev/urandom | base64 | tr -d '+/=\n' >"$dir/hala-monitor.password")
  fi
  (umask 077 && printf 'hala-monitor %s\n' "$(<"$dir/hala-monitor.password")" >"$dir/jmxremote.password")
  printf 'hala-monitor readonly\n' >"$dir/jmxremote.access"
  echo "-Dcom.sun.management.jmxremote -Dcom.sun.management.jmxremote.host=127.0.0.1" \
    "-Dcom.sun.management.jmxremote.port=$KAFKA_JMX_PORT" \
    "-Dcom.sun.management.jmxremote.rmi.port=$KAFKA_JMX_PORT" \
    "-Djava.rmi.server.hostname=127.0.0.1 -Dcom.sun.management.jmxremote.ssl=false" \
    "-Dcom.sun.management.jmxremote.authenticate=true" \
    "-Dcom.sun.management.jmxremote.password.file=$dir/jmxremote.password" \
    "-Dcom.sun.management.jmxremote.access.file=$dir/jmxremote.access"
}

start_kafka() {
  mkdir -p "$RUN_DIR/kafka/data" "$RUN_DIR/kafka/logs"
  prepare_kafka_security
  render_kafka_config
  format_kafka_storage
  local jmx
  jmx=$(kafka_jmx_opts)
  # shellcheck disable=SC2086  # heap/JVM/JMX options are word lists on purpose
  start_bg kafka java $KAFKA_HEAP_OPTS $KAFKA_JVM_OPTS $jmx \
    -Dkafka.logs.dir="$RUN_DIR/kafka/logs" \
    -Dlog4j2.configurationFile="$HERE/kafka/log4j2.properties" \
    -cp "$(kafka_libs_dir)/*" kafka.Kafka "$RUN_DIR/kafka/server.properties"
}

wait_kafka() { # wait_kafka START_MS
  wait_ready kafka probe_kafka
  say "kafka $KAFKA_VERSION ready in $(elapsed "$1") (SASL_SSL metadata request): pid $(running_pid kafka), localhost:$KAFKA_PORT"
}

# ---------------------------------------------------------------- PostgreSQL (FerretDB's backend)
# Debian's server, run by this script from its own directory: data in $PG_DIR/data, the socket
# in $PG_DIR (mode 0700: only its owner, and root, reach it, so `trust` needs no password).
# PostgreSQL refuses to run as root: as root it runs as the `postgres` user the Debian package
# creates, and then lives under /tmp if that user cannot reach the run dir.
PG_DIR=""
PG_AS=()

set_pg_dir() {
  PG_DIR=$RUN_DIR/postgres
  PG_AS=()
  if [[ $(id -u) -eq 0 ]] && id postgres >/dev/null 2>&1; then
    PG_AS=(setpriv --reuid=postgres --regid=postgres --init-groups)
    if ! "${PG_AS[@]}" test -x "$RUN_DIR" 2>/dev/null; then
      PG_DIR=${TMPDIR:-/tmp}/hala-postgres-$(echo "$RUN_DIR" | sha)
    fi
  fi
  # A unix socket's path must fit in 107 bytes.
  if ((${#PG_DIR} + 16 > 107)); then
    PG_DIR=${TMPDIR:-/tmp}/hala-postgres-$(echo "$RUN_DIR" | sha)
  fi
}

pg_bin() { # pg_bin PROGRAM: its path in PostgreSQL's bin directory
  local dir=${HALA_PG_BIN_DIR:-}
  if [[ -z $dir ]]; then
    dir=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)
  fi
  if [[ -z $dir ]] && command -v initdb >/dev/null 2>&1; then
    dir=$(dirname "$(readlink -f "$(command -v initdb)")")
  fi
  echo "${dir:-/nonexistent}/$1"
}

ensure_postgres() {
  if [[ ! -x $(pg_bin postgres) ]]; then
    say "PostgreSQL is not installed: installing Debian's postgresql (deploy/local/ensure_tools.sh)"
    HALA_DB_BACKEND=postgresql "$HERE/ensure_tools.sh" || die "could not install PostgreSQL"
    [[ -x $(pg_bin postgres) ]] || die "PostgreSQL's programs not found after the install (set HALA_PG_BIN_DIR)"
  fi
  if [[ $(id -u) -eq 0 ]] && ((${#PG_AS[@]} == 0)); then
    die "PostgreSQL does not run as root and there is no 'postgres' user to run it as"
  fi
}

pg_url() { echo "postgres://hala@/ferretdb?host=$PG_DIR&port=$PG_PORT${HALA_PG_URL_PARAMS:+&$HALA_PG_URL_PARAMS}"; }

probe_postgres() {
  "$(pg_bin pg_isready)" -q -h "$PG_DIR" -p "$PG_PORT" -U hala -d postgres >/dev/null 2>&1
}

pg_psql() { "$(pg_bin psql)" -X -q -h "$PG_DIR" -p "$PG_PORT" -U hala -d postgres "$@"; }

start_postgres() {
  local data="$PG_DIR/data" log
  log=$(log_file postgres)
  ensure_postgres
  mkdir -p "$PG_DIR"
  chmod 700 "$PG_DIR"
  ((${#PG_AS[@]})) && chown postgres:postgres "$PG_DIR"
  if [[ ! -f $data/PG_VERSION ]]; then
    say "initialising PostgreSQL's data in $data (first run only) ..."
    rm -rf "$data" # a half-made one
    if ! (cd "$PG_DIR" && "${PG_AS[@]}" "$(pg_bin initdb)" -D "$data" -U hala --auth=trust \
      -E UTF8 --locale=C.UTF-8 --no-instructions) >>"$log" 2>&1; then
      tail -n 20 "$log" >&2
      die "initdb failed (see $log)"
    fi
  fi
  # synchronous_commit=off: a commit returns before its WAL record is flushed (at most
  # 3 x wal_writer_delay = 0.3 s later). A crash of the server may lose those last commits,
  # never corrupts anything: MongoDB's own default (w:1 without j acknowledges before the
  # journal's 100 ms flush). HALA_PG_OPTIONS adds or overrides settings ("-c name=value ...").
  # shellcheck disable=SC2086  # HALA_PG_OPTIONS is a word list on purpose
  start_bg postgres "${PG_AS[@]}" "$(pg_bin postgres)" -D "$data" -k "$PG_DIR" -p "$PG_PORT" \
    -c listen_addresses= -c unix_socket_permissions=0700 \
    -c synchronous_commit=off -c wal_writer_delay=100ms \
    -c log_min_messages=warning -c log_checkpoints=off \
    ${HALA_PG_OPTIONS:-}
}

wait_postgres() { # wait_postgres START_MS
  wait_ready postgres probe_postgres
  if [[ -z $(pg_psql -tAc "SELECT 1 FROM pg_database WHERE datname = 'ferretdb'") ]]; then
    pg_psql -c "CREATE DATABASE ferretdb" || fail_start postgres "could not create the database ferretdb"
  fi
  say "postgres ready in $(elapsed "$1"): pid $(running_pid postgres), socket $PG_DIR/.s.PGSQL.$PG_PORT"
}

# ---------------------------------------------------------------- MongoDB / FerretDB
mongo_impl() {
  case $MONGO_IMPL in
    ferretdb | mongod) echo "$MONGO_IMPL" ;;
    auto) if command -v mongod >/dev/null 2>&1; then echo mongod; else echo ferretdb; fi ;;
    *) die "HALA_MONGO_IMPL must be auto, ferretdb or mongod (got '$MONGO_IMPL')" ;;
  esac
}

ferretdb_bin() {
  local h
  h=$(sha "$HERE/ferretdb/go.mod" "$HERE/ferretdb/go.sum" "$HERE/ferretdb/main.go" $(ferretdb_patches))
  echo "$CACHE_DIR/ferretdb-$h/hala-ferretdb"
}

# The patches applied to FerretDB's module; HALA_FERRETDB_PATCHES=none builds the stock module
# (for side-by-side measurements).
ferretdb_patches() {
  [[ ${HALA_FERRETDB_PATCHES:-} == none ]] && return 0
  printf '%s\n' "$HERE"/ferretdb/patches/*.patch
}

# build_ferretdb OUT: go build of ferretdb/ against FerretDB's module with ferretdb/patches/*.patch
# applied. The module comes from the Go module proxy (checked against go.sum), is copied next
# to OUT and patched there; a go.mod copy next to it replaces the module with that copy
# (-modfile), so the project's go.mod stays as it is and the Go caches are never written into.
build_ferretdb() {
  local out=$1 work mod src
  work="$(dirname "$out")/build"
  rm -rf "$work" && mkdir -p "$work"
  (
    cd "$HERE/ferretdb"
    export GOTOOLCHAIN=local GOFLAGS=-mod=readonly CGO_ENABLED=0
    go mod download github.com/FerretDB/FerretDB
    mod=$(go list -m -f '{{.Dir}}' github.com/FerretDB/FerretDB)
    src="$work/FerretDB"
    cp -R "$mod" "$src" && chmod -R u+w "$src"
    # Debian's `patch` program: ensure_tools.sh installs it (with the other tools) when missing.
    command -v patch >/dev/null 2>&1 || "$HERE/ensure_tools.sh"
    for p in $(ferretdb_patches); do
      patch --quiet --forward --directory="$src" -p1 <"$p" || { echo "patch $p failed"; exit 1; }
    done
    cp go.mod "$work/go.mod" && cp go.sum "$work/go.sum"
    go mod edit -modfile="$work/go.mod" -replace "github.com/FerretDB/FerretDB=$src"
    go build -modfile="$work/go.mod" -trimpath -buildvcs=false -o "$out" .
  )
}

ensure_ferretdb_bin() {
  local bin
  bin=$(ferretdb_bin)
  [[ -x $bin ]] && return 0
  mkdir -p "$CACHE_DIR"
  lock_cache ferretdb
  [[ -x $bin ]] && return 0 # another run built it meanwhile
  need go "Go 1.24+ is needed once to build the embedded FerretDB (a Go toolchain >= 1.24; older Debian golang packages are too old)."
  say "building FerretDB (embedded) into $(dirname "$bin") (first run only) ..."
  local t0 tmp blog
  t0=$(now_ms)
  mkdir -p "$(dirname "$bin")"
  tmp="$bin.tmp.$$"
  blog="$CACHE_DIR/ferretdb-build.log"
  if ! build_ferretdb "$tmp" >"$blog" 2>&1; then
    printf '[infra] ERROR: go build of deploy/local/ferretdb failed (%s, %s):\n' "$(go version)" "$blog" >&2
    tail -n 40 "$blog" >&2
    rm -f "$tmp"
    exit 1
  fi
  mv "$tmp" "$bin"
  say "FerretDB binary built in $(elapsed "$t0")"
}

probe_mongo() {
  port_open "$MONGO_PORT" || return 1
  if py_has pymongo; then
    "$PY" - "mongodb://127.0.0.1:$MONGO_PORT/" >/dev/null 2>&1 <<'EOF'
import sys
from pymongo import MongoClient

client = MongoClient(sys.argv[1], serverSelectionTimeoutMS=3000, connectTimeoutMS=3000)
try:
    client.admin.command("ping")
finally:
    client.close()
EOF
  fi
}

# mongo_wanted: 0 if this `up` has to start the database (says why not otherwise).
mongo_wanted() {
  if [[ -n ${MONGODB_URL:-} ]]; then
    say "MONGODB_URL is set: not starting a database, using it"
    return 1
  fi
  local pid name
  for name in ferretdb mongod; do
    if pid=$(running_pid "$name"); then
      say "$name already running (pid $pid, 127.0.0.1:$MONGO_PORT)"
      local running_backend
      running_backend=$(cat "$RUN_DIR/ferretdb/backend" 2>/dev/null || echo sqlite)
      if [[ $name == ferretdb && $running_backend != "$DB_BACKEND" ]]; then
        warn "it runs on $running_backend, not HALA_DB_BACKEND=$DB_BACKEND: '$0 down' then 'up' to switch"
      fi
      return 1
    fi
  done
  [[ $(mongo_impl) == ferretdb ]] || need mongod "HALA_MONGO_IMPL=mongod"
  check_port_free "$MONGO_PORT" "MongoDB" MONGO_PORT
}

start_mongo() {
  local impl data
  impl=$(mongo_impl)
  data="$RUN_DIR/$impl/data"
  mkdir -p "$data"
  if [[ $impl == ferretdb ]]; then
    local backend=(-backend sqlite)
    if [[ $DB_BACKEND == postgresql ]]; then
      # FerretDB connects at its first request, but its first client must find the server up.
      if ! running_pid postgres >/dev/null; then
        local ts
        ts=$(now_ms)
        start_postgres
        STARTED+=(postgres)
        wait_postgres "$ts"
      fi
      backend=(-backend postgresql -postgresql-url "$(pg_url)")
    fi
    echo "$DB_BACKEND" >"$RUN_DIR/ferretdb/backend"
    # -data-dir also with postgresql: its path is what marks the process as ours.
    start_bg ferretdb env DO_NOT_TRACK=true FERRETDB_TELEMETRY=disable \
      "$(ferretdb_bin)" -listen-addr "127.0.0.1:$MONGO_PORT" -data-dir "$data" \
      "${backend[@]}" -log-level "${HALA_FERRETDB_LOG_LEVEL:-warn}" \
      ${HALA_FERRETDB_DEBUG_ADDR:+-debug-addr "$HALA_FERRETDB_DEBUG_ADDR"}
  else
    start_bg mongod mongod --dbpath "$data" --bind_ip 127.0.0.1 --port "$MONGO_PORT"
  fi
}

wait_mongo() { # wait_mongo START_MS
  local impl how="port"
  impl=$(mongo_impl)
  wait_ready "$impl" probe_mongo
  py_has pymongo && how="ping"
  [[ $impl == ferretdb ]] && impl="ferretdb ($DB_BACKEND)"
  say "$impl ready in $(elapsed "$1") ($how): pid $(running_pid "${impl%% *}"), mongodb://127.0.0.1:$MONGO_PORT/"
}

# ---------------------------------------------------------------- stop / status
# stop_service NAME [quiet]: SIGTERM, wait, SIGKILL after STOP_TIMEOUT; remove the pid file.
stop_service() {
  local name=$1 quiet=${2:-} pidf pid t0 deadline
  pidf=$(pid_file "$name")
  [[ -f $pidf ]] || return 0
  if ! pid=$(running_pid "$name"); then
    [[ -n $quiet ]] || say "$name: not running (stale pid file removed)"
    rm -f "$pidf"
    return 0
  fi
  t0=$(now_ms)
  deadline=$(($(date +%s) + STOP_TIMEOUT))
  # PostgreSQL: SIGINT is its fast shutdown (SIGTERM's smart one waits for every client to
  # leave); past the deadline SIGQUIT, its immediate shutdown, which its children obey too.
  local sig=TERM last=KILL
  [[ $name == postgres ]] && sig=INT last=QUIT
  kill -"$sig" "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do
    if (($(date +%s) >= deadline)); then
      warn "$name (pid $pid) ignored SIG$sig for ${STOP_TIMEOUT}s: SIG$last"
      kill -"$last" "$pid" 2>/dev/null || true
      deadline=$(($(date +%s) + 5))
      last=KILL
      sleep 0.2
    fi
    # A zombie (its parent has not reaped it yet) counts as gone.
    [[ $(awk '/^State:/ {print $2}' "/proc/$pid/status" 2>/dev/null) == Z ]] && break
    sleep 0.1
  done
  rm -f "$pidf"
  [[ -n $quiet ]] || say "stopped $name (pid $pid) in $(elapsed "$t0")"
}

cmd_down() {
  local name
  for name in "${ALL_SERVICES[@]}"; do stop_service "$name"; done
  local p left=0
  for p in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT" "$MONGO_PORT"; do
    if port_open "$p"; then
      warn "127.0.0.1:$p still answers (not a process this script started?)"
      left=1
    fi
  done
  ((left == 0)) && say "down: nothing of ours is running"
  return 0
}

cmd_status() {
  local ok=0 name pid port state
  if [[ -n ${KAFKA_BOOTSTRAP_SERVERS:-} ]]; then
    say "kafka: external, KAFKA_BOOTSTRAP_SERVERS=$KAFKA_BOOTSTRAP_SERVERS"
  fi
  if [[ -n ${MONGODB_URL:-} ]]; then say "database: external, MONGODB_URL is set"; fi
  local expect_kafka=1 expect_db=1
  [[ -n ${KAFKA_BOOTSTRAP_SERVERS:-} ]] && expect_kafka=0
  [[ -n ${MONGODB_URL:-} ]] && expect_db=0
  local db_up=0
  for name in "${ALL_SERVICES[@]}"; do
    port=$(service_port "$name")
    if [[ $name == postgres ]]; then
      if pid=$(running_pid postgres); then
        if probe_postgres; then state="socket answers"; else state="NOT ANSWERING"; ok=1; fi
        printf '%-9s running  pid %-7s %s %s\n' "$name" "$pid" "$PG_DIR/.s.PGSQL.$PG_PORT" "$state"
      elif [[ $DB_BACKEND == postgresql && $(mongo_impl) == ferretdb ]]; then
        printf '%-9s stopped\n' "$name"
        [[ $expect_db == 1 ]] && ok=1
      fi
      continue
    fi
    if pid=$(running_pid "$name"); then
      if port_open "$port"; then state="port answers"; else state="PORT NOT ANSWERING"; fi
      printf '%-9s running  pid %-7s 127.0.0.1:%-6s %s\n' "$name" "$pid" "$port" "$state"
      if [[ $state != "port answers" ]]; then ok=1; fi
      [[ $name != kafka ]] && db_up=1
    else
      [[ $name == mongod && $(mongo_impl) != mongod ]] && continue
      [[ $name == ferretdb && $(mongo_impl) != ferretdb ]] && continue
      printf '%-9s stopped\n' "$name"
      if [[ $name == kafka && $expect_kafka == 1 ]]; then ok=1; fi
    fi
  done
  if [[ $expect_db == 1 && $db_up == 0 ]]; then ok=1; fi
  return $ok
}

cmd_env() {
  if [[ -n ${KAFKA_BOOTSTRAP_SERVERS:-} ]]; then
    # External broker: what the caller set is what clients use.
    local v
    for v in KAFKA_BOOTSTRAP_SERVERS KAFKA_SECURITY_PROTOCOL KAFKA_SASL_MECHANISM \
      KAFKA_SSL_CA_FILE KAFKA_SASL_USERNAME KAFKA_SASL_PASSWORD_FILE HALA_KAFKA_SECRETS_DIR; do
      if [[ -n ${!v:-} ]]; then echo "$v=${!v}"; fi
    done
  else
    echo "KAFKA_BOOTSTRAP_SERVERS=localhost:$KAFKA_PORT"
    echo "KAFKA_SECURITY_PROTOCOL=SASL_SSL"
    echo "KAFKA_SASL_MECHANISM=SCRAM-SHA-512"
    echo "KAFKA_SSL_CA_FILE=$TLS_DIR/ca.pem"
    # A shell's principal is the admin CLI's (`hala`); every principal (hala-setup, the
    # super user for set-up, and one per service) has its password in
    # HALA_KAFKA_SECRETS_DIR/<user>.password.
    echo "KAFKA_SASL_USERNAME=hala-admin"
    echo "KAFKA_SASL_PASSWORD_FILE=$SECRETS_DIR/hala-admin.password"
    echo "HALA_KAFKA_SECRETS_DIR=$SECRETS_DIR"
  fi
  echo "MONGODB_URL=${MONGODB_URL:-mongodb://127.0.0.1:$MONGO_PORT/}"
}

cmd_logs() {
  local follow=() names=() a
  for a in "$@"; do
    case $a in
      -f | --follow) follow=(-F) ;;
      kafka | ferretdb | postgres | mongod) names+=("$a") ;;
      *) die "logs: unknown argument '$a' (kafka, ferretdb, postgres, mongod, -f)" ;;
    esac
  done
  ((${#names[@]})) || names=("${ALL_SERVICES[@]}")
  local files=() n
  for n in "${names[@]}"; do [[ -f $(log_file "$n") ]] && files+=("$(log_file "$n")"); done
  ((${#files[@]})) || die "no logs yet in $LOGS_DIR"
  tail -n "${HALA_LOG_LINES:-50}" "${follow[@]}" "${files[@]}"
}

cmd_reset() {
  cmd_down
  local d
  for d in kafka ferretdb mongod logs; do rm -rf "${RUN_DIR:?}/$d"; done
  rm -rf "${PG_DIR:?}"
  say "wiped runtime data and logs under $RUN_DIR"
}

cmd_up() {
  local fresh=0 a
  for a in "$@"; do
    case $a in
      --fresh) fresh=1 ;;
      *) die "up: unknown argument '$a'" ;;
    esac
  done
  ((fresh)) && cmd_reset
  local t0 kafka=0 mongo=0
  t0=$(now_ms)
  mkdir -p "$PIDS_DIR" "$LOGS_DIR"
  kafka_wanted && kafka=1
  mongo_wanted && mongo=1

  # 1. Artifacts (first run only): Maven download and Go build run side by side.
  local mvn_job=""
  if ((kafka)); then
    ensure_kafka_libs &
    mvn_job=$!
  fi
  local ok=1
  if ((mongo)) && [[ $(mongo_impl) == ferretdb ]]; then (ensure_ferretdb_bin) || ok=0; fi
  if [[ -n $mvn_job ]] && ! wait "$mvn_job"; then ok=0; fi
  ((ok)) || exit 1

  # 2. Start both, then wait for both (Kafka needs a few seconds; the database less).
  local ts
  ts=$(now_ms)
  if ((kafka)); then
    start_kafka
    STARTED+=(kafka)
  fi
  if ((mongo)); then
    start_mongo
    STARTED+=("$(mongo_impl)")
  fi
  if ((mongo)); then wait_mongo "$ts"; fi
  if ((kafka)); then wait_kafka "$ts"; fi
  if [[ -z ${KAFKA_BOOTSTRAP_SERVERS:-} ]] && running_pid kafka >/dev/null; then
    need_project_python
    setup_kafka
  fi
  say "up in $(elapsed "$t0"); for the app:"
  cmd_env | sed 's/^/  /'
}

# ---------------------------------------------------------------- main
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

main() {
  local cmd=${1:-}
  [[ $# -gt 0 ]] && shift
  case $cmd in
    up | down | reset)
      mkdir -p "$RUN_DIR"
      RUN_DIR=$(cd "$RUN_DIR" && pwd)
      PIDS_DIR=$RUN_DIR/pids
      LOGS_DIR=$RUN_DIR/logs
      TLS_DIR=$RUN_DIR/tls
      SECRETS_DIR=$RUN_DIR/secrets/kafka
      set_pg_dir
      if command -v flock >/dev/null 2>&1; then
        exec 9>"$RUN_DIR/.lock"
        flock -w 300 9 || die "another infra.sh holds $RUN_DIR/.lock"
      fi
      "cmd_$cmd" "$@"
      ;;
    status | env | logs)
      if [[ -d $RUN_DIR ]]; then
        RUN_DIR=$(cd "$RUN_DIR" && pwd)
        PIDS_DIR=$RUN_DIR/pids
        LOGS_DIR=$RUN_DIR/logs
        TLS_DIR=$RUN_DIR/tls
        SECRETS_DIR=$RUN_DIR/secrets/kafka
      fi
      set_pg_dir
      "cmd_$cmd" "$@"
      ;;
    -h | --help | help) usage ;;
    *)
      usage >&2
      exit 2
      ;;
  esac
}

main "$@"
