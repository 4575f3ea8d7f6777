#!/usr/bin/env bash
# The production stack, end to end, on this machine:
#   1. a Docker engine (started here if none answers) and the images: the base image,
#      PostgreSQL and Redis (official ones, or stand-ins built from Debian's packages
#      where Docker Hub cannot be reached) and the benignity image;
#   2. docker-compose.yml up: PostgreSQL, Redis, migrate, the API and two CPU workers;
#   3. one experiment of each kind through the published API with a bearer token;
#   4. a third CPU worker from deploy/worker.compose.yml, as a second host would run it
#      (only the image, DATABASE_URL and BROKER_URL), then a census during which one
#      worker container is killed; every experiment must still succeed, complete;
#   5. a one-line summary, and everything torn down.
#
#   deploy/smoke.sh               the smoke test
#   deploy/smoke.sh --speedup     also time one census on 1, 2 and 3 worker containers
#
# Needs root where it must install or start Docker (Debian: docker.io, docker-compose,
# debootstrap). Network: Debian's mirror and PyPI only. SMOKE_DOCKER_ROOT (default
# /var/tmp/benignity-docker) keeps the engine's data, and so the layer cache, between runs.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SPEEDUP=0
[[ "${1:-}" == "--speedup" ]] && SPEEDUP=1

PROJECT=benignity-smoke
HOST2=benignity-smoke-host2
DROOT=${SMOKE_DOCKER_ROOT:-/var/tmp/benignity-docker}
WORK=$(mktemp -d)
STARTED_ENGINE=0
T0=$(date +%s)
TIMES=()
STEP_T=$T0
SUMMARY=""

log() { printf '[smoke %4ds] %s\n' "$(($(date +%s) - T0))" "$*" >&2; }
step_done() {  # name: record how long the step took
  local now; now=$(date +%s)
  TIMES+=("$1 $((now - STEP_T))s")
  log "$1 took $((now - STEP_T)) s"
  STEP_T=$now
}
die() { log "FAIL: $*"; exit 1; }

# --- 1. engine --------------------------------------------------------------------------

