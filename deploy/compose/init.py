"""docker-compose.yml's one-shot `init`: prepares, in the `shared` volume, what the broker, the
database and the services need and nobody has to type in, with the same tools as the local
path (tools/pki.py, tools/kafka_setup.py, deploy/local/kafka/server.properties.template).

    python deploy/compose/init.py [--shared /shared] [--ca /ca] [--secrets /run/secrets]
                                  [--no-chown]

Writes, keeping whatever already exists (a re-run changes nothing):
- tls/: the certificates of kafka, ingest and status (their compose host names and
  localhost), signed by a CA whose key stays in its own volume (`ca`, mounted by `init` only);
  clients trust tls/ca.pem;
- kafka/: one generated password per principal (broker, controller, set-up, every service),
  the broker's server.properties (0600), the `--add-scram` arguments of its first format, its
  cluster id, and client.properties for its health check (as the set-up principal);
- mongo/keyfile: the replica set's internal key (MongoDB requires one with authentication);
- metasim.yaml: the simulator's world, signing webhooks with the operator's STATUS app secret
  and answering the handshake with the operator's verify token (from the Docker secrets), so
  that status, which refuses the simulator's published defaults, accepts them.

Ownership: the broker and the platform's containers run as uid 1000 (the Kafka image's user),
mongod as 999; every secret file is 0600 (the key file 0400).
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script from the repository mounted at /deploy/..
    sys.path.insert(0, str(REPO))

from shared.kafka_access import SETUP_PRINCIPAL  # noqa: E402
from tools import pki  # noqa: E402
from tools.kafka_setup import BROKER_USERS, SERVICE_USERS, password, scram_args  # noqa: E402
from tools.metasim.config import DEFAULT_CONFIG_PATH  # noqa: E402

TEMPLATE = REPO / "deploy" / "local" / "kafka" / "server.properties.template"
KAFKA_UID = 1000  # the apache/kafka image's appuser; the platform's containers use it too
MONGO_UID = 999  # the mongo image's mongodb user
HOSTS = {
    "kafka": ("kafka", "localhost", "127.0.0.1"),
    "ingest": ("ingest", "localhost", "127.0.0.1"),
    "status": ("status", "localhost", "127.0.0.1"),
}


def _write(path: Path, text: str, mode: int = 0o600) -> None:
    if path.exists():
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def server_properties(shared: Path) -> str:
    kafka, tls = shared / "kafka", shared / "tls"
    values = {
        "KAFKA_LISTEN_HOST": "0.0.0.0",
        "KAFKA_ADVERTISED_HOST": "kafka",
        "KAFKA_PORT": "9092",
        "KAFKA_CONTROLLER_PORT": "9093",
        "KAFKA_DATA_DIR": "/var/lib/kafka/data",
        "KAFKA_KEYSTORE": str(tls / "kafka-bundle.pem"),
        "KAFKA_TRUSTSTORE": str(tls / "ca.pem"),
        "KAFKA_BROKER_PASSWORD": password(kafka, "kafka-broker").get_secret_value(),
        "KAFKA_CONTROLLER_PASSWORD": password(kafka, "kafka-controller").get_secret_value(),
    }
    text = TEMPLATE.read_text()
    for name, value in values.items():
        text = text.replace("${" + name + "}", value)
    if "${" in text:
        raise SystemExit(f"unrendered placeholder in {TEMPLATE}")
    return text


def client_properties(shared: Path) -> str:
    secret = password(shared / "kafka", SETUP_PRINCIPAL).get_secret_value()
    return (
        "security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\n"
        "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{SETUP_PRINCIPAL}" password="{secret}";\n'
        f"ssl.truststore.type=PEM\nssl.truststore.location={shared / 'tls' / 'ca.pem'}\n"
    )


def metasim_config(secrets_dir: Path) -> str:
    config = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    config["app_secret"] = (secrets_dir / "status_app_secret").read_text().strip()
    config["verify_token"] = (secrets_dir / "status_verify_token").read_text().strip()
    return yaml.safe_dump(config, sort_keys=False)


def prepare(shared: Path, ca_dir: Path, secrets_dir: Path, chown: bool = True) -> None:
    kafka, tls, mongo = shared / "kafka", shared / "tls", shared / "mongo"
    for directory in (kafka, tls, mongo):
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name, hosts in HOSTS.items():
        pki.issue(tls, name, hosts, bundle=name == "kafka", ca_dir=ca_dir)
    for user in (*BROKER_USERS, *SERVICE_USERS):
        password(kafka, user)
    _write(
        kafka / "scram-args", "\n".join(scram_args(kafka, ("kafka-broker", SETUP_PRINCIPAL))) + "\n"
    )
    _write(kafka / "cluster-id", secrets.token_urlsafe(16)[:22] + "\n")
    _write(kafka / "server.properties", server_properties(shared))
    _write(kafka / "client.properties", client_properties(shared))
    # 6 to 1024 base64 characters, no padding (MongoDB reports trouble with '=').
    _write(mongo / "keyfile", secrets.token_urlsafe(96)[:128] + "\n", mode=0o400)
    _write(shared / "metasim.yaml", metasim_config(secrets_dir), mode=0o644)
    if chown:
        for path in (shared, kafka, tls, *kafka.iterdir(), *tls.iterdir(), shared / "metasim.yaml"):
            os.chown(path, KAFKA_UID, KAFKA_UID)
        os.chown(mongo, MONGO_UID, MONGO_UID)
        os.chown(mongo / "keyfile", MONGO_UID, MONGO_UID)
        # Everyone passes through /shared/mongo to the key file; only mongod reads it.
        mongo.chmod(0o755)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shared", type=Path, default=Path("/shared"))
    parser.add_argument("--ca", type=Path, default=Path("/ca"))
    parser.add_argument("--secrets", type=Path, default=Path("/run/secrets"))
    parser.add_argument("--no-chown", action="store_true", help="leave ownership as it is")
    args = parser.parse_args()
    prepare(args.shared, args.ca, args.secrets, chown=not args.no_chown)
    print(f"prepared {args.shared}")


if __name__ == "__main__":
    main()
