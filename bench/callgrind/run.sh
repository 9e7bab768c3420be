#!/usr/bin/env bash
# Instructions per request of reverse_proxy under callgrind: a figure that does not depend on
# how busy the machine is, to compare two builds (or a change) exactly.
#
#   bash bench/callgrind/run.sh [BIN] [N]     # BIN: build/examples/reverse_proxy, N: 10000
#   KEEP=DIR bash bench/callgrind/run.sh        # also keep the profiles as DIR/{h1,h2c}.callgrind
#   MODES="h1 h2c newconn" bash bench/callgrind/run.sh   # newconn: wrk, Connection: close
#   MODES=h2up bash bench/callgrind/run.sh   # h2c in, HTTP/2 to the origin (--upstream-h2)
#
# Starts an nginx origin serving a 1 KiB file (HTTP/1.1 keep-alive), runs BIN under callgrind
# (one worker, --h2c), warms up with 2,000 requests, zeroes the counters, sends N requests with
# h2load (HTTP/1.1 keep-alive: --h1 -c10; h2c: -c10 -m10) and prints Ir per request for each.
# h2up runs a second proxy under callgrind that speaks HTTP/2 to the same nginx (a listener of
# its with http2) and sends it h2c (-c10 -m10).
# Needs valgrind, nginx and h2load (nghttp2-client); installs them with apt when missing.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BIN=${1:-$HERE/../../build/examples/reverse_proxy}
N=${2:-10000}
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)

need=()
command -v valgrind >/dev/null || need+=(valgrind)
command -v nginx >/dev/null || need+=(nginx-light)
command -v h2load >/dev/null || need+=(nghttp2-client)
if ((${#need[@]})); then
  $SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need[@]}"
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/portico-cg.XXXXXX")
ORIGIN_PID="" PROXY_PID="" PROXY2_PID=""
cleanup() {
  [[ -n $PROXY_PID ]] && kill "$PROXY_PID" 2>/dev/null && wait "$PROXY_PID" 2>/dev/null
  [[ -n $PROXY2_PID ]] && kill "$PROXY2_PID" 2>/dev/null && wait "$PROXY2_PID" 2>/dev/null
  [[ -f $TMP/origin.pid ]] && kill "$(cat "$TMP/origin.pid")" 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ORIGIN_PORT=$(free_port)
ORIGIN_H2_PORT=$(free_port)
PROXY_PORT=$(free_port)
PROXY2_PORT=$(free_port)
chmod 755 "$TMP"  # the nginx worker (not root) reads the file
mkdir -p "$TMP/www"
head -c 1024 /dev/zero | tr '\0' 'a' >"$TMP/www/1k"
cat >"$TMP/origin.conf" <<EOF
worker_processes 1;
daemon on;
error_log $TMP/origin.err;
pid $TMP/origin.pid;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$ORIGIN_PORT; location / { root $TMP/www; } }
  server { listen 127.0.0.1:$ORIGIN_H2_PORT http2; location / { root $TMP/www; } }
}
EOF
nginx -c "$TMP/origin.conf"

valgrind --tool=callgrind --callgrind-out-file="$TMP/cg.%p" "$BIN" --listen "127.0.0.1:$PROXY_PORT" \
  --upstream "127.0.0.1:$ORIGIN_PORT" --threads 1 --h2c >"$TMP/proxy.out" 2>&1 &
PROXY_PID=$!
URL="http://127.0.0.1:$PROXY_PORT/1k"
for _ in $(seq 1 100); do curl -s -o /dev/null "$URL" && break; sleep 0.3; done

for mode in ${MODES:-h1 h2c}; do
  if [[ $mode == newconn ]]; then
    # A new connection per request: wrk with "Connection: close", for a fixed time (wrk cannot
    # stop after N requests); the figure is instructions per completed request.
    command -v wrk >/dev/null || { $SUDO apt-get install -y -q wrk >/dev/null; }
    wrk -t1 -c4 -d3s -H 'Connection: close' "$URL" >/dev/null
    callgrind_control -z "$PROXY_PID" >/dev/null
    wrk -t1 -c4 -d20s -H 'Connection: close' "$URL" >"$TMP/wrk.out"
    callgrind_control -d "$PROXY_PID" >/dev/null
    sleep 1
    f=$(ls -t "$TMP"/cg.*.* | head -1)
    ir=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",","",$1); print $1; exit}')
    n=$(awk '/requests in/{print $1; exit}' "$TMP/wrk.out")
    if grep -q 'Non-2xx\|Socket errors' "$TMP/wrk.out"; then cat "$TMP/wrk.out" >&2; exit 1; fi
    printf '%-7s %d instructions per request (%s requests)\n' "$mode" $((ir / n)) "$n"
    if [[ -n ${KEEP:-} ]]; then mkdir -p "$KEEP" && mv "$f" "$KEEP/$mode.callgrind"; else rm -f "$f"; fi
    continue
  fi
  pid=$PROXY_PID url=$URL
  if [[ $mode == h2up ]]; then
    if [[ -z $PROXY2_PID ]]; then
      valgrind --tool=callgrind --callgrind-out-file="$TMP/cg.%p" "$BIN" \
        --listen "127.0.0.1:$PROXY2_PORT" --upstream "127.0.0.1:$ORIGIN_H2_PORT" --threads 1 \
        --h2c --upstream-h2 >"$TMP/proxy2.out" 2>&1 &
      PROXY2_PID=$!
      for _ in $(seq 1 100); do
        curl -s -o /dev/null "http://127.0.0.1:$PROXY2_PORT/1k" && break
        sleep 0.3
      done
    fi
    pid=$PROXY2_PID url="http://127.0.0.1:$PROXY2_PORT/1k"
  fi
  if [[ $mode == h1 ]]; then args=(--h1 -c10 -m1); else args=(-c10 -m10); fi
  h2load "${args[@]}" -n 2000 "$url" >/dev/null
  callgrind_control -z "$pid" >/dev/null
  h2load "${args[@]}" -n "$N" "$url" >"$TMP/h2load.out"
  ok=$(sed -n 's/^requests: .* \([0-9]*\) succeeded.*/\1/p' "$TMP/h2load.out")
  callgrind_control -d "$pid" >/dev/null
  sleep 1
  f=$(ls -t "$TMP"/cg.*.* | head -1)
  ir=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",","",$1); print $1; exit}')
  if [[ $ok != "$N" ]]; then
    echo "$mode: only ${ok:-0} of $N requests succeeded:" >&2
    grep -E '^(requests|status codes):' "$TMP/h2load.out" >&2
    exit 1
  fi
  printf '%-4s %d instructions per request (%s requests)\n' "$mode" $((ir / N)) "$N"
  if [[ -n ${KEEP:-} ]]; then mkdir -p "$KEEP" && mv "$f" "$KEEP/$mode.callgrind"; else rm -f "$f"; fi
done
