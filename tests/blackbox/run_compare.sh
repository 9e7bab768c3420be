#!/usr/bin/env bash
# Runs the black-box HTTP/1.1 suite (blackbox.py) against portico's reverse_proxy example, nginx
# and HAProxy in one go, and prints one comparison table.
#
#   bash tests/blackbox/run_compare.sh
#   PORTICO_BIN=build-bb/examples/reverse_proxy bash tests/blackbox/run_compare.sh
#
# Environment:
#   PORTICO_BIN   portico binary (default build/examples/reverse_proxy in the repository)
#   PYTHON        Python 3 interpreter (default python3)
#   RESULTS_FILE  also write the table (markdown) to this file, e.g.
#                 bench/results/blackbox-$(date +%Y%m%d).md
#   KEEP_TMP=1    keep the temporary directory (configs, logs, JSON results)
#
# All three proxies get the same settings where the suite depends on them: 1 s upstream
# connect/read/write timeouts, 1 s client header and body timeouts, HTTP/1.1 to the origin,
# the client's Host passed on, WebSocket upgrades allowed. The suite's origin answers every
# request with "Connection: close", so no proxy reuses upstream connections and each origin
# connection carries exactly what the proxy sent for one request. A proxy that is not installed
# is reported as skipped. Everything listens on 127.0.0.1 and is killed on exit.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin" # nginx and haproxy live in /usr/sbin

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PORTICO_BIN=${PORTICO_BIN:-$ROOT/build/examples/reverse_proxy}
PYTHON=${PYTHON:-python3}
RESULTS_FILE=${RESULTS_FILE:-}
SUITE=$HERE/blackbox.py