engine() {
  if docker info >/dev/null 2>&1; then
    log "using the running Docker engine"
    return
  fi
  [[ $(id -u) == 0 ]] || die "no Docker engine answers, and starting one needs root"
  local need=()
  command -v dockerd >/dev/null || need+=(docker.io)
  command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1 || need+=(docker-compose)
  command -v debootstrap >/dev/null || need+=(debootstrap)
  if ((${#need[@]})); then
    log "installing ${need[*]} from Debian's packages"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >"$WORK/apt.log" 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >"$WORK/apt.log" 2>&1; } \
      || die "apt-get install ${need[*]} failed: $(tail -3 "$WORK/apt.log")"
  fi
  mkdir -p "$DROOT"
  export DOCKER_HOST="unix://$DROOT/docker.sock"
  if ! docker info >/dev/null 2>&1; then
    log "starting dockerd (data root $DROOT, no iptables, no default bridge)"
    dockerd --data-root "$DROOT/data" --exec-root "$DROOT/exec" --pidfile "$DROOT/dockerd.pid" \
      -H "$DOCKER_HOST" --iptables=false --ip6tables=false --bridge=none >"$DROOT/dockerd.log" 2>&1 &
    STARTED_ENGINE=1
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null 2>&1 || die "dockerd did not start: $(tail -5 "$DROOT/dockerd.log")"
  fi
}

compose() {
  if docker compose version >/dev/null 2>&1; then docker compose "$@"; else docker-compose "$@"; fi
}

# --- images ---------------------------------------------------------------------------------

have_image() { docker image inspect "$1" >/dev/null 2>&1; }
pull() { timeout 60 docker pull -q "$1" >/dev/null 2>&1; }

debian_mirror() {
  local uri
  uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [[ -n "$uri" ]] || uri=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  echo "${uri:-http://deb.debian.org/debian}"
}

base_image() {
  have_image debian:bookworm-slim && return
  pull debian:bookworm-slim && return
  log "Docker Hub unreachable: debian:bookworm-slim from debootstrap (about 80 s)"
  command -v debootstrap >/dev/null || die "debootstrap is needed to make the base image"
  debootstrap --variant=minbase bookworm "$WORK/rootfs" "$(debian_mirror)" >"$WORK/debootstrap.log" 2>&1 \
    || die "debootstrap failed: $(tail -3 "$WORK/debootstrap.log")"
  echo 'Acquire::Check-Valid-Until "false";' >"$WORK/rootfs/etc/apt/apt.conf.d/99snapshot"
  tar -C "$WORK/rootfs" -c . | docker import - debian:bookworm-slim >/dev/null
  rm -rf "$WORK/rootfs"
}

# The official image when it can be pulled, else a stand-in from Debian's packages
# (deploy/standins/NAME.Dockerfile); prints the image to use.
service_image() {
  local official=$1 name=${1%%:*}
  if have_image "$official" || pull "$official"; then
    echo "$official"
  else
    docker build -q --network host -t "benignity-standin/$official" \
      -f "deploy/standins/$name.Dockerfile" deploy/standins >/dev/null 2>"$WORK/$name.log" \
      || { cat "$WORK/$name.log" >&2; return 1; }
    echo "benignity-standin/$official"
  fi
}

service_images() {
  export POSTGRES_IMAGE REDIS_IMAGE
  POSTGRES_IMAGE=$(service_image postgres:16)
  REDIS_IMAGE=$(service_image redis:7)
  log "PostgreSQL image $POSTGRES_IMAGE, Redis image $REDIS_IMAGE"
}

# A setting from `pip config list` (any scope, including pip's environment variables).
pip_setting() {
  { python3 -m pip config list 2>/dev/null || pip config list 2>/dev/null || true; } \
    | sed -n "s/^[^=]*\.$1='\(.*\)'\$/\1/p"
}

# The CA bundle pip uses here, and the torch wheel pip would install, into the context.
build_context() {
  local cert links wheel
  cert=${PIP_CERT:-$(pip_setting cert | head -1)}
  if [[ -n "$cert" && -f "$cert" ]]; then
    cp "$cert" deploy/context/ca/pip-ca.crt
    log "CA certificates from $cert"
  fi
  links="${PIP_FIND_LINKS:-} $(pip_setting find-links)"
  for dir in $links; do
    wheel=$(ls "$dir"/torch-2.13.0+cpu-cp311-*.whl 2>/dev/null | head -1 || true)
    if [[ -n "$wheel" ]]; then
      [[ -f "deploy/context/wheels/$(basename "$wheel")" ]] || cp "$wheel" deploy/context/wheels/
      log "torch from $wheel"
      break
    fi
  done
}

# --- stack ---------------------------------------------------------------------------------

secret() { python3 -c 'import secrets; print(secrets.token_hex(16))'; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Containers, networks and volumes of both projects (this run's, or one left behind).
remove_projects() {
  local p ids
  host2 down -v -t 5 >/dev/null 2>&1
  compose -p "$PROJECT" down -v -t 5 >/dev/null 2>&1
  for p in "$HOST2" "$PROJECT"; do
    ids=$(docker ps -aq --filter "label=com.docker.compose.project=$p")
    [[ -z "$ids" ]] || docker rm -f $ids >/dev/null 2>&1
    ids=$(docker network ls -q --filter "label=com.docker.compose.project=$p")
    [[ -z "$ids" ]] || docker network rm $ids >/dev/null 2>&1
    ids=$(docker volume ls -q --filter "label=com.docker.compose.project=$p")
    [[ -z "$ids" ]] || docker volume rm -f $ids >/dev/null 2>&1
  done
  return 0
}

teardown() {
  local rc=$?
  set +e
  if docker info >/dev/null 2>&1; then
    if ((rc != 0)); then
      log "logs of the failed run:"
      compose -p "$PROJECT" logs --tail 40 >&2 2>/dev/null
    fi
    log "tearing down"
    remove_projects
  fi
  if ((STARTED_ENGINE)); then
    kill "$(cat "$DROOT/dockerd.pid")" 2>/dev/null
    for _ in $(seq 30); do [[ -e "$DROOT/dockerd.pid" ]] || break; sleep 1; done
  fi
  rm -rf "$WORK"
  if ((rc == 0)); then
    local now; now=$(date +%s)
    TIMES+=("teardown $((now - STEP_T))s")
    echo "smoke: PASS in $((now - T0)) s | $SUMMARY | steps: ${TIMES[*]}"
  fi
  exit $rc
}
trap teardown EXIT

export POSTGRES_PASSWORD; POSTGRES_PASSWORD=$(secret)
TOKEN=$(secret)
export API_TOKENS="smoke:$TOKEN"
export API_PORT; API_PORT=$(free_port)
export BUILD_NETWORK=host WORKER_CONCURRENCY=1 COMPOSE_PROJECT_NAME=$PROJECT
URL="http://127.0.0.1:$API_PORT"
client() { python3 deploy/smoke_client.py "$1" "$URL" "$TOKEN" "${@:2}"; }
# compose for the "second host": deploy/worker.compose.yml with only the two addresses
host2() {
  DATABASE_URL="postgresql+psycopg://benignity:$POSTGRES_PASSWORD@postgres:5432/benignity" \
    BROKER_URL=redis://redis:6379/0 \
    compose -p "$HOST2" -f deploy/worker.compose.yml -f "$WORK/attach.yml" "$@"
}

cat >"$WORK/attach.yml" <<EOF
# the "second host" joins the stack's network (a real one would use addresses)
networks:
  default:
    external: true
    name: ${PROJECT}_default
EOF

engine
step_done engine
base_image
service_images
build_context
log "building the benignity image"
compose -p "$PROJECT" build migrate >"$WORK/build.log" 2>&1 || die "build failed: $(tail -20 "$WORK/build.log")"
step_done images

remove_projects  # anything an interrupted earlier run left
log "starting PostgreSQL, Redis, migrate, the API and 2 CPU workers"
compose -p "$PROJECT" up -d --scale worker-cpu=2 postgres redis migrate api worker-cpu >"$WORK/up.log" 2>&1 \
  || die "compose up failed: $(tail -20 "$WORK/up.log")"
client wait-ready 2
step_done up

KINDS=$(client kinds)
log "$KINDS"
step_done kinds

log "a third CPU worker from deploy/worker.compose.yml (a second host)"
host2 up -d worker >"$WORK/host2.log" 2>&1 || die "worker host up failed: $(tail -20 "$WORK/host2.log")"
client wait-ready 3
CENSUS=$(client census 200)
while :; do
  read -r status progress <<<"$(client progress "$CENSUS")"
  done_=${progress%/*}; total=${progress#*/}
  [[ $status == running && $((done_ * 5)) -ge $total ]] && break
  [[ $status == succeeded || $status == failed ]] && die "census ended ($status $progress) before the kill"
  sleep 0.5
done
VICTIM=$(docker ps -q --filter "label=com.docker.compose.project=$PROJECT" \
  --filter "label=com.docker.compose.service=worker-cpu" | head -1)
VNAME=$(docker inspect -f '{{.Name}}' "$VICTIM")
docker kill "$VICTIM" >/dev/null
log "killed ${VNAME#/} at census progress $progress"
client wait "$CENSUS" 600 >/dev/null
CENSUS_OK=$(client check-census "$CENSUS")
log "after the kill: $CENSUS_OK"
step_done kill-mid-census

if ((SPEEDUP)); then
  log "speed-up: one census on 1, 2 and 3 worker containers"
  host2 stop -t 20 worker >/dev/null 2>&1
  SPEED=()
  for n in 1 2 3; do
    compose -p "$PROJECT" up -d --no-deps --no-recreate --scale worker-cpu=$n worker-cpu >>"$WORK/up.log" 2>&1
    client wait-ready $n
    start=$(date +%s.%N)
    id=$(client census 1500 40,160,640)
    client wait "$id" 1200 >/dev/null
    client check-census "$id" >/dev/null
    SPEED+=("$n:$(python3 -c "print(f'{$(date +%s.%N) - $start:.1f}')")")
    log "census of 4500 cones on $n worker container(s): ${SPEED[-1]#*:} s"
  done
  SPEEDUP_LINE=$(python3 - "${SPEED[@]}" <<'EOF'
import sys
t = {int(a.split(":")[0]): float(a.split(":")[1]) for a in sys.argv[1:]}
print("speed-up of one census (4500 cones, widths 40/160/640): " + ", ".join(
    f"{n} worker{'s' if n > 1 else ''} {t[n]:.1f} s ({t[1] / t[n]:.2f}x)" for n in sorted(t)))
EOF
)
  log "$SPEEDUP_LINE"
  step_done speedup
fi

SUMMARY="$KINDS | killed ${VNAME#/} mid-census (3 workers), then $CENSUS_OK"
if [[ -n "${SPEEDUP_LINE:-}" ]]; then SUMMARY+=" | $SPEEDUP_LINE"; fi
# the summary line comes from teardown, once nothing is left running
