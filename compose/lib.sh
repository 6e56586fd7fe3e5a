# shellcheck shell=bash
# Shared by the ops scripts in compose/ (sourced, not run). Sets:
#   ROOT         the repository (the checkout on the VPS)
#   COMPOSE_DIR  compose/
#   ENV_FILE     compose/.env (LOCALAI_ENV_FILE to use another), loaded into the environment:
#                variables already set in the environment win, as with Docker Compose
#   ENGINE       docker or podman (ENGINE=... to choose)
#   COMPOSE      the compose command (COMPOSE="..." to choose): docker compose, docker-compose
#                or podman-compose, with the production file and the project name
#   DATA_DIR, BACKUP_DIR, PROJECT
# and the functions below.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
COMPOSE_DIR="$ROOT/compose"
COMPOSE_FILE=${COMPOSE_FILE:-$COMPOSE_DIR/docker-compose.production.yml}
ENV_FILE=${LOCALAI_ENV_FILE:-$COMPOSE_DIR/.env}

say() { printf '%s\n' "$*"; }
warn() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; }
die() { warn "$*"; exit 1; }

# KEY=VALUE lines only; nothing in the file is executed. Surrounding quotes are dropped.
load_env() {
  local file=$1 line key value
  [ -f "$file" ] || return 0
  while IFS= read -r line || [ -n "$line" ]; do
    [[ "$line" =~ ^[[:space:]]*([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]] || continue
    key=${BASH_REMATCH[1]}
    value=${BASH_REMATCH[2]}
    value=${value%$'\r'}
    if [[ "$value" =~ ^\"(.*)\"$ || "$value" =~ ^\'(.*)\'$ ]]; then value=${BASH_REMATCH[1]}; fi
    [ -n "${!key+set}" ] || export "$key=$value"
  done < "$file"
}
abs_path() {  # relative paths in .env are relative to compose/, as in the compose file
  case "$1" in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$COMPOSE_DIR/$1" ;; esac
}
# What the scripts derive from the settings (again after a restore brings .env back).
derive_settings() {
  PROJECT=${LOCALAI_PROJECT:-localai-studio}
  DATA_DIR=$(abs_path "${LOCALAI_DATA_DIR:-../data}")
  BACKUP_DIR=$(abs_path "${LOCALAI_BACKUP_DIR:-/root/backups/localai}")
  IMAGE=${LOCALAI_IMAGE:-localai-studio:latest}
}
load_env "$ENV_FILE"
export LOCALAI_ENV_FILE="$ENV_FILE"
derive_settings

if [ -z "${ENGINE:-}" ]; then
  if command -v docker >/dev/null 2>&1; then ENGINE=docker
  elif command -v podman >/dev/null 2>&1; then ENGINE=podman
  else ENGINE=docker; fi
fi
if [ -z "${COMPOSE:-}" ]; then
  if [ "$ENGINE" = docker ] && docker compose version >/dev/null 2>&1; then COMPOSE="docker compose"
  elif [ "$ENGINE" = docker ] && command -v docker-compose >/dev/null 2>&1; then COMPOSE=docker-compose
  elif command -v podman-compose >/dev/null 2>&1; then COMPOSE=podman-compose
  else COMPOSE="docker compose"; fi
fi
compose() {
  local env_args=()
  [ -f "$ENV_FILE" ] && env_args=(--env-file "$ENV_FILE")
  # shellcheck disable=SC2086  # COMPOSE may be two words ("docker compose")
  # COMPOSE_OVERRIDE (.env): an overlay such as docker-compose.cluster.yml, relative to compose/
  $COMPOSE "${env_args[@]}" -p "$PROJECT" -f "$COMPOSE_FILE" ${COMPOSE_OVERRIDE:+-f "$(abs_path "$COMPOSE_OVERRIDE")"} "$@"
}

# The project's containers: "name service state health" a line (health: healthy, unhealthy,
# starting or none). Docker and podman both label compose containers with the project/service.
containers() {
  local id name service state health
  for id in $($ENGINE ps -aq --filter "label=com.docker.compose.project=$PROJECT"); do
    $ENGINE inspect --format \
      '{{.Name}} {{index .Config.Labels "com.docker.compose.service"}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}' \
      "$id" 2>/dev/null | while read -r name service state health; do
        printf '%s %s %s %s\n' "${name#/}" "$service" "$state" "${health:-none}"
      done
  done
}

# Podman without systemd never runs healthchecks on its own: run them now (no-op for docker).
run_healthchecks() {
  [ "$ENGINE" = podman ] || return 0
  local id
  for id in $($ENGINE ps -q --filter "label=com.docker.compose.project=$PROJECT"); do
    $ENGINE healthcheck run "$id" >/dev/null 2>&1 || true
  done
}

# `localai-studio` for the ops commands: STUDIO_CLI if set (a command, or "image"), else the
# checkout's .venv, else the studio image (as root, no network, the paths it needs mounted where
# they are on the host).
studio_cli() {
  local catalog=${STUDIO_CATALOG:-}
  case "$catalog" in /data/*) catalog="$DATA_DIR/${catalog#/data/}" ;; esac
  if [ -n "${STUDIO_CLI:-}" ] && [ "$STUDIO_CLI" != image ]; then
    STUDIO_DATA_DIR="$DATA_DIR" STUDIO_CATALOG="$catalog" $STUDIO_CLI "$@"
  elif [ -z "${STUDIO_CLI:-}" ] && [ -x "$ROOT/.venv/bin/localai-studio" ]; then
    STUDIO_DATA_DIR="$DATA_DIR" STUDIO_CATALOG="$catalog" "$ROOT/.venv/bin/localai-studio" "$@"
  else
    mkdir -p "$DATA_DIR" "$BACKUP_DIR"
    local dirs=("$ROOT" "$DATA_DIR" "$BACKUP_DIR") arg dir known mounts=()
    for arg in "$@" "$ENV_FILE"; do  # an archive (restore) or .env outside those folders
      [ -f "$arg" ] || continue
      dir=$(cd "$(dirname "$arg")" && pwd)
      for known in "${dirs[@]}"; do
        case "$dir/" in "$known"/*) dir="" ; break ;; esac
      done
      [ -n "$dir" ] && dirs+=("$dir")
    done
    for dir in "${dirs[@]}"; do mounts+=(-v "$dir:$dir"); done
    $ENGINE run --rm --user 0 --network none --read-only --tmpfs /tmp "${mounts[@]}" -w "$PWD" \
      -e STUDIO_DATA_DIR="$DATA_DIR" -e STUDIO_CATALOG="$catalog" "$IMAGE" localai-studio "$@"
  fi
}

# POST {"text": ...} to STUDIO_ALERT_WEBHOOK_URL (Slack-compatible), when one is set.
alert() {
  local text=$1
  [ -n "${STUDIO_ALERT_WEBHOOK_URL:-}" ] || return 0
  local body
  body=$(python3 -c 'import json,sys; print(json.dumps({"text": sys.argv[1]}))' "$text")
  curl -fsS -m 10 -X POST -H 'Content-Type: application/json' --data "$body" "$STUDIO_ALERT_WEBHOOK_URL" \
    >/dev/null || warn "could not post the alert to STUDIO_ALERT_WEBHOOK_URL"
}
