#!/usr/bin/env bash
# User-space instructions and system calls per request of portico, nginx, HAProxy and h2o under
# the same load: the two costs that do not depend on how busy this shared machine is, side by
# side (the CPU times of bench/e2e spread by up to 50 % between runs of one proxy).
#
#   bash bench/callgrind/peers.sh [N]            # N requests per figure (default 10000)
#   PROXIES="portico h2o" MODES=h2c bash bench/callgrind/peers.sh
#   MODES="h1 h2c h2tls" bash bench/callgrind/peers.sh   # h2tls: HTTP/2 over TLS to the proxy
#   MODES=h2up PROXIES="portico haproxy" bash bench/callgrind/peers.sh  # h2c in, HTTP/2 to the origin
#   BIN=path/to/reverse_proxy                   # another portico build
#   RESULTS_DIR=dir                             # where the report goes (default bench/results)
#
# An nginx origin serves a 1 KiB file over HTTP/1.1 keep-alive. Each proxy runs with one worker
# (one thread), proxying to it with upstream keep-alive, as in bench/e2e. For each proxy and mode:
#   instructions  the proxy under valgrind --tool=callgrind: 2,000 requests to warm up, counters
#                 zeroed, N requests, Ir of every thread of the process / N
#   syscalls      the proxy natively under strace -c -f: N requests, system calls / N
# Modes: h1 (h2load --h1 -c10: HTTP/1.1 keep-alive, 10 connections), h2c (h2load -c10 -m10:
# 10 connections of 10 streams), h2tls (as h2c, over TLS 1.3 with TLS_AES_128_GCM_SHA256 and
# ALPN h2, a throwaway RSA-2048 certificate; the handshakes are in the 2,000 warm-up requests)
# and h2up (as h2c, the proxy speaking HTTP/2 with prior knowledge to a second nginx origin that
# serves the same file over h2c; nginx and h2o 2.2 cannot, so only portico and HAProxy run it). Kernel time per system call differs (a send costs more than an
# epoll_ctl), so the two columns are a model of the cost, not a CPU time.
# Needs valgrind, strace, nginx, h2load; HAProxy and h2o when installed (else skipped).
set -euo pipefail
LOG_TAG=cg-peers
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${BIN:-$ROOT/build/examples/reverse_proxy}
N=${1:-10000}
check_var N "$N" 1000 1000000
PROXIES=${PROXIES:-portico nginx haproxy h2o}
MODES=${MODES:-h1 h2c}

ensure_cmd valgrind valgrind
ensure_cmd strace strace
ensure_cmd nginx nginx-light
ensure_cmd h2load nghttp2-client
[[ -x $BIN ]] || die "$BIN not built (make build)"
[[ " $MODES " == *" h2tls "* ]] && ensure_cmd openssl openssl

setup_tmp cg-peers
mkdir -p "$TMP/www" "$TMP/origin/tmp"
head -c 1024 /dev/zero | tr '\0' 'a' >"$TMP/www/1k"
pick_port
O_PORT=$REPLY
nginx_origin_conf "$TMP/origin" "$TMP/www" 60s "listen 127.0.0.1:$O_PORT;" >"$TMP/origin/nginx.conf"
START_LOG=0
start_nginx origin "$TMP/origin" nginx.conf
wait_listen origin "$REPLY" "$O_PORT" "$TMP/origin/error.log" || die "the origin did not start"
if [[ " $MODES " == *" h2up "* ]]; then  # the HTTP/2 origin of h2up
  mkdir -p "$TMP/origin2/tmp"
  pick_port
  O2_PORT=$REPLY
  nginx_origin_conf "$TMP/origin2" "$TMP/www" 60s "listen 127.0.0.1:$O2_PORT http2;" >"$TMP/origin2/nginx.conf"
  start_nginx origin2 "$TMP/origin2" nginx.conf
  wait_listen origin2 "$REPLY" "$O2_PORT" "$TMP/origin2/error.log" || die "the HTTP/2 origin did not start"
fi
if [[ " $MODES " == *" h2tls "* ]]; then
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$TMP/key.pem" -out "$TMP/cert.pem" -days 2 \
    -subj /CN=localhost >/dev/null 2>&1 || die "openssl could not make a certificate"
  cat "$TMP/cert.pem" "$TMP/key.pem" >"$TMP/combined.pem" # HAProxy wants both in one file
fi

