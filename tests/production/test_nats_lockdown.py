"""The production and cluster NATS configs with their users and route certificates (issue 21, item 11):
each studio container gets its own NATS password only, nats-server accepts the generated users, and a
cluster node requires a certificate of the cluster's CA on its routes."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml  # type: ignore[import-untyped]  # PyYAML, with schemathesis (test extra)

from events.server import find_binary
from studio.runtime.settings import Settings
from tests.production.test_cluster_compose import COMPOSE, SERVER_ENV, merged, nats_dir, studio_services


def test_every_studio_container_holds_its_own_nats_password_only() -> None:
    compose = yaml.safe_load((COMPOSE / "docker-compose.production.yml").read_text())
    for name in studio_services(compose):
        service = compose["services"][name]
        mounted = {s["target"] for s in service["secrets"]}
        own = {f"/run/secrets/nats/{name}"}
        assert mounted == (own | {"/run/secrets/nats/ops"} if name == "monitor" else own), name
        env = {**compose["x-studio-env"], **service.get("environment", {})}
        assert env["STUDIO_NATS_CREDENTIALS_DIR"] == "/run/secrets/nats", name
    assert set(compose["secrets"]) == {f"nats_{n}" for n in studio_services(compose)} | {"nats_ops"}
    nats_volumes = compose["services"]["nats"]["volumes"]
    assert any(v.endswith(":/etc/nats/auth.conf:ro") for v in nats_volumes), nats_volumes


def test_the_production_nats_config_requires_the_generated_users(tmp_path: Path) -> None:
    etc = nats_dir(tmp_path)
    (etc / "nats-server.conf").write_text((COMPOSE / "nats" / "nats-server.conf").read_text())
    checked = subprocess.run([find_binary(), "-c", str(etc / "nats-server.conf"), "-t"], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    (etc / "auth.conf").unlink()
    missing = subprocess.run([find_binary(), "-c", str(etc / "nats-server.conf"), "-t"], capture_output=True, text=True)
    assert missing.returncode != 0, "without its users the server must not start open"


def test_the_cluster_overlay_mounts_the_users_and_the_route_certificates() -> None:
    nats = merged(SERVER_ENV)["services"]["nats"]
    assert {"/etc/nats/auth.conf:ro", "/etc/nats/tls:ro"} <= {v.split(":", 1)[1] for v in nats["volumes"]}
    assert nats["environment"]["NATS_TLS_CA"] == "/etc/nats/tls/ca.pem"


def test_a_cluster_node_without_route_certificates_does_not_start(tmp_path: Path) -> None:
    etc = nats_dir(tmp_path)
    env = {
        **os.environ,
        **{k: SERVER_ENV[k] for k in ("NATS_SERVER_NAME", "NATS_ROUTE_1", "NATS_ROUTE_2")},
        "NATS_TLS_CERT": str(etc / "tls" / "missing.pem"),
        "NATS_TLS_KEY": str(etc / "tls" / "node-key.pem"),
        "NATS_TLS_CA": str(etc / "tls" / "ca.pem"),
    }
    result = subprocess.run(
        [find_binary(), "-c", str(etc / "nats-server.conf"), "-t"], env=env, capture_output=True, text=True
    )
    assert result.returncode != 0, result.stdout


def test_in_a_cluster_every_studio_container_reaches_nats_over_tls_with_its_own_password() -> None:
    compose = merged(SERVER_ENV)
    for name in studio_services(compose):
        service = compose["services"][name]
        mounted = {s["target"] for s in service["secrets"]}
        own = {f"/run/secrets/nats/{name}", "/run/secrets/nats-ca.pem"}
        assert mounted == (own | {"/run/secrets/nats/ops"} if name == "monitor" else own), name
        settings = Settings.from_env({k: str(v) for k, v in service["environment"].items()})
        assert settings.nats_ca == Path("/run/secrets/nats-ca.pem"), name
        assert settings.nats_credentials == Path("/run/secrets/nats"), name
    assert compose["secrets"]["nats_ca"]["file"] == "./secrets/nats-tls/ca.pem"
