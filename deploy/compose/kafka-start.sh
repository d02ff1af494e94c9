#!/usr/bin/env bash
# docker-compose.yml's broker: the apache/kafka image's binaries, started with what
# deploy/compose/init.py prepared in /shared/kafka (the same SASL_SSL + SCRAM + ACL layout as
# deploy/local/infra.sh). The first start formats the storage with the broker's own SCRAM users
# (salted: no password in argv); later starts reuse the data volume.
set -euo pipefail
K=/shared/kafka
if [[ ! -f /var/lib/kafka/data/meta.properties ]]; then
  mapfile -t scram <"$K/scram-args"
  # The format tool prints the credentials it stores: its output goes nowhere.
  /opt/kafka/bin/kafka-storage.sh format --standalone -t "$(tr -d '\n' <"$K/cluster-id")" \
    -c "$K/server.properties" --ignore-formatted "${scram[@]}" >/dev/null
fi
exec /opt/kafka/bin/kafka-server-start.sh "$K/server.properties"