# proxy_cmd NAME MODE PORT DIR : sets CMD (the proxy's command line, one process, one thread);
# fails for a proxy that cannot run MODE
proxy_cmd() {
  local name=$1 mode=$2 port=$3 d=$4
  mkdir -p "$d/tmp"
  if [[ $mode == h2up && $name != portico && $name != haproxy ]]; then return 1; fi
  case $name in
    portico)
      CMD=("$BIN" --listen "127.0.0.1:$port" --upstream "127.0.0.1:$O_PORT" --threads 1)
      if [[ $mode == h2c ]]; then CMD+=(--h2c); fi
      if [[ $mode == h2up ]]; then
        CMD=("$BIN" --listen "127.0.0.1:$port" --upstream "127.0.0.1:$O2_PORT" --threads 1 --h2c --upstream-h2)
      fi
      if [[ $mode == h2tls ]]; then CMD+=(--tls-cert "$TMP/cert.pem" --tls-key "$TMP/key.pem"); fi
      ;;
    nginx)
      local http2="" tls=""
      if [[ $mode == h2c ]]; then http2=" http2"; fi
      if [[ $mode == h2tls ]]; then
        http2=" ssl http2"
        tls="        ssl_certificate $TMP/cert.pem; ssl_certificate_key $TMP/key.pem; ssl_protocols TLSv1.3;\n"
      fi
      {
        printf 'master_process off;\ndaemon off;\n'
        nginx_head "$d" 1 4096
        nginx_upstream "127.0.0.1:$O_PORT" 64 1000000
        printf '    server {\n        listen 127.0.0.1:%s%s;\n' "$port" "$http2"
        printf "$tls"
        nginx_proxy_location
        printf '    }\n}\n'
      } >"$d/nginx.conf"
      CMD=(nginx -e "$d/error.log" -p "$d" -c "$d/nginx.conf")
      ;;
    haproxy)
      local bind="bind 127.0.0.1:$port" srv="server o1 127.0.0.1:$O_PORT"
      if [[ $mode == h2c || $mode == h2up ]]; then bind+=" proto h2"; fi
      if [[ $mode == h2tls ]]; then bind+=" ssl crt $TMP/combined.pem alpn h2"; fi
      if [[ $mode == h2up ]]; then srv="server o1 127.0.0.1:$O2_PORT proto h2"; fi
      HAPROXY_SPLICE=off haproxy_conf "$bind" "$srv" >"$d/haproxy.cfg"
      CMD=(haproxy -db -f "$d/haproxy.cfg")
      ;;
    h2o)
      # (As root h2o would become nobody, whom valgrind's control then cannot reach.)
      if [[ $(id -u) -eq 0 ]]; then printf 'user: root\n' >"$d/h2o.conf"; else : >"$d/h2o.conf"; fi
      printf 'num-threads: 1\nlisten:\n  host: 127.0.0.1\n  port: %s\n' "$port" >>"$d/h2o.conf"
      if [[ $mode == h2tls ]]; then
        printf '  ssl:\n    certificate-file: %s\n    key-file: %s\n' "$TMP/cert.pem" "$TMP/key.pem" >>"$d/h2o.conf"
      fi
      printf 'error-log: %s/error.log\nhosts:\n  default:\n    paths:\n      "/":\n        proxy.reverse.url: "http://127.0.0.1:%s/"\n' \
        "$d" "$O_PORT" >>"$d/h2o.conf"
      CMD=(h2o -c "$d/h2o.conf")
      ;;
  esac
}

load() { # load MODE URL COUNT OUT : h2load, fails unless every request succeeded
  local args=(-c10 -m10)
  if [[ $1 == h1 ]]; then args=(--h1 -c10 -m1); fi
  if [[ $1 == h2tls ]]; then args+=(--tls13-ciphers=TLS_AES_128_GCM_SHA256); fi
  h2load "${args[@]}" -n "$3" "$2" >"$4" 2>&1 || true
  local ok
  ok=$(sed -n 's/^requests: .* \([0-9]*\) succeeded.*/\1/p' "$4")
  [[ $ok == "$3" ]] || { log "only ${ok:-0} of $3 requests succeeded:"; grep -E '^(requests|status codes):' "$4" >&2; return 1; }
}

scheme() { if [[ $1 == h2tls ]]; then echo https; else echo http; fi; }