log() { printf '[blackbox] %s\n' "$*" >&2; }
die() { printf '[blackbox] error: %s\n' "$*" >&2; exit 1; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/portico-blackbox.XXXXXX")
chmod 755 "$TMP" # nginx workers may run as another user
PIDS=()

# shellcheck disable=SC2317 # called through the trap
cleanup() {
  local rc=$? p i
  trap - EXIT INT TERM
  for p in ${PIDS[@]+"${PIDS[@]}"}; do kill -TERM "$p" 2>/dev/null || true; done
  for ((i = 0; i < 30; i++)); do
    local alive=0
    for p in ${PIDS[@]+"${PIDS[@]}"}; do kill -0 "$p" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.1
  done
  for p in ${PIDS[@]+"${PIDS[@]}"}; do kill -KILL "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  if [[ ${KEEP_TMP:-0} == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

command -v "$PYTHON" >/dev/null || die "$PYTHON not found"

free_port() { # a port that was free a moment ago (bound to port 0, then released)
  "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_listen() { # wait_listen NAME PID PORT LOG : up to 10 s
  local name=$1 pid=$2 port=$3 logf=$4 i
  for ((i = 0; i < 100; i++)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "$name exited during start-up:"
      tail -n 20 "$logf" | sed 's/^/    /' >&2 || true
      return 1
    fi
    if "$PYTHON" -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()' \
      "$port" 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  log "$name did not listen on 127.0.0.1:$port within 10 s"
  return 1
}

TABLE_ARGS=()
declare -A NOTE
STATUS=0

run_external() { # run_external NAME PID PORT ORIGIN_PORT LOG
  local name=$1 pid=$2 port=$3 oport=$4 logf=$5 rc=0
  if ! wait_listen "$name" "$pid" "$port" "$logf"; then
    NOTE[$name]="failed to start"
    return
  fi
  log "running the suite against $name (127.0.0.1:$port, origin port $oport)"
  "$PYTHON" "$SUITE" --proxy "127.0.0.1:$port" --origin-port "$oport" --name "$name" \
    --json "$TMP/$name.json" >"$TMP/$name.out" 2>&1 || rc=$?
  tail -n 14 "$TMP/$name.out" | grep '^#' >&2 || true
  if [[ -s $TMP/$name.json ]]; then TABLE_ARGS+=("$name=$TMP/$name.json"); else
    NOTE[$name]="suite did not complete (exit $rc), see output"
    tail -n 30 "$TMP/$name.out" >&2
  fi
  kill -TERM "$pid" 2>/dev/null || true
}

# --- portico ----------------------------------------------------------------------------------
if [[ -x $PORTICO_BIN ]]; then
  log "running the suite against portico ($PORTICO_BIN)"
  rc=0
  "$PYTHON" "$SUITE" --proxy-bin "$PORTICO_BIN" --name portico --json "$TMP/portico.json" \
    >"$TMP/portico.out" 2>&1 || rc=$?
  tail -n 14 "$TMP/portico.out" | grep '^#' >&2 || true
  if [[ -s $TMP/portico.json ]]; then TABLE_ARGS+=("portico=$TMP/portico.json"); else
    NOTE[portico]="suite did not complete (exit $rc)"
    tail -n 30 "$TMP/portico.out" >&2
  fi
  ((rc == 0)) || STATUS=1
else
  NOTE[portico]="skipped: no binary at $PORTICO_BIN (make build, or set PORTICO_BIN)"
  STATUS=1
fi

# --- nginx ------------------------------------------------------------------------------------
if command -v nginx >/dev/null; then
  D=$TMP/nginx
  mkdir -p "$D/tmp"
  P=$(free_port)
  O=$(free_port)
  USER_LINE=""
  [[ $(id -u) -eq 0 ]] && USER_LINE="user root;"
  cat >"$D/nginx.conf" <<EOF
$USER_LINE
worker_processes 1;
pid $D/nginx.pid;
error_log $D/error.log info;
events { worker_connections 1024; }
http {
    access_log $D/access.log;
    client_body_temp_path $D/tmp/body;
    proxy_temp_path $D/tmp/proxy;
    fastcgi_temp_path $D/tmp/fastcgi;
    uwsgi_temp_path $D/tmp/uwsgi;
    scgi_temp_path $D/tmp/scgi;
    # WebSocket as in nginx's documentation (https://nginx.org/en/docs/http/websocket.html).
    map \$http_upgrade \$connection_upgrade { default upgrade; '' close; }
    server {
        listen 127.0.0.1:$P;
        client_header_timeout 1s;
        client_body_timeout 1s;
        location / {
            proxy_pass http://127.0.0.1:$O;
            proxy_http_version 1.1;
            proxy_set_header Host \$host;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection \$connection_upgrade;
            proxy_connect_timeout 1s;
            proxy_read_timeout 1s;
            proxy_send_timeout 1s;
        }
    }
}
EOF
  nginx -e "$D/error.log" -p "$D" -c "$D/nginx.conf" -g 'daemon off;' >"$D/stdout.log" 2>&1 &
  PIDS+=($!)
  run_external nginx "$!" "$P" "$O" "$D/stdout.log"
else
  NOTE[nginx]="skipped: nginx not installed"
fi

# --- HAProxy ----------------------------------------------------------------------------------
if command -v haproxy >/dev/null; then
  D=$TMP/haproxy
  mkdir -p "$D"
  P=$(free_port)
  O=$(free_port)
  cat >"$D/haproxy.cfg" <<EOF
global
    maxconn 1024

defaults
    mode http
    timeout connect 1s
    timeout server 1s
    timeout client 1s
    timeout http-request 1s
    timeout tunnel 10s

frontend fe
    bind 127.0.0.1:$P
    default_backend be

backend be
    server origin 127.0.0.1:$O
EOF
  haproxy -db -f "$D/haproxy.cfg" >"$D/stdout.log" 2>&1 &
  PIDS+=($!)
  run_external haproxy "$!" "$P" "$O" "$D/stdout.log"
else
  NOTE[haproxy]="skipped: haproxy not installed"
fi

# --- table ------------------------------------------------------------------------------------
((${#TABLE_ARGS[@]})) || die "no proxy could be tested"
{
  echo "# Black-box HTTP/1.1 suite: portico vs nginx vs HAProxy"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'), repository at $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "- portico: \`$PORTICO_BIN\` with \`--connect-timeout-ms 1000 --upstream-read-timeout-ms 1000 --upstream-write-timeout-ms 1000 --header-read-timeout-ms 1000 --body-read-timeout-ms 1000\`"
  command -v nginx >/dev/null && echo "- nginx: $(nginx -v 2>&1 | sed 's/^nginx version: //') (config: tests/blackbox/run_compare.sh)"
  command -v haproxy >/dev/null && echo "- haproxy: $(haproxy -v 2>&1 | head -n 1 | sed 's/^HAProxy version //; s/ - https.*//') (config: tests/blackbox/run_compare.sh)"
  echo "- python: $("$PYTHON" --version 2>&1)"
  for n in portico nginx haproxy; do
    [[ -n ${NOTE[$n]:-} ]] && echo "- $n: ${NOTE[$n]}"
  done
  echo
  echo "Cells are passed/total verdicts. *rfc*: RFC 9110/9112 requirements and safety (any behaviour"
  echo "the RFC allows passes); *policy*: portico's documented stricter choices and default limits,"
  echo "which other proxies are not expected to share. See tests/blackbox/README.md."
  echo
  "$PYTHON" "$SUITE" --table "${TABLE_ARGS[@]}"
} >"$TMP/table.md"
cat "$TMP/table.md"
if [[ -n $RESULTS_FILE ]]; then
  mkdir -p "$(dirname "$RESULTS_FILE")"
  cp "$TMP/table.md" "$RESULTS_FILE"
  log "table written to $RESULTS_FILE"
fi
exit "$STATUS"
