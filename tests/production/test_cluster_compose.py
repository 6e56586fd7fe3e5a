"""The several-servers overlay (compose/docker-compose.cluster.yml) read the way compose reads it: laid
over the production file with one server's .env, every studio container gets all NATS nodes, three
copies of the stream and the shared database, in settings the studio accepts; the NATS cluster config
passes nats-server's own check with that server's name and routes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML, with schemathesis (test extra)

from events.server import find_binary
from functions import NAMES, load
from studio.runtime.nats_users import every_user, write_credentials
from studio.runtime.settings import Settings

COMPOSE = Path(__file__).resolve().parents[2] / "compose"
SERVER_ENV = {  # one server's .env, as the docs' "Several servers" (docs/operators/several-servers.md) describe it
    "LOCALAI_PRIVATE_IP": "10.0.0.1",
    "NATS_SERVER_NAME": "vps-1",
    "NATS_ROUTE_1": "nats-route://10.0.0.2:6222",
    "NATS_ROUTE_2": "nats-route://10.0.0.3:6222",
    "LOCALAI_NATS_URLS": "nats://10.0.0.1:4222,nats://10.0.0.2:4222,nats://10.0.0.3:4222",
    "STUDIO_DATABASE_URL": "postgresql://studio:secret@10.0.0.1:5432/studio",
    "POSTGRES_PASSWORD": "secret",
}
VARIABLE = re.compile(r"\$\{(\w+)(?::([?-])([^}]*))?\}")


def substitute(value: Any, env: dict[str, str]) -> Any:
    """Compose's `${VAR}`, `${VAR:-default}` and `${VAR:?error}`."""
    if isinstance(value, dict):
        return {k: substitute(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        name, kind, rest = match.groups()
        if env.get(name):
            return env[name]
        if kind == "?":
            raise ValueError(f"{name}: {rest}")
        return rest if kind == "-" else ""

    return VARIABLE.sub(one, value)


def merged(env: dict[str, str]) -> dict[str, Any]:
    """The production file with the overlay laid over it (mappings merge key by key, lists replace)."""

    def merge(base: Any, over: Any) -> Any:
        if isinstance(base, dict) and isinstance(over, dict):
            return {k: merge(base[k], v) if k in base else v for k, v in over.items()} | {
                k: v for k, v in base.items() if k not in over
            }
        return over

    production = yaml.safe_load((COMPOSE / "docker-compose.production.yml").read_text())
    overlay = yaml.safe_load((COMPOSE / "docker-compose.cluster.yml").read_text())
    return substitute(merge(production, overlay), env)


def studio_services(compose: dict[str, Any]) -> list[str]:
    return [name for name, s in compose["services"].items() if "localai-studio" in " ".join(s.get("command", []))]


def test_every_studio_container_gets_the_cluster_and_the_shared_database() -> None:
    compose = merged(SERVER_ENV)
    services = studio_services(compose)
    assert sorted(services) == sorted(
        ["gateway", "health", "monitor", "purchase", "install", "webhook", "chat", "accounts"]
    ), "a studio service of the production file has no cluster settings in the overlay"
    for name in services:
        env = {k: str(v) for k, v in compose["services"][name]["environment"].items()}
        assert env["STUDIO_DATABASE_URL"] == SERVER_ENV["STUDIO_DATABASE_URL"], name
        settings = Settings.from_env(env)
        assert settings.nats_url == SERVER_ENV["LOCALAI_NATS_URLS"], name
        assert settings.events_replicas == 3, name
    gateway_env = compose["services"]["gateway"]["environment"]
    assert "STUDIO_SECRET_KEY" not in gateway_env, "the gateway's cookie key must come from .env, the same everywhere"
    assert compose["services"]["nats"]["ports"] == ["10.0.0.1:4222:4222", "10.0.0.1:6222:6222"]
    assert compose["services"]["postgres"]["profiles"] == ["database"]


def test_a_server_without_its_cluster_settings_is_refused_with_what_to_set() -> None:
    for missing in ("LOCALAI_NATS_URLS", "STUDIO_DATABASE_URL", "NATS_SERVER_NAME", "LOCALAI_PRIVATE_IP"):
        with pytest.raises(ValueError, match=missing):
            merged({k: v for k, v in SERVER_ENV.items() if k != missing})


TLS_FILES = {"NATS_TLS_CERT": "node.pem", "NATS_TLS_KEY": "node-key.pem", "NATS_TLS_CA": "ca.pem"}


def nats_dir(tmp_path: Path) -> Path:
    """/etc/nats as the overlay mounts it: the config, the generated users (auth.conf) and route certificates."""
    etc = tmp_path / "etc-nats"
    write_credentials(etc / "secrets", every_user([load(n) for n in NAMES]))
    (etc / "nats-server.conf").write_text((COMPOSE / "nats" / "nats-cluster.conf").read_text())
    (etc / "auth.conf").write_text((etc / "secrets" / "auth.conf").read_text())
    subprocess.run([str(COMPOSE / "nats" / "cluster-certs"), str(etc / "tls"), "10.0.0.1"], check=True)
    return etc


def test_the_nats_cluster_config_passes_nats_servers_check(tmp_path: Path) -> None:
    etc = nats_dir(tmp_path)
    tls = {
        "NATS_TLS_CERT": str(etc / "tls" / "node.pem"),
        "NATS_TLS_KEY": str(etc / "tls" / "node-key.pem"),
        "NATS_TLS_CA": str(etc / "tls" / "ca.pem"),
    }
    env = {**os.environ, **tls, **{k: SERVER_ENV[k] for k in ("NATS_SERVER_NAME", "NATS_ROUTE_1", "NATS_ROUTE_2")}}
    conf = etc / "nats-server.conf"
    result = subprocess.run([find_binary(), "-c", str(conf), "-t"], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    broken = subprocess.run(
        [find_binary(), "-c", str(conf), "-t"],
        env={k: v for k, v in env.items() if k != "NATS_ROUTE_2"},
        capture_output=True,
        text=True,
    )
    assert broken.returncode != 0, "a node without its routes must not start"


ROOT = COMPOSE.parent
PODMAN_COMPOSE = str(Path(sys.executable).parent / "podman-compose")  # the test extra; --dry-run needs no podman


def documented_env(tmp_path: Path, *, drop: tuple[str, ...] = ()) -> Path:
    """compose/.env as the docs' "Several servers" step 3 makes it: .env.example, then the step's lines."""
    readme = (ROOT / "docs" / "operators" / "several-servers.md").read_text()
    step = readme[readme.index("3. **`.env` on each server**") :]
    block = step[step.index("```bash") + len("```bash") : step.index("```", step.index("```bash") + 7)]
    lines = [ln.strip() for ln in block.splitlines() if ln.strip() and not ln.strip().startswith(drop)]
    env = tmp_path / ".env"
    env.write_text((COMPOSE / ".env.example").read_text() + "\n" + "\n".join(lines) + "\n")
    return env


def compose_config(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    config: dict[str, Any] = yaml.safe_load(result.stdout[result.stdout.index("services:") :])
    return config


@pytest.mark.parametrize("postgres_here", [True, False], ids=["postgres-container-here", "managed-postgres"])
def test_the_documented_steps_give_a_config_compose_accepts_and_a_nats_node_that_starts(
    tmp_path: Path, postgres_here: bool
) -> None:
    env_file = documented_env(tmp_path, drop=() if postgres_here else ("POSTGRES_PASSWORD",))

    config = compose_config(  # step 4, as written
        PODMAN_COMPOSE,
        "--dry-run",
        "--env-file",
        str(env_file),
        "-f",
        "compose/docker-compose.production.yml",
        "-f",
        "compose/docker-compose.cluster.yml",
        "config",
    )

    for name in studio_services(config):
        settings = Settings.from_env({k: str(v) for k, v in config["services"][name]["environment"].items()})
        assert settings.nats_url == SERVER_ENV["LOCALAI_NATS_URLS"] and settings.events_replicas == 3, name
        assert settings.database_url is not None and settings.database_url.is_postgres, name
    nats = config["services"]["nats"]
    assert nats["ports"] == ["10.0.0.1:4222:4222", "10.0.0.1:6222:6222"]
    etc = nats_dir(tmp_path)  # /etc/nats as the overlay mounts it: the users and certificates step 3 made
    node_env = {
        **os.environ,
        **{k: str(v) for k, v in nats["environment"].items()},
        **{k: str(etc / "tls" / name) for k, name in TLS_FILES.items()},  # mounted at /etc/nats/tls in the container
    }
    checked = subprocess.run(
        [find_binary(), "-c", str(etc / "nats-server.conf"), "-t"],
        env=node_env,
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_ops_scripts_use_the_overlay_the_env_names(tmp_path: Path) -> None:
    env_file = documented_env(tmp_path)
    env = {**os.environ, "LOCALAI_ENV_FILE": str(env_file), "COMPOSE": f"{PODMAN_COMPOSE} --dry-run"}

    config = compose_config("bash", "-c", "source compose/lib.sh && compose config", env=env)

    assert config["services"]["nats"]["command"] == ["nats-server", "-c", "/etc/nats/nats-server.conf"]
    assert config["services"]["chat"]["environment"]["STUDIO_EVENTS_REPLICAS"] == "3"
