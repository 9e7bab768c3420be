#!/usr/bin/env bash
# Runs the gRPC harness directly, client -> server (no proxy), to check the harness itself.
#
#   bash tests/grpc/run_direct.sh            # plaintext (h2c prior knowledge)
#   bash tests/grpc/run_direct.sh --tls      # TLS: a self-signed certificate made now with openssl
#   bash tests/grpc/run_direct.sh --both     # both, one after the other
#   bash tests/grpc/run_direct.sh -- --concurrency 100 --only unary   # extra client arguments
#   bash tests/grpc/run_direct.sh --both --proxy build/examples/grpc_proxy
#       # through examples/grpc_proxy: client -> proxy -> server, HTTP/2 on both hops; with --tls
#       # the proxy listens with TLS (ALPN h2) and connects to the server over TLS, verifying it
#
# Environment: PYTHON (default /usr/bin/python3, which has Debian's python3-grpcio), KEEP_TMP=1.
# The exit status is the client's (for --both: non-zero if either run failed). The server is
# started with port 0 and reports its port as "LISTENING <port>"; its stdin is a FIFO held open by
# this script, so the server also stops if this script dies without running its trap.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PYTHON=${PYTHON:-/usr/bin/python3}
HARNESS=$HERE/grpc_echo.py

MODE=plain
CLIENT_ARGS=()
PROXY_BIN=""
while (($#)); do
  case $1 in
    --proxy) shift; PROXY_BIN=$1 ;;
    --tls) MODE=tls ;;
    --plain) MODE=plain ;;
    --both) MODE=both ;;
    --) shift; CLIENT_ARGS=("$@"); break ;;
    *) echo "usage: $0 [--plain|--tls|--both] [-- client args...]" >&2; exit 2 ;;
  esac
  shift
done

log() { printf '[grpc-direct] %s\n' "$*" >&2; }

"$PYTHON" -c 'import grpc' 2>/dev/null || {
  log "$PYTHON has no grpc module (Debian: apt-get install -y python3-grpcio)"
  exit 2
}

TMP=$(mktemp -d "${TMPDIR:-/tmp}/portico-grpc.XXXXXX")
SERVER_PID=""
PROXY_PID=""

# shellcheck disable=SC2317 # called through the trap
cleanup() {
  local rc=$? i
  trap - EXIT INT TERM
  exec 3>&- # closes the server's stdin (a no-op if already closed)
  if [[ -n $PROXY_PID ]]; then
    kill -TERM "$PROXY_PID" 2>/dev/null || true
    wait "$PROXY_PID" 2>/dev/null || true
  fi
  if [[ -n $SERVER_PID ]]; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for ((i = 0; i < 30; i++)); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [[ ${KEEP_TMP:-0} == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start_server() { # start_server [server args...] : sets SERVER_PID and PORT
  local i
  rm -f "$TMP/stdin" "$TMP/server.out"
  mkfifo "$TMP/stdin"
  exec 3<>"$TMP/stdin"
  "$PYTHON" "$HARNESS" server --port 0 "$@" <"$TMP/stdin" >"$TMP/server.out" 2>"$TMP/server.err" 3>&- &
  SERVER_PID=$!
  PORT=""
  for ((i = 0; i < 100; i++)); do # up to 10 s
    PORT=$(awk '/^LISTENING /{print $2; exit}' "$TMP/server.out" 2>/dev/null || true)
    [[ -n $PORT ]] && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  log "server did not report its port:"
  sed 's/^/    /' "$TMP/server.err" >&2 || true
  return 1
}

stop_server() {
  exec 3>&- # stdin EOF: the server stops by itself
  local i
  for ((i = 0; i < 50; i++)); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}

start_proxy() { # start_proxy [proxy args...] : sets PROXY_PID and TARGET_PORT (the proxy's)
  local i
  "$PROXY_BIN" --listen 127.0.0.1:0 "$@" >"$TMP/proxy.out" 2>"$TMP/proxy.err" 3>&- &
  PROXY_PID=$!
  for ((i = 0; i < 100; i++)); do # up to 10 s
    TARGET_PORT=$(awk '/^listening on /{n=split($3,a,":"); print a[n]; exit}' "$TMP/proxy.out" 2>/dev/null || true)
    [[ -n $TARGET_PORT ]] && return 0
    kill -0 "$PROXY_PID" 2>/dev/null || break
    sleep 0.1
  done
  log "proxy did not report its port:"
  sed 's/^/    /' "$TMP/proxy.err" >&2 || true
  return 1
}

stop_proxy() {
  [[ -n $PROXY_PID ]] || return 0
  kill -TERM "$PROXY_PID" 2>/dev/null || true
  wait "$PROXY_PID" 2>/dev/null || true
  PROXY_PID=""
  if grep -qiE "exception|assert|sanitizer" "$TMP/proxy.err"; then
    log "proxy stderr:"
    sed 's/^/    /' "$TMP/proxy.err" >&2
    return 1
  fi
}

make_cert() { # a throwaway self-signed certificate for localhost / 127.0.0.1
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
    -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>"$TMP/openssl.err" || {
    cat "$TMP/openssl.err" >&2
    return 1
  }
}

run_one() { # run_one plain|tls   (called in an || list, where set -e is off: check explicitly)
  local mode=$1 rc=0
  if [[ $mode == tls ]]; then
    command -v openssl >/dev/null || { log "openssl not found"; return 2; }
    make_cert || return 1
    start_server --tls "$TMP/cert.pem" "$TMP/key.pem" || return 1
    log "TLS server on 127.0.0.1:$PORT"
    TARGET_PORT=$PORT
    if [[ -n $PROXY_BIN ]]; then
      start_proxy --upstream "127.0.0.1:$PORT" --upstream-tls --ca "$TMP/cert.pem" \
        --upstream-sni localhost --tls-cert "$TMP/cert.pem" --tls-key "$TMP/key.pem" || return 1
      log "TLS proxy on 127.0.0.1:$TARGET_PORT"
    fi
    "$PYTHON" "$HARNESS" client --target "127.0.0.1:$TARGET_PORT" --tls --ca "$TMP/cert.pem" \
      --authority localhost ${CLIENT_ARGS[@]+"${CLIENT_ARGS[@]}"} 3>&- || rc=$?
  else
    start_server || return 1
    log "plaintext server on 127.0.0.1:$PORT"
    TARGET_PORT=$PORT
    if [[ -n $PROXY_BIN ]]; then
      start_proxy --upstream "127.0.0.1:$PORT" || return 1
      log "h2c proxy on 127.0.0.1:$TARGET_PORT"
    fi
    "$PYTHON" "$HARNESS" client --target "127.0.0.1:$TARGET_PORT" ${CLIENT_ARGS[@]+"${CLIENT_ARGS[@]}"} 3>&- || rc=$?
  fi
  stop_proxy || rc=1
  stop_server
  return "$rc"
}

STATUS=0
case $MODE in
  plain) run_one plain || STATUS=$? ;;
  tls) run_one tls || STATUS=$? ;;
  both)
    run_one plain || STATUS=$?
    run_one tls || STATUS=$?
    ;;
esac
exit "$STATUS"