declare -A IR SC
for name in $PROXIES; do
  if [[ $name != portico ]] && ! command -v "$name" >/dev/null; then
    log "$name not installed: skipped"
    continue
  fi
  for mode in $MODES; do
    d=$TMP/$name-$mode
    pick_port
    port=$REPLY
    url="$(scheme "$mode")://127.0.0.1:$port/1k"
    if ! proxy_cmd "$name" "$mode" "$port" "$d"; then
      log "$name cannot run $mode: skipped"
      continue
    fi
    # Instructions: the proxy under callgrind (one output file per process; threads summed).
    start_server "$name" "$d/cg.log" valgrind --tool=callgrind --trace-children=no \
      --callgrind-out-file="$d/cg.out.%p" "${CMD[@]}"
    pid=$REPLY
    if ! wait_listen "$name" "$pid" "$port" "$d/cg.log"; then stop_root "$pid"; continue; fi
    sleep 1
    if load "$mode" "$url" 2000 "$d/warm.out"; then
      callgrind_control -z "$pid" >/dev/null
      if load "$mode" "$url" "$N" "$d/load.out"; then
        callgrind_control -d "$pid" >/dev/null
        sleep 1
        f=$(ls -t "$d"/cg.out.*.* 2>/dev/null | head -1)
        ir=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",","",$1); print $1; exit}')
        if [[ -n $ir ]]; then IR[$name,$mode]=$((ir / N)); fi
      fi
    fi
    stop_root "$pid"
    # System calls: the proxy natively, strace attached after a warm-up.
    pick_port
    port=$REPLY
    url="$(scheme "$mode")://127.0.0.1:$port/1k"
    proxy_cmd "$name" "$mode" "$port" "$d"
    start_server "$name" "$d/native.log" "${CMD[@]}"
    pid=$REPLY
    if ! wait_listen "$name" "$pid" "$port" "$d/native.log"; then stop_root "$pid"; continue; fi
    if load "$mode" "$url" 2000 "$d/warm2.out"; then
      strace -c -f -o "$d/strace.txt" -p "$pid" 2>/dev/null &
      st=$!
      for ((i = 0; i < 100; i++)); do # until attached (its TracerPid set), at most 10 s
        [[ $(awk '/^TracerPid/ { print $2 }' "/proc/$pid/status" 2>/dev/null) =~ ^[1-9] ]] && break
        sleep 0.1
      done
      if load "$mode" "$url" "$N" "$d/load2.out"; then
        kill -INT "$st" 2>/dev/null || true
        wait "$st" 2>/dev/null || true
        calls=$(awk '$NF == "total" { print $4 }' "$d/strace.txt")
        if [[ -n $calls ]]; then SC[$name,$mode]=$(awk -v c="$calls" -v n="$N" 'BEGIN { printf "%.2f", c / n }'); fi
      else
        kill -INT "$st" 2>/dev/null || true
        wait "$st" 2>/dev/null || true
      fi
    fi
    stop_root "$pid"
    log "$name $mode: ${IR[$name,$mode]:-?} instructions, ${SC[$name,$mode]:-?} system calls per request"
  done
done

RESULTS_DIR=${RESULTS_DIR:-$ROOT/bench/results}
mkdir -p "$RESULTS_DIR"
REPORT=$RESULTS_DIR/callgrind-peers-$(date -u +%Y%m%d-%H%M%S).md
{
  printf '# Instructions and system calls per request, %s UTC\n\n' "$(date -u '+%Y-%m-%d %H:%M:%S')"
  printf -- '- command: `%sbash bench/callgrind/peers.sh %s`\n' \
    "$([[ $PROXIES != "portico nginx haproxy h2o" ]] && printf 'PROXIES="%s" ' "$PROXIES")$([[ $MODES != "h1 h2c" ]] && printf 'MODES="%s" ' "$MODES")" "$N"
  printf -- '- machine: %s; %s\n' "$(machine_desc)" "$(valgrind --version)"
  printf -- '- portico: %s\n' "$BIN"
  for name in nginx haproxy h2o; do
    if [[ " $PROXIES " == *" $name "* ]] && command -v "$name" >/dev/null; then
      printf -- '- %s: %s, one worker/thread, upstream keep-alive, no access log\n' "$name" "$(version_of "$name")"
    fi
  done
  printf -- '- origin: nginx, a 1 KiB file, HTTP/1.1 keep-alive (h2up: HTTP/2 with prior knowledge); load: h2load %s (h1: `--h1 -c10`, h2c and h2up: `-c10 -m10`, h2tls: `-c10 -m10`, TLS 1.3, TLS_AES_128_GCM_SHA256), %s requests per figure after 2,000 unmeasured\n' \
    "$(version_of h2load)" "$N"
  printf -- '- instructions: Ir of the whole proxy process under callgrind; system calls: strace -c -f on the proxy running natively\n'
  printf '\n| proxy | mode | instructions per request | system calls per request |\n|---|---|---:|---:|\n'
  for mode in $MODES; do
    for name in $PROXIES; do
      [[ -n ${IR[$name,$mode]:-}${SC[$name,$mode]:-} ]] || continue
      printf '| %s | %s | %s | %s |\n' "$name" "$mode" "${IR[$name,$mode]:-—}" "${SC[$name,$mode]:-—}"
    done
  done
} >"$REPORT"
cat "$REPORT"
printf '\nreport: %s\n' "${REPORT#"$ROOT"/}"
