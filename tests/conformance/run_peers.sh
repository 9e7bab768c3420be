#!/usr/bin/env bash
# Run the HTTP/2 conformance suite (h2spec.py) against reference servers:
# h2o and nginx, each on 127.0.0.1 over TLS (ALPN h2), serving a small static
# file at /.  A throwaway self-signed certificate is generated into a temp
# directory at run time; everything is removed on exit.
#
# Usage: tests/conformance/run_peers.sh [extra h2spec.py options, e.g. -v]
# Env:   H2O=/usr/bin/h2o NGINX=/usr/sbin/nginx PYTHON=/usr/bin/python3
#        PEERS="h2o nginx" (subset to run)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SUITE="$HERE/h2spec.py"
H2O="${H2O:-/usr/bin/h2o}"
NGINX="${NGINX:-/usr/sbin/nginx}"
PYTHON="${PYTHON:-/usr/bin/python3}"
PEERS="${PEERS:-h2o nginx}"

WORK="$(mktemp -d -t h2peers.XXXXXX)"
PIDS=()

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

# A free TCP port on 127.0.0.1 (bind to port 0, read it back, release it).
free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Poll until something accepts connections on the port (server start-up).
wait_listening() {
    local port=$1 name=$2 i
    for i in $(seq 1 100); do
        if "$PYTHON" -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), 0.2).close()" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "$name did not start listening on port $port" >&2
    return 1
}

# --- certificate and document root -----------------------------------------
# The servers may drop privileges (nobody) after loading the key, so the
# document root must be world-readable; the key stays private to root.
chmod 0711 "$WORK"
mkdir -m 0700 "$WORK/tls"
mkdir -m 0755 "$WORK/www"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$WORK/tls/key.pem" -out "$WORK/tls/cert.pem" -days 1 \
    -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    >/dev/null 2>&1
{
    echo "<!doctype html><title>conformance</title>"
    for i in $(seq 1 32); do echo "<p>static body line $i</p>"; done
} > "$WORK/www/index.html"
chmod 0644 "$WORK/www/index.html"

# --- servers -----------------------------------------------------------------
start_h2o() {
    local port=$1 dir="$WORK/h2o"
    mkdir -p "$dir"
    cat > "$dir/h2o.conf" <<EOF
listen:
  host: 127.0.0.1
  port: $port
  ssl:
    certificate-file: $WORK/tls/cert.pem
    key-file: $WORK/tls/key.pem
error-log: $dir/error.log
hosts:
  default:
    paths:
      /:
        file.dir: $WORK/www
    access-log: /dev/null
EOF
    "$H2O" -c "$dir/h2o.conf" >"$dir/stdout.log" 2>&1 &
    PIDS+=($!)
    wait_listening "$port" h2o
}

start_nginx() {
    local port=$1 dir="$WORK/nginx"
    mkdir -p "$dir"
    cat > "$dir/nginx.conf" <<EOF
daemon off;
worker_processes 1;
error_log $dir/error.log;
pid $dir/nginx.pid;
events { worker_connections 1024; }
http {
    access_log off;
    default_type text/html;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    server {
        listen 127.0.0.1:$port ssl http2;
        ssl_certificate $WORK/tls/cert.pem;
        ssl_certificate_key $WORK/tls/key.pem;
        root $WORK/www;
    }
}
EOF
    "$NGINX" -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" >"$dir/stdout.log" 2>&1 &
    PIDS+=($!)
    wait_listening "$port" nginx
}

# --- run -----------------------------------------------------------------------
declare -A SUMMARY
for peer in $PEERS; do
    port="$(free_port)"
    case "$peer" in
        h2o) start_h2o "$port" ;;
        nginx) start_nginx "$port" ;;
        *) echo "unknown peer $peer" >&2; exit 2 ;;
    esac
    echo "=== $peer (127.0.0.1:$port, TLS)"
    log="$WORK/$peer.results"
    # The suite exits non-zero when any case fails; that is expected here.
    "$PYTHON" "$SUITE" --host 127.0.0.1 --port "$port" --tls --insecure "$@" \
        | tee "$log" | grep -v '^PASS ' || true
    SUMMARY[$peer]="$(tail -n 1 "$log")"
done

echo
echo "=== summary"
for peer in $PEERS; do
    printf '%-6s %s\n' "$peer" "${SUMMARY[$peer]}"
done
