#!/usr/bin/env bash
# End-to-end benchmark: CPU cost per request of portico's reverse_proxy example against nginx
# (and HAProxy / h2o when they are available), all measured in the same run with the same load.
#
#   bash bench/e2e/run.sh                      # DURATION=5 REPEATS=3
#   DURATION=2 REPEATS=1 bash bench/e2e/run.sh # quick look
#
# Environment:
#   DURATION          seconds of each measured wrk run (default 5)
#   REPEATS           measured runs per target and scenario; the median is reported (default 3)
#   WARMUP            seconds of the unmeasured wrk run before each measured run (default 1)
#   CONNECTIONS       wrk connections of the HTTP/1 scenarios but 1m (default 50)
#   CONNECTIONS_1M    wrk connections of the 1m scenario (default 10: see bench/README.md)
#   PORTICO_BIN       portico binary (default build/examples/reverse_proxy in the repository); it is
#                     copied to the temporary directory at start, so a rebuild cannot swap it mid-run
#   FLOOR_BIN         the kernel's floor for 5b and 1k (bench/floor/forward.cpp, a byte forwarder
#                     making only the system calls a keep-alive proxy cannot avoid; default
#                     build/bench/portico_floor; skipped when absent, FLOOR=0 to leave it out)
#   INSTALL_OPTIONAL  1 (default): apt-install haproxy and h2o when missing; 0: use them only if present
#   HAPROXY_SPLICE    auto (default), response or off: HAProxy's kernel splicing (bench/lib.sh)
#   PROXY_CPU/WRK_CPU CPUs for the servers / for wrk (default 0 / 1)
#   RESULTS_DIR       where the markdown report goes (default bench/results)
#   ONLY              same as --only
#   H2_CLIENTS/H2_STREAMS  h2load -c / -m for the HTTP/2 scenarios (default 10 / 10)
#   DEFER_ACCEPT      1: TCP_DEFER_ACCEPT on the HTTP/1 proxies' listeners (portico
#                     `defer_accept_seconds: 1`, nginx `listen ... deferred`, HAProxy `defer-accept`;
#                     h2o has no such setting); default 0, every proxy's default
#
# Options:
#   --only LIST       comma-separated scenarios to run (default: all of them):
#                       5b, 1k, 64k, 1m  HTTP/1.1 keep-alive GET of 5 B / 1 KiB / 64 KiB / 1 MiB, wrk
#                       newconn  HTTP/1.1 GET of 5 B, a new connection per request
#                                (wrk -H 'Connection: close')
#                       h2c      HTTP/2 with prior knowledge on a plain listener, 1 KiB, h2load
#                       h2tls    HTTP/2 over TLS (ALPN h2), 1 KiB, h2load
#                       h2up     h2c to the proxy and HTTP/2 (prior knowledge) to an HTTP/2 origin
#                     (h1 = 5b,1k,64k,1m,newconn; h2 = h2c,h2tls,h2up). HTTP/1 results go to e2e-*.md,
#                     HTTP/2 ones to h2-*.md.
#
# Everything listens on 127.0.0.1 only. Every process the script starts is killed on exit and the
# temporary directory is removed. See bench/README.md for the method.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin" # nginx and haproxy live in /usr/sbin, not on a user's PATH
# shellcheck disable=SC2034 # read by log/die (bench/lib.sh)
LOG_TAG=e2e
# shellcheck source=SCRIPTDIR/../lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DURATION=${DURATION:-5}
REPEATS=${REPEATS:-3}
WARMUP=${WARMUP:-1}
CONNECTIONS=${CONNECTIONS:-50}
CONNECTIONS_1M=${CONNECTIONS_1M:-10}
PORTICO_BIN=${PORTICO_BIN:-$ROOT/build/examples/reverse_proxy}
FLOOR_BIN=${FLOOR_BIN:-$ROOT/build/bench/portico_floor}
FLOOR=${FLOOR:-1}
INSTALL_OPTIONAL=${INSTALL_OPTIONAL:-1}
PROXY_CPU=${PROXY_CPU:-0}
WRK_CPU=${WRK_CPU:-1}
RESULTS_DIR=${RESULTS_DIR:-$ROOT/bench/results}
ONLY=${ONLY:-}           # same as --only
DEFER_ACCEPT=${DEFER_ACCEPT:-0}
H2_CLIENTS=${H2_CLIENTS:-10}  # h2load -c
H2_STREAMS=${H2_STREAMS:-10}  # h2load -m

# Scenarios: 5b, 1k, 64k, 1m, newconn (HTTP/1.1 with wrk), h2c, h2tls (HTTP/2 to the proxy with
# h2load, HTTP/1.1 to the origin), h2up (h2c to the proxy and HTTP/2 with prior knowledge to an
# HTTP/2 origin).
H1_SCENARIOS="5b,1k,64k,1m,newconn"
H2_SCENARIO_LIST="h2c,h2tls,h2up"
ALL_SCENARIOS="$H1_SCENARIOS,$H2_SCENARIO_LIST"
while (($#)); do
  case $1 in
    --only) (($# >= 2)) || die "--only needs a list, e.g. --only h2c,h2tls"; ONLY=$2; shift 2 ;;
    --only=*) ONLY=${1#--only=}; shift ;;
    -h | --help) print_help "${BASH_SOURCE[0]}"; exit 0 ;;
    *) die "unknown argument '$1' (try --help)" ;;
  esac
done
ONLY_EXPLICIT=0
[[ -n $ONLY ]] && ONLY_EXPLICIT=1
ONLY=${ONLY:-$ALL_SCENARIOS}
declare -A WANT=()
IFS=, read -r -a _only <<<"$ONLY"
for _s in "${_only[@]}"; do
  case $_s in
    5b | 1k | 64k | 1m | newconn | h2c | h2tls | h2up) WANT[$_s]=1 ;;
    h1) for _t in ${H1_SCENARIOS//,/ }; do WANT[$_t]=1; done ;;
    h2) for _t in ${H2_SCENARIO_LIST//,/ }; do WANT[$_t]=1; done ;;
    all) for _t in ${ALL_SCENARIOS//,/ }; do WANT[$_t]=1; done ;;
    '') ;;
    *) die "unknown scenario '$_s' in --only (known: $ALL_SCENARIOS, h1, h2, all)" ;;
  esac
done
((${#WANT[@]} > 0)) || die "--only selects no scenario"
case ${HAPROXY_SPLICE:-auto} in
  auto | response | off) ;;
  *) die "HAPROXY_SPLICE must be auto, response or off, not '$HAPROXY_SPLICE'" ;;
esac
RUN_H1=0 RUN_H2=0
for _s in ${H1_SCENARIOS//,/ }; do [[ -n ${WANT[$_s]:-} ]] && RUN_H1=1; done
for _s in ${H2_SCENARIO_LIST//,/ }; do [[ -n ${WANT[$_s]:-} ]] && RUN_H2=1; done

check_var DURATION "$DURATION" 1 600
check_var REPEATS "$REPEATS" 1 50
check_var WARMUP "$WARMUP" 0 60
check_var CONNECTIONS "$CONNECTIONS" 1 10000
check_var CONNECTIONS_1M "$CONNECTIONS_1M" 1 10000
check_var PROXY_CPU "$PROXY_CPU" 0 4095
check_var WRK_CPU "$WRK_CPU" 0 4095

# The HTTP/1 scenarios: the file GET, wrk's connections, its label in the report. newconn sends
# `Connection: close` (see run_wrk), so every request is a new client connection.
declare -A SC_PATH=([5b]=/5b [1k]=/1k [64k]=/64k [1m]=/1m [newconn]=/5b)
declare -A SC_CONNS=([5b]=$CONNECTIONS [1k]=$CONNECTIONS [64k]=$CONNECTIONS [1m]=$CONNECTIONS_1M [newconn]=$CONNECTIONS)
declare -A SC_LABEL=([5b]="5 B keep-alive" [1k]="1 KiB keep-alive" [64k]="64 KiB keep-alive"
  [1m]="1 MiB keep-alive" [newconn]="5 B, new connection per request")

# ---------------------------------------------------------------------------------------------
# Process bookkeeping and cleanup.
# ---------------------------------------------------------------------------------------------
# Processes started outside start_server: wrk / h2load (WRK_PID, while one runs).
extra_pids() { echo "${WRK_PID:-}"; }
setup_tmp e2e

# ---------------------------------------------------------------------------------------------
# Packages: installed with apt only when missing; `apt-get update` only before an install.
# ---------------------------------------------------------------------------------------------
ensure_cmd nginx nginx-light || die "nginx is required (apt package nginx-light)"
if ((RUN_H1)); then ensure_cmd wrk wrk || die "wrk is required (apt package wrk)"; fi
HAVE_H2LOAD=0
if ((RUN_H2)); then
  if ensure_cmd h2load nghttp2-client; then
    HAVE_H2LOAD=1
  elif ((ONLY_EXPLICIT)); then
    die "h2load is required for the HTTP/2 scenarios (apt package nghttp2-client)"
  else
    log "h2load not available (apt package nghttp2-client): HTTP/2 scenarios skipped"
    RUN_H2=0
  fi
  command -v openssl >/dev/null || ensure_cmd openssl openssl || die "openssl is required for the HTTP/2 scenarios (test certificate)"
fi
command -v curl >/dev/null || ensure_cmd curl curl || log "curl missing: responses are checked for status only"

HAVE_HAPROXY=0 HAVE_H2O=0
if optional_cmd haproxy haproxy; then HAVE_HAPROXY=1; fi
if optional_cmd h2o h2o; then HAVE_H2O=1; fi

# The portico processes start one after another (the HTTP/2 scenarios start their own): all of
# them run one copy of the binary, made now.
copy_portico || true

# ---------------------------------------------------------------------------------------------
# Pinning: servers on PROXY_CPU, wrk on WRK_CPU.
# ---------------------------------------------------------------------------------------------
pin_cpus "$PROXY_CPU" "$WRK_CPU" "servers on CPU $PROXY_CPU, wrk on CPU $WRK_CPU (taskset)"

# ---------------------------------------------------------------------------------------------
# Checks.
# ---------------------------------------------------------------------------------------------
check_http() { # check_http PORT PATH FILE : GET returns 200 and exactly FILE's bytes
  local port=$1 path=$2 file=$3 code
  if command -v curl >/dev/null; then
    code=$(curl -sS -m 5 -o "$TMP/check.body" -w '%{http_code}' "http://127.0.0.1:$port$path" 2>"$TMP/check.err") || code=000
    [[ $code == 200 ]] && cmp -s "$TMP/check.body" "$file" && return 0
    log "GET 127.0.0.1:$port$path: status $code, body $(wc -c <"$TMP/check.body" 2>/dev/null || echo 0) bytes (want 200, $(wc -c <"$file") bytes) $(cat "$TMP/check.err" 2>/dev/null)"
    return 1
  fi
  local first
  # shellcheck disable=SC2016 # $1/$2 are expanded by the inner bash
  first=$(timeout 5 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && printf "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" "$2" >&3 && head -n 1 <&3' _ "$port" "$path" 2>/dev/null) || true
  [[ $first == *" 200 "* ]] && return 0
  log "GET 127.0.0.1:$port$path: '$first'"
  return 1
}

# ---------------------------------------------------------------------------------------------
# Origin: nginx serving files of 5 B, 1 KiB, 64 KiB and 1 MiB, and its connection counter
# (stub_status `accepts`) on /stub_status.
# ---------------------------------------------------------------------------------------------
O_DIR=$TMP/origin
mkdir -p "$O_DIR/www" "$O_DIR/tmp"
printf 'hello' >"$O_DIR/www/5b"
for _f in 1k:1024 64k:65536 1m:1048576; do
  head -c "${_f#*:}" /dev/zero | tr '\0' 'x' >"$O_DIR/www/${_f%:*}"
done
chmod -R a+rX "$O_DIR/www"
pick_port
O_PORT=$REPLY
nginx_origin_conf --sendfile "$O_DIR" "$O_DIR/www" 65 "listen 127.0.0.1:$O_PORT;" \
  "location = /stub_status { stub_status; }" >"$O_DIR/origin.conf"
start_nginx origin "$O_DIR" origin.conf
O_PID=$REPLY
wait_listen origin "$O_PID" "$O_PORT" "$O_DIR/stdout.log" "$O_DIR/error.log" || die "origin nginx did not start"

# check_files PORT : the target serves every file of the HTTP/1 scenarios run (5b and 1k always)
check_files() {
  local f
  for f in 5b 1k 64k 1m; do
    [[ $f == 5b || $f == 1k || -n ${WANT[$f]:-} ]] || continue
    check_http "$1" "/$f" "$O_DIR/www/$f" || return 1
  done
}
check_files "$O_PORT" || die "origin does not serve its files"

# ---------------------------------------------------------------------------------------------
# Proxies, one worker each, all forwarding to the origin.
# ---------------------------------------------------------------------------------------------
declare -A T_PORT T_PID T_NOTE DEAD
# nginx_proxy_conf DIR UPSTREAM SERVER_LINE... : a one-worker nginx proxy to UPSTREAM (keepalive 64);
# large responses are passed on as the client takes them, never buffered to a temporary file
nginx_proxy_conf() {
  local l
  nginx_head "$1" 1 4096
  printf '    tcp_nodelay on;\n    keepalive_timeout 65;\n    keepalive_requests 1000000;\n    proxy_max_temp_file_size 0;\n'
  nginx_upstream "$2" 64 1000000
  printf '    server {\n'
  for l in "${@:3}"; do printf '        %s\n' "$l"; done
  nginx_proxy_location
  printf '    }\n}\n'
}
TARGETS=()      # proxies that started and answered correctly
ALL_PROXIES=(portico nginx haproxy h2o)
FLOOR_SCENARIOS=" 5b 1k " # where the forwarder is the floor (one request in flight, no body to splice)

register() { # register NAME PID PORT LOG [MORE LOGS]
  local name=$1 pid=$2 port=$3
  if wait_listen "$name" "$pid" "$port" "${@:4}" && check_files "$port"; then
    T_PORT[$name]=$port T_PID[$name]=$pid
    TARGETS+=("$name")
  else
    T_NOTE[$name]="failed to start or to proxy correctly (see the script's messages)"
    stop_root "$pid"
  fi
}

if ((RUN_H1)); then # the HTTP/1 proxies
  # portico
  if [[ -f $PORTICO_BIN && -x $PORTICO_BIN ]]; then
    pick_port
    P_PORT=$REPLY
    mkdir -p "$TMP/portico"
    P_EXTRA=()
    if [[ $DEFER_ACCEPT == 1 ]]; then
      printf 'defer_accept_seconds: 1\n' >"$TMP/portico/defer.yaml"
      P_EXTRA=(-c "$TMP/portico/defer.yaml")
    fi
    start_server portico "$TMP/portico/out.log" "$PORTICO_BIN" --listen "127.0.0.1:$P_PORT" --upstream "127.0.0.1:$O_PORT" --threads 1 "${P_EXTRA[@]}"
    register portico "$REPLY" "$P_PORT" "$TMP/portico/out.log"
  else
    T_NOTE[portico]="skipped: binary not found at $PORTICO_BIN (build it with \`make build\`, or set PORTICO_BIN)"
    log "portico SKIPPED: binary not found or not executable: $PORTICO_BIN (build it with 'make build' or set PORTICO_BIN)"
  fi

  # The floor: not a proxy, the system calls and TCP work of one (bench/floor/forward.cpp)
  if [[ $FLOOR == 1 && -x $FLOOR_BIN ]] && [[ -n ${WANT[5b]:-} || -n ${WANT[1k]:-} ]]; then
    pick_port
    F_PORT=$REPLY
    mkdir -p "$TMP/floor"
    cp "$FLOOR_BIN" "$TMP/floor/forward"
    start_server floor "$TMP/floor/out.log" "$TMP/floor/forward" --listen "$F_PORT" --upstream "127.0.0.1:$O_PORT"
    register floor "$REPLY" "$F_PORT" "$TMP/floor/out.log"
  fi

  # nginx as a reverse proxy
  pick_port
  N_PORT=$REPLY
  N_DIR=$TMP/nginx-proxy
  mkdir -p "$N_DIR/tmp"
  N_LISTEN="listen 127.0.0.1:$N_PORT;"
  [[ $DEFER_ACCEPT == 1 ]] && N_LISTEN="listen 127.0.0.1:$N_PORT deferred;"
  nginx_proxy_conf "$N_DIR" "127.0.0.1:$O_PORT" "$N_LISTEN" >"$N_DIR/proxy.conf"
  start_nginx nginx "$N_DIR" proxy.conf
  register nginx "$REPLY" "$N_PORT" "$N_DIR/stdout.log" "$N_DIR/error.log"

  # HAProxy (optional)
  if ((HAVE_HAPROXY)); then
    pick_port
    H_PORT=$REPLY
    H_DIR=$TMP/haproxy
    mkdir -p "$H_DIR"
    H_BIND="bind 127.0.0.1:$H_PORT"
    [[ $DEFER_ACCEPT == 1 ]] && H_BIND+=" defer-accept"
    haproxy_conf "$H_BIND" "server o1 127.0.0.1:$O_PORT" >"$H_DIR/haproxy.cfg"
    if haproxy -c -q -f "$H_DIR/haproxy.cfg" >"$H_DIR/check.log" 2>&1; then
      start_server haproxy "$H_DIR/stdout.log" haproxy -db -f "$H_DIR/haproxy.cfg"
      register haproxy "$REPLY" "$H_PORT" "$H_DIR/stdout.log"
    else
      T_NOTE[haproxy]="skipped: configuration rejected by $(haproxy -v 2>/dev/null | head -n 1)"
      sed 's/^/    /' "$H_DIR/check.log" >&2
    fi
  else
    T_NOTE[haproxy]="skipped: haproxy not installed and not installable"
  fi

  # h2o (optional)
  if ((HAVE_H2O)); then
    pick_port
    Q_PORT=$REPLY
    Q_DIR=$TMP/h2o
    mkdir -p "$Q_DIR"
    cat >"$Q_DIR/h2o.conf" <<EOF
num-threads: 1
listen:
  host: 127.0.0.1
  port: $Q_PORT
error-log: $Q_DIR/error.log
hosts:
  default:
    paths:
      "/":
        proxy.reverse.url: "http://127.0.0.1:$O_PORT/"
EOF
    if h2o -t -c "$Q_DIR/h2o.conf" >"$Q_DIR/check.log" 2>&1; then
      start_server h2o "$Q_DIR/stdout.log" h2o -c "$Q_DIR/h2o.conf"
      register h2o "$REPLY" "$Q_PORT" "$Q_DIR/stdout.log" "$Q_DIR/error.log"
    else
      T_NOTE[h2o]="skipped: configuration rejected by $(h2o --version 2>/dev/null | head -n 1)"
      sed 's/^/    /' "$Q_DIR/check.log" >&2
    fi
  else
    T_NOTE[h2o]="skipped: h2o not installed and not installable"
  fi
fi # RUN_H1

# ---------------------------------------------------------------------------------------------
# Measurement.
# ---------------------------------------------------------------------------------------------
RAW=$TMP/raw.tsv
: >"$RAW"
WRK_LOG=$TMP/wrk.out

WRK_PID=""
run_wrk() { # run_wrk SCENARIO PORT SECONDS : output in $WRK_LOG; bounded by timeout
  local hdr=()
  [[ $1 == newconn ]] && hdr=(-H "Connection: close") # the server closes after each response; wrk reconnects
  # In the background and waited for, so that a signal to the script is handled at once.
  timeout -k 5 $(($3 + 30)) "${PIN_CLI[@]}" wrk -t1 -c"${SC_CONNS[$1]}" -d"$3"s --latency ${hdr[@]+"${hdr[@]}"} \
    "http://127.0.0.1:$2${SC_PATH[$1]}" >"$WRK_LOG" 2>&1 &
  WRK_PID=$!
  finish_wrk
}

# Connections: the origin's accepts (stub_status; each read is one connection, subtracted) and
# the kernel's count of accepted TCP connections (PassiveOpens in /proc/net/snmp, all of this
# network namespace): accepted by the target = PassiveOpens - origin accepts (proxies), the
# origin's own count (direct). Other local connections made during the run inflate it.
origin_accepts() { nginx_accepts "http://127.0.0.1:$O_PORT/stub_status" || echo 0; }
passive_opens() { awk '$1 == "Tcp:" { if (!c) { for (i = 2; i <= NF; i++) if ($i == "PassiveOpens") c = i } else { print $c; exit } }' /proc/net/snmp; }

measure() { # measure SCENARIO TARGET REP PORT [PROXY_ROOT_PID]
  local scen=$1 target=$2 rep=$3 port=$4 root=${5:-} ppids="" opids conns=${SC_CONNS[$1]}
  local p0=0 p1=0 o0 o1 t0 t1 a0 a1 k0 k1 reqs rps p99 errs oconns tconns
  if ((WARMUP > 0)); then run_wrk "$scen" "$port" "$WARMUP" || true; fi
  [[ -n $root ]] && ppids=$(descendants "$root")
  opids=$(descendants "$O_PID")
  k0=$(passive_opens) a0=$(origin_accepts)
  # shellcheck disable=SC2086
  { [[ -n $root ]] && p0=$(cpu_ticks $ppids); o0=$(cpu_ticks $opids); t0=$(date +%s%N); }
  if ! run_wrk "$scen" "$port" "$DURATION"; then
    log "wrk failed against $target ($scen, run $rep):"
    sed 's/^/    /' "$WRK_LOG" >&2
  fi
  # shellcheck disable=SC2086
  { t1=$(date +%s%N); o1=$(cpu_ticks $opids); [[ -n $root ]] && p1=$(cpu_ticks $ppids); }
  a1=$(origin_accepts) k1=$(passive_opens)
  oconns=$((a1 - a0 - 1)) tconns=$((k1 - k0 - (a1 - a0)))
  [[ -n $root ]] || tconns=$oconns
  read -r reqs rps p99 errs < <(parse_wrk "$WRK_LOG")
  # A run counts only if it had no errors and every connection got well past its first request;
  # newconn only if wrk opened a connection per request.
  local flag=ok
  if ((errs > 0)); then
    flag=errors
  elif ((reqs < 10 * conns)); then
    flag=stalled
    log "warning: only $reqs requests completed in ${DURATION}s with $conns connections: $target stalled"
  elif [[ $scen == newconn ]] && ((10 * tconns < 9 * reqs)); then
    flag=reused
    log "warning: $target accepted $tconns connections for $reqs requests with Connection: close"
  fi
  if [[ -n $root ]] && ! kill -0 "$root" 2>/dev/null; then flag=died; fi
  awk -v f="$flag" -v s="$scen" -v t="$target" -v r="$rep" -v n="$reqs" -v rps="$rps" -v p99="$p99" -v e="$errs" \
    -v pt=$((p1 - p0)) -v ot=$((o1 - o0)) -v hz="$CLK_TCK" -v ns=$((t1 - t0)) -v proxy="${root:+1}" \
    -v tc="$tconns" -v oc="$oconns" '
    BEGIN {
      pus = (proxy && n > 0) ? sprintf("%.2f", pt * 1e6 / hz / n) : "-"
      ppc = proxy ? sprintf("%.1f", pt / hz / (ns / 1e9) * 100) : "-"
      ous = n > 0 ? sprintf("%.2f", ot * 1e6 / hz / n) : "-"
      printf "%s\t%s\t%s\t%d\t%.2f\t%.3f\t%d\t%s\t%s\t%s\t%s\t%d\t%d\n", s, t, r, n, rps, p99, e, pus, ppc, ous, f, tc, oc
    }' >>"$RAW"
  log "$(tail -n 1 "$RAW" | awk -F'\t' '{ printf "%-7s %-15s run %s: %9.0f req/s  p99 %7.3f ms  errors %d  proxy %s us/req (%s%% CPU)  origin %s us/req  conns %d / origin %d%s", $1, $2, $3, $5, $6, $7, $8, $9, $10, $12, $13, ($11 == "ok" ? "" : "  [" $11 ": not counted]") }')"
}

busy_pct() { # busy_pct : % of all CPUs busy over the next second, from /proc/stat
  local a b
  a=$(head -n 1 /proc/stat)
  sleep 1
  b=$(head -n 1 /proc/stat)
  awk -v a="$a" -v b="$b" 'BEGIN {
    n = split(a, x, " "); split(b, y, " ")
    for (i = 2; i <= n; i++) { t += y[i] - x[i]; if (i == 5 || i == 6) idle += y[i] - x[i] }
    printf "%.0f", (t > 0 ? 100 * (t - idle) / t : 0) }'
}
BUSY_BEFORE=$(busy_pct)
if ((BUSY_BEFORE >= 10)); then
  log "warning: the machine is already ${BUSY_BEFORE}% busy: other work (a build?) will distort the numbers"
fi

STAMP=$(date +%Y%m%d-%H%M%S)
mkdir -p "$RESULTS_DIR"

# ---------------------------------------------------------------------------------------------
# HTTP/1 scenarios (5b, 1k, 64k, 1m, newconn) with wrk.
# ---------------------------------------------------------------------------------------------
if ((RUN_H1)); then
  SCENARIOS=()
  for s in ${H1_SCENARIOS//,/ }; do [[ -n ${WANT[$s]:-} ]] && SCENARIOS+=("$s"); done
  n_runs=$(((2 * REPEATS + REPEATS * ${#TARGETS[@]}) * ${#SCENARIOS[@]}))
  log "targets: direct ${TARGETS[*]:-}; $n_runs measured runs of ${DURATION}s (+${WARMUP}s warm-up each), about $((n_runs * (DURATION + WARMUP) / 60 + 1)) min"
  ((${#TARGETS[@]} > 0)) || log "warning: no proxy is running; only the direct numbers will be measured"

  for key in "${SCENARIOS[@]}"; do
    for ((rep = 1; rep <= REPEATS; rep++)); do measure "$key" "direct (before)" "$rep" "$O_PORT"; done
    for ((rep = 1; rep <= REPEATS; rep++)); do
      for t in ${TARGETS[@]+"${TARGETS[@]}"}; do
        if [[ -n ${DEAD[$t]:-} ]]; then continue; fi
        [[ $t != floor || $FLOOR_SCENARIOS == *" $key "* ]] || continue
        if ! kill -0 "${T_PID[$t]}" 2>/dev/null; then
          log "$t is no longer running: dropped from the rest of the run"
          DEAD[$t]=1
          continue
        fi
        measure "$key" "$t" "$rep" "${T_PORT[$t]}" "${T_PID[$t]}"
      done
    done
    for ((rep = 1; rep <= REPEATS; rep++)); do measure "$key" "direct (after)" "$rep" "$O_PORT"; done
  done

  # Stop the proxies one by one now, to see how each of them exits on SIGTERM.
  add_note() { T_NOTE[$1]="${T_NOTE[$1]:+${T_NOTE[$1]}; }$2"; }
  for t in ${TARGETS[@]+"${TARGETS[@]}"}; do
    pid=${T_PID[$t]}
    stop_root "$pid"
    st=${EXIT_STATUS[$pid]:-0}
    when="when stopped with SIGTERM"
    [[ -n ${DEAD[$t]:-} ]] && when="during the run; later runs skipped"
    case $st in
      0 | 143) ;;
      137) add_note "$t" "did not exit within 3 s of SIGTERM and was killed" ;;
      *)
        if ((st > 128)); then
          add_note "$t" "ended with signal $((st - 128)) (SIG$(kill -l $((st - 128)) 2>/dev/null || echo '?')) $when"
        else
          add_note "$t" "exited with status $st $when"
        fi
        ;;
    esac
    if [[ -n ${DEAD[$t]:-} && -z ${T_NOTE[$t]:-} ]]; then add_note "$t" "exited during the run; later runs skipped"; fi
    if [[ -n ${T_NOTE[$t]:-} ]]; then log "$t: ${T_NOTE[$t]}"; fi
  done

  # ---------------------------------------------------------------------------------------------
  # Report.
  # ---------------------------------------------------------------------------------------------
  SUMMARY=$TMP/summary.md
  ORDER="direct (before),floor"
  for t in "${ALL_PROXIES[@]}"; do ORDER+=",$t"; done
  ORDER+=",direct (after)"
  SC_LIST=""
  for key in "${SCENARIOS[@]}"; do SC_LIST+="${SC_LIST:+|}$key|${SC_LABEL[$key]}"; done
  awk -F'\t' -v order="$ORDER" -v scens="$SC_LIST" -v cpufile="$TMP/cpu.tsv" '
    function median(key,   n, i, j, v, a) {
      n = cnt[key]
      for (i = 1; i <= n; i++) a[i] = vals[key, i]
      for (i = 2; i <= n; i++) { v = a[i]; j = i - 1; while (j >= 1 && a[j] > v) { a[j + 1] = a[j]; j-- } a[j + 1] = v }
      return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    function add(key, x) { cnt[key]++; vals[key, cnt[key]] = x + 0 }
    function fmt(key, f) { return cnt[key] ? sprintf(f, median(key)) : "—" }
    {
      k = $1 SUBSEP $2; seen[k] = 1; errs[k] += $7; runs[k]++
      if ($11 != "ok") { bad[k] = bad[k] (bad[k] == "" ? "" : ", ") $11; next }
      good[k]++
      add(k SUBSEP "rps", $5); add(k SUBSEP "p99", $6)
      if ($8 != "-") add(k SUBSEP "pus", $8)
      if ($9 != "-") add(k SUBSEP "ppc", $9)
      if ($10 != "-") add(k SUBSEP "ous", $10)
      if ($4 > 0) { add(k SUBSEP "tc", $12 / $4); add(k SUBSEP "oc", $13 / $4) }
    }
    END {
      m = split(scens, a, "|"); ns = 0
      for (i = 1; i < m; i += 2) { sc[++ns] = a[i]; label[a[i]] = a[i + 1] }
      nt = split(order, tg, ",")
      print "| scenario | target | req/s | vs direct | p99 latency | errors | valid runs | proxy CPU µs/req | proxy CPU % | origin CPU µs/req | new conns/req: target / origin |"
      print "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
      for (s = 1; s <= ns; s++) {
        best = 0
        for (d = 0; d < 2; d++) {
          k = sc[s] SUBSEP (d ? "direct (after)" : "direct (before)")
          if (cnt[k SUBSEP "rps"]) { m = median(k SUBSEP "rps"); if (m > best) best = m }
        }
        for (i = 1; i <= nt; i++) {
          k = sc[s] SUBSEP tg[i]
          if (!(k in seen)) continue
          rps = cnt[k SUBSEP "rps"] ? median(k SUBSEP "rps") : 0
          vs = (best > 0 && cnt[k SUBSEP "rps"]) ? sprintf("%.2f", rps / best) : "—"
          valid = (good[k] + 0) "/" runs[k] (bad[k] != "" ? " (" bad[k] ")" : "")
          name = (tg[i] ~ /^direct/) ? tg[i] : "**" tg[i] "**"
          printf "| %s | %s | %s | %s | %s | %d | %s | %s | %s | %s | %s / %s |\n", label[sc[s]], name,
            fmt(k SUBSEP "rps", "%.0f"), vs, fmt(k SUBSEP "p99", "%.2f ms"), errs[k], valid,
            fmt(k SUBSEP "pus", "%.2f"), fmt(k SUBSEP "ppc", "%.0f"), fmt(k SUBSEP "ous", "%.2f"),
            fmt(k SUBSEP "tc", "%.3f"), fmt(k SUBSEP "oc", "%.3f")
          if (tg[i] !~ /^direct/ && cnt[k SUBSEP "pus"]) print sc[s] "\t" tg[i] "\t" fmt(k SUBSEP "pus", "%.2f") > cpufile
        }
      }
    }' "$RAW" >"$SUMMARY"

  cpu_of() { awk -F'\t' -v s="$1" -v t="$2" '$1 == s && $2 == t { print $3 }' "$TMP/cpu.tsv" 2>/dev/null; }
  RATIOS=$TMP/ratios.md
  {
    for key in "${SCENARIOS[@]}"; do
      base=$(cpu_of "$key" nginx)
      line="- ${SC_LABEL[$key]}, proxy CPU µs/request relative to nginx:"
      any=0
      for t in portico haproxy h2o; do
        v=$(cpu_of "$key" "$t")
        [[ -n $v && -n $base ]] || continue
        ((any)) && line+=","
        line+=" $t/nginx = $(awk -v a="$v" -v b="$base" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "n/a" }')"
        any=1
      done
      ((any)) || line+=" n/a"
      echo "$line"
    done
    for key in "${SCENARIOS[@]}"; do
      floor=$(cpu_of "$key" floor)
      [[ -n $floor ]] || continue
      line="- ${SC_LABEL[$key]}, proxy CPU µs/request above the floor ($floor µs):"
      for t in "${ALL_PROXIES[@]}"; do
        v=$(cpu_of "$key" "$t")
        [[ -n $v ]] && line+=" $t $(awk -v a="$v" -v b="$floor" 'BEGIN { printf "%+.2f", a - b }'),"
      done
      echo "${line%,}"
    done
    echo
    for key in "${SCENARIOS[@]}"; do
      label=${SC_LABEL[$key]}
      v=$(cpu_of "$key" portico) base=$(cpu_of "$key" nginx)
      if [[ -n $v && -n $base ]]; then
        printf '**portico/nginx CPU µs per request, %s: %s** (portico %.2f µs, nginx %.2f µs; below 1 means portico is cheaper)\n\n' \
          "$label" "$(awk -v a="$v" -v b="$base" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "n/a" }')" "$v" "$base"
      else
        missing=portico
        [[ -n $v ]] && missing=nginx
        if [[ -n ${T_PORT[$missing]:-} ]]; then why="no valid $missing run: see the valid runs column"; else why="$missing was not run: see below"; fi
        printf '**portico/nginx CPU µs per request, %s: n/a** (%s)\n\n' "$label" "$why"
      fi
    done
    for t in "${ALL_PROXIES[@]}"; do
      [[ -n ${T_NOTE[$t]:-} ]] && echo "- $t: ${T_NOTE[$t]}"
    done
    true
  } >"$RATIOS"

  mkdir -p "$RESULTS_DIR"
  [[ -e $RESULTS_DIR/.gitkeep ]] || : >"$RESULTS_DIR/.gitkeep"
  REPORT=$RESULTS_DIR/e2e-$STAMP.md
  CMD="DURATION=$DURATION REPEATS=$REPEATS WARMUP=$WARMUP"
  [[ $CONNECTIONS == 50 ]] || CMD+=" CONNECTIONS=$CONNECTIONS"
  [[ $CONNECTIONS_1M == 10 ]] || CMD+=" CONNECTIONS_1M=$CONNECTIONS_1M"
  CMD+=" bash bench/e2e/run.sh"
  ((ONLY_EXPLICIT == 0)) || CMD+=" --only $ONLY"
  {
    echo "# portico end-to-end benchmark, $(date '+%Y-%m-%d %H:%M:%S %Z')"
    echo
    echo "- command: \`$CMD\`"
    echo "- machine: $(machine_desc)"
    for key in "${SCENARIOS[@]}"; do
      echo "- load, ${SC_LABEL[$key]}: \`wrk -t1 -c${SC_CONNS[$key]} -d${DURATION}s --latency$([[ $key == newconn ]] && echo " -H 'Connection: close'") http://…${SC_PATH[$key]}\`"
    done
    echo "- ${WARMUP}s warm-up before each run, median of $REPEATS run(s)"
    echo "- pinning: $PINNING"
    echo "- other load: CPUs ${BUSY_BEFORE}% busy in the second before the first run (servers idle)"
    echo "- origin: $(version_of nginx), 1 worker, static files (sendfile on), access_log off"
    if [[ -n ${T_PORT[portico]:-} ]]; then
      echo "- portico: \`reverse_proxy --listen 127.0.0.1:${T_PORT[portico]} --upstream 127.0.0.1:$O_PORT --threads 1\`, $(portico_desc)"
    fi
    [[ -n ${T_PORT[floor]:-} ]] && echo "- floor (${FLOOR_SCENARIOS# }scenarios; not a proxy): \`bench/floor/forward.cpp\`, one origin connection per client connection, bytes forwarded unparsed, one recv per readable socket, a round's sends (requests to the origin, responses to the clients) in one io_uring_enter: what the kernel costs any keep-alive proxy here"
    [[ $DEFER_ACCEPT == 1 ]] && echo "- DEFER_ACCEPT=1: TCP_DEFER_ACCEPT on the listeners of portico (\`defer_accept_seconds: 1\`), nginx (\`listen ... deferred\`) and HAProxy (\`bind ... defer-accept\`); h2o has no such setting"
    [[ -n ${T_PORT[nginx]:-} ]] && echo "- nginx: $(version_of nginx), 1 worker, upstream \`keepalive 64\`, \`proxy_max_temp_file_size 0\` (large bodies are not buffered to disk), no access log"
    [[ -n ${T_PORT[haproxy]:-} ]] && echo "- haproxy: $(version_of haproxy), 1 worker/thread, keep-alive to the origin, splicing \`${HAPROXY_SPLICE:-auto}\` (HAPROXY_SPLICE), no access log"
    [[ -n ${T_PORT[h2o]:-} ]] && echo "- h2o: $(version_of h2o), 1 worker/thread, keep-alive to the origin, no access log"
    echo "- wrk: $(version_of wrk)"
    echo
    echo "CPU µs/req = (utime+stime of the server's processes and threads over the measured run) ÷ completed requests."
    echo "\"vs direct\" = req/s ÷ the better of the direct runs before and after the proxies."
    echo "New conns/req = TCP connections accepted during the measured run ÷ completed requests: by the target (the kernel's PassiveOpens minus the origin's; for direct, the origin's; PassiveOpens counts the whole machine, so other local traffic inflates it) and by the origin (nginx stub_status \`accepts\`). newconn runs in which the target accepted fewer than 0.9 connections per request are not counted (\"reused\")."
    echo
    cat "$SUMMARY"
    echo
    cat "$RATIOS"
    echo
    echo "<details><summary>every run</summary>"
    echo
    echo "| scenario | target | run | requests | req/s | p99 ms | errors | proxy µs/req | proxy CPU % | origin µs/req | conns to the target | conns to the origin | counted |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    awk -F'\t' '{ printf "| %s | %s | %s | %s | %.0f | %.3f | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $12, $13, ($11 == "ok" ? "yes" : "no: " $11) }' "$RAW"
    echo
    echo "</details>"
  } >"$REPORT"

  echo
  cat "$SUMMARY"
  echo
  cat "$RATIOS"
  echo "report: ${REPORT#"$ROOT"/}"
fi # RUN_H1

# ---------------------------------------------------------------------------------------------
# HTTP/2 scenarios (h2c, h2tls, h2up) with h2load. See bench/e2e/h2.md.
# ---------------------------------------------------------------------------------------------
if ((RUN_H2)); then
  H2_DIR=$TMP/h2
  mkdir -p "$H2_DIR"
  # One self-signed certificate for every server, made here and deleted with $TMP.
  if ! openssl req -x509 -newkey rsa:2048 -nodes -keyout "$H2_DIR/key.pem" -out "$H2_DIR/cert.pem" -days 2 \
    -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" >"$H2_DIR/openssl.log" 2>&1; then
    sed 's/^/    /' "$H2_DIR/openssl.log" >&2
    die "could not make a test certificate"
  fi
  cat "$H2_DIR/cert.pem" "$H2_DIR/key.pem" >"$H2_DIR/combined.pem" # HAProxy wants both in one file
  chmod 644 "$H2_DIR"/*.pem
  # The client offers only these, so every server negotiates the same cipher: ECDHE (X25519 by
  # default) with AES-128-GCM, TLS 1.3 where the server has it.
  TLS13_CIPHER=TLS_AES_128_GCM_SHA256
  TLS12_CIPHER=ECDHE-RSA-AES128-GCM-SHA256
  TLS_NGINX="ssl_certificate $H2_DIR/cert.pem; ssl_certificate_key $H2_DIR/key.pem; ssl_protocols TLSv1.2 TLSv1.3;"

  # The HTTP/2 origin: nginx with one worker serving the same files over h2c (prior knowledge) and
  # h2 over TLS. It is the "direct" target of h2c and h2tls and the upstream of h2up.
  OH_DIR=$TMP/origin-h2
  mkdir -p "$OH_DIR/tmp"
  pick_port
  OH_C=$REPLY
  pick_port
  OH_S=$REPLY
  nginx_origin_conf --sendfile "$OH_DIR" "$O_DIR/www" 65 "listen 127.0.0.1:$OH_C http2;" \
    "listen 127.0.0.1:$OH_S ssl http2;" "$TLS_NGINX" >"$OH_DIR/origin.conf"
  start_nginx origin-h2 "$OH_DIR" origin.conf
  OH_PID=$REPLY
  wait_listen origin-h2 "$OH_PID" "$OH_C" "$OH_DIR/stdout.log" "$OH_DIR/error.log" || die "HTTP/2 origin nginx did not start"

  check_h2() { # check_h2 URL FILE : GET over HTTP/2 returns 200 and exactly FILE's bytes
    local url=$1 file=$2 out mode=(--http2-prior-knowledge)
    [[ $url == https:* ]] && mode=(--http2 -k)
    out=$(curl -sS -m 5 "${mode[@]}" -o "$TMP/check.body" -w '%{http_code} %{http_version}' "$url" 2>"$TMP/check.err") || out="000 -"
    [[ $out == "200 2" ]] && cmp -s "$TMP/check.body" "$file" && return 0
    log "GET $url over HTTP/2: status/version '$out', body $(wc -c <"$TMP/check.body" 2>/dev/null || echo 0) bytes (want '200 2', $(wc -c <"$file") bytes) $(cat "$TMP/check.err" 2>/dev/null)"
    return 1
  }
  for u in "http://127.0.0.1:$OH_C" "https://127.0.0.1:$OH_S"; do
    check_h2 "$u/1k" "$O_DIR/www/1k" || die "HTTP/2 origin does not serve its files"
  done

  declare -A H2_PORT H2_PID H2_NOTE H2_DEAD H2_CMD
  H2_TARGETS=()
  add_h2_note() { H2_NOTE[$1]="${H2_NOTE[$1]:+${H2_NOTE[$1]}; }$2"; }

  h2_register() { # h2_register SCEN NAME PID PORT LOG... : check it answers over HTTP/2, then keep it
    local scen=$1 name=$2 pid=$3 port=$4 scheme=http
    [[ $scen == h2tls ]] && scheme=https
    if wait_listen "$name" "$pid" "$port" "${@:5}" && check_h2 "$scheme://127.0.0.1:$port/1k" "$O_DIR/www/1k" &&
      check_h2 "$scheme://127.0.0.1:$port/5b" "$O_DIR/www/5b"; then
      H2_PORT[$scen,$name]=$port H2_PID[$scen,$name]=$pid
      H2_TARGETS+=("$name")
    else
      add_h2_note "$scen,$name" "failed to start or to proxy correctly over HTTP/2 (see the script's messages)"
      stop_root "$pid"
    fi
  }

  h2_start() { # h2_start SCEN : start every proxy that can do SCEN, each one listening for it
    local scen=$1 port up d
    H2_TARGETS=()
    up=127.0.0.1:$O_PORT
    [[ $scen == h2up ]] && up=127.0.0.1:$OH_C

    # portico
    if [[ -f $PORTICO_BIN && -x $PORTICO_BIN ]]; then
      pick_port
      port=$REPLY
      d=$TMP/portico-$scen
      mkdir -p "$d"
      local args=(--listen "127.0.0.1:$port" --upstream "$up" --threads 1)
      case $scen in
        h2c) args+=(--h2c) ;;
        h2tls) args+=(--tls-cert "$H2_DIR/cert.pem" --tls-key "$H2_DIR/key.pem") ;;
        h2up) args+=(--h2c --upstream-h2) ;;
      esac
      H2_CMD[$scen,portico]="${PORTICO_ORIG#"$ROOT"/} ${args[*]//$H2_DIR\//}"
      start_server "portico ($scen)" "$d/out.log" "$PORTICO_BIN" "${args[@]}"
      h2_register "$scen" portico "$REPLY" "$port" "$d/out.log"
    else
      add_h2_note "$scen,portico" "skipped: binary not found at $PORTICO_BIN"
    fi

    # nginx: no HTTP/2 to upstreams (proxy_http_version has no 2), so not in h2up
    if [[ $scen == h2up ]]; then
      add_h2_note "$scen,nginx" "not run: nginx cannot speak HTTP/2 to a proxied upstream"
    else
      pick_port
      port=$REPLY
      d=$TMP/nginx-$scen
      mkdir -p "$d/tmp"
      if [[ $scen == h2tls ]]; then
        nginx_proxy_conf "$d" "$up" "listen 127.0.0.1:$port ssl http2;" "$TLS_NGINX" >"$d/proxy.conf"
      else
        nginx_proxy_conf "$d" "$up" "listen 127.0.0.1:$port http2;" >"$d/proxy.conf"
      fi
      start_nginx "nginx ($scen)" "$d" proxy.conf
      h2_register "$scen" nginx "$REPLY" "$port" "$d/stdout.log" "$d/error.log"
    fi

    # HAProxy: h2 frontends ("proto h2" for prior knowledge, ALPN h2 on TLS); "proto h2" on the
    # server line in h2up
    if ((HAVE_HAPROXY)); then
      pick_port
      port=$REPLY
      d=$TMP/haproxy-$scen
      mkdir -p "$d"
      local bind="bind 127.0.0.1:$port proto h2" srv="server o1 $up"
      [[ $scen == h2tls ]] && bind="bind 127.0.0.1:$port ssl crt $H2_DIR/combined.pem alpn h2"
      [[ $scen == h2up ]] && srv+=" proto h2"
      haproxy_conf "$bind" "$srv" >"$d/haproxy.cfg"
      if haproxy -c -q -f "$d/haproxy.cfg" >"$d/check.log" 2>&1; then
        start_server "haproxy ($scen)" "$d/stdout.log" haproxy -db -f "$d/haproxy.cfg"
        h2_register "$scen" haproxy "$REPLY" "$port" "$d/stdout.log"
      else
        add_h2_note "$scen,haproxy" "skipped: configuration rejected by $(haproxy -v 2>/dev/null | head -n 1)"
        sed 's/^/    /' "$d/check.log" >&2
      fi
    else
      add_h2_note "$scen,haproxy" "skipped: haproxy not available"
    fi

    # h2o: HTTP/2 on both listeners; its proxy speaks HTTP/1.1 only (h2o 2.2), so not in h2up
    if [[ $scen == h2up ]]; then
      add_h2_note "$scen,h2o" "not run: h2o $(h2o --version 2>/dev/null | head -n 1 | awk '{ print $3 }') proxies over HTTP/1.1 only"
    elif ((HAVE_H2O)); then
      pick_port
      port=$REPLY
      d=$TMP/h2o-$scen
      mkdir -p "$d"
      {
        echo "num-threads: 1"
        echo "listen:"
        echo "  host: 127.0.0.1"
        echo "  port: $port"
        if [[ $scen == h2tls ]]; then
          echo "  ssl:"
          echo "    certificate-file: $H2_DIR/cert.pem"
          echo "    key-file: $H2_DIR/key.pem"
        fi
        echo "error-log: $d/error.log"
        echo "hosts:"
        echo "  default:"
        echo "    paths:"
        echo "      \"/\":"
        echo "        proxy.reverse.url: \"http://$up/\""
      } >"$d/h2o.conf"
      if h2o -t -c "$d/h2o.conf" >"$d/check.log" 2>&1; then
        start_server "h2o ($scen)" "$d/stdout.log" h2o -c "$d/h2o.conf"
        h2_register "$scen" h2o "$REPLY" "$port" "$d/stdout.log" "$d/error.log"
      else
        add_h2_note "$scen,h2o" "skipped: configuration rejected by $(h2o --version 2>/dev/null | head -n 1)"
        sed 's/^/    /' "$d/check.log" >&2
      fi
    else
      add_h2_note "$scen,h2o" "skipped: h2o not available"
    fi
  }

  h2_stop() { # h2_stop SCEN : stop the proxies of SCEN one by one and note how each exited
    local scen=$1 t pid st
    for t in ${H2_TARGETS[@]+"${H2_TARGETS[@]}"}; do
      pid=${H2_PID[$scen,$t]}
      stop_root "$pid"
      st=${EXIT_STATUS[$pid]:-0}
      case $st in
        0 | 143) ;;
        137) add_h2_note "$scen,$t" "did not exit within 3 s of SIGTERM and was killed" ;;
        *)
          if ((st > 128)); then
            add_h2_note "$scen,$t" "ended with signal $((st - 128)) (SIG$(kill -l $((st - 128)) 2>/dev/null || echo '?'))"
          else
            add_h2_note "$scen,$t" "exited with status $st"
          fi
          ;;
      esac
      [[ -n ${H2_DEAD[$scen,$t]:-} ]] && add_h2_note "$scen,$t" "exited during the run; later runs skipped"
      [[ -n ${H2_NOTE[$scen,$t]:-} ]] && log "$t ($scen): ${H2_NOTE[$scen,$t]}"
    done
    true
  }

  H2_LOG=$TMP/h2load.out
  run_h2load() { # run_h2load URL SECONDS : output in $H2_LOG; bounded by timeout
    timeout -k 5 $(($2 + 30)) "${PIN_CLI[@]}" h2load -t1 -c"$H2_CLIENTS" -m"$H2_STREAMS" -D "$2" \
      --tls13-ciphers="$TLS13_CIPHER" --ciphers="$TLS12_CIPHER" "$1" >"$H2_LOG" 2>&1 &
    WRK_PID=$!
    finish_wrk
  }

  parse_h2load() { # parse_h2load FILE : "succeeded rps mean_ms errors protocol tls"
    awk '
      /^finished in / { rps = $4 + 0 }
      /^requests: / { for (i = 2; i < NF; i++) v[$(i + 1)] = $i + 0 }
      /^status codes: / { bad = $9 + $11 }
      /^Application protocol:/ { proto = $3 }
      /^TLS Protocol:/ { tls = $3 }
      /^Cipher:/ { tls = tls "/" $2 }
      /^Server Temp Key:/ { tls = tls "/" $4 }
      /^time for request:/ {
        x = $6; u = x; sub(/^[0-9.]+/, "", u); x += 0
        if (u == "us") x /= 1000; else if (u == "s") x *= 1000
        mean = x
      }
      END {
        # "failed" counts requests that ended without a response or with a 4xx/5xx
        err = v["failed,"] + v["timeout"]
        if (err < bad) err = bad
        printf "%d %.2f %.3f %d %s %s\n", v["succeeded,"], rps, mean, err, (proto == "" ? "-" : proto), (tls == "" ? "-" : tls)
      }' "$1"
  }

  cpu_line() { awk -v c="cpu$PROXY_CPU" '$1 == c { print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat; }

  H2_RAW=$TMP/h2raw.tsv
  : >"$H2_RAW"
  H2_OTHER_MAX=${H2_OTHER_MAX:-15}

  measure_h2() { # measure_h2 SCEN TARGET REP URL PROXY_ROOT|"" ORIGIN_ROOT
    local scen=$1 target=$2 rep=$3 url=$4 root=$5 oroot=$6 ppids="" opids try
    local p0 p1 o0 o1 t0 t1 c0 c1 reqs rps mean errs proto tls load flag other
    for ((try = 1; try <= 3; try++)); do
      if ((WARMUP > 0)); then run_h2load "$url" "$WARMUP" || true; fi
      load=$(awk '{ print $1 }' /proc/loadavg)
      p0=0 p1=0
      [[ -n $root ]] && ppids=$(descendants "$root")
      opids=$(descendants "$oroot")
      # shellcheck disable=SC2086
      { c0=$(cpu_line); [[ -n $root ]] && p0=$(cpu_ticks $ppids); o0=$(cpu_ticks $opids); t0=$(date +%s%N); }
      if ! run_h2load "$url" "$DURATION"; then
        log "h2load failed against $target ($scen, run $rep):"
        sed 's/^/    /' "$H2_LOG" >&2
      fi
      # shellcheck disable=SC2086
      { t1=$(date +%s%N); o1=$(cpu_ticks $opids); [[ -n $root ]] && p1=$(cpu_ticks $ppids); c1=$(cpu_line); }
      read -r reqs rps mean errs proto tls < <(parse_h2load "$H2_LOG")
      # CPU time on the servers' CPU that neither the proxy nor the origin used: other work
      # (or the hypervisor, as steal time, or interrupts)
      other=$(awk -v a="$c0" -v b="$c1" -v p=$((p1 - p0)) -v o=$((o1 - o0)) 'BEGIN {
        split(a, x, " "); split(b, y, " "); tot = y[2] - x[2]
        printf "%.0f", (tot > 0 ? 100 * (y[1] - x[1] - p - o) / tot : 0) }')
      flag=ok
      if ((errs > 0)); then
        flag=errors
      elif ((reqs < 10 * H2_CLIENTS)); then
        flag=stalled
        log "warning: only $reqs requests completed in ${DURATION}s with $H2_CLIENTS clients: $target stalled"
      elif [[ $proto != h2 && $proto != h2c ]]; then
        flag="not-h2($proto)"
      fi
      if [[ -n $root ]] && ! kill -0 "$root" 2>/dev/null; then flag=died; fi
      if [[ $flag == ok ]] && ((other > H2_OTHER_MAX && try < 3)); then
        log "$target ($scen, run $rep): ${other}% of CPU $PROXY_CPU went to other work (load $load): run again"
        printf '%s\t%s\t%s\t%d\t%.2f\t%.3f\t%d\t-\t-\t-\tinterference\t%s\t%s\t%s\t%s\n' "$scen" "$target" "$rep" "$reqs" "$rps" "$mean" "$errs" \
          "$load" "$other" "$proto" "$tls" >>"$H2_RAW"
        continue
      fi
      break
    done
    awk -v f="$flag" -v s="$scen" -v t="$target" -v r="$rep" -v n="$reqs" -v rps="$rps" -v mean="$mean" -v e="$errs" \
      -v pt=$((p1 - p0)) -v ot=$((o1 - o0)) -v hz="$CLK_TCK" -v ns=$((t1 - t0)) -v proxy="${root:+1}" \
      -v load="$load" -v other="$other" -v proto="$proto" -v tls="$tls" '
      BEGIN {
        pus = (proxy && n > 0) ? sprintf("%.2f", pt * 1e6 / hz / n) : "-"
        ppc = proxy ? sprintf("%.1f", pt / hz / (ns / 1e9) * 100) : "-"
        ous = n > 0 ? sprintf("%.2f", ot * 1e6 / hz / n) : "-"
        printf "%s\t%s\t%s\t%d\t%.2f\t%.3f\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s, t, r, n, rps, mean, e, pus, ppc, ous, f, load, other, proto, tls
      }' >>"$H2_RAW"
    log "$(tail -n 1 "$H2_RAW" | awk -F'\t' '{ printf "%-5s %-15s run %s: %9.0f req/s  mean %7.3f ms  errors %d  proxy %s us/req (%s%% CPU)  origin %s us/req  load %s  other %s%%  %s %s%s", $1, $2, $3, $5, $6, $7, $8, $9, $10, $12, $13, $14, $15, ($11 == "ok" ? "" : "  [" $11 ": not counted]") }')"
  }

  H2_SCENARIOS=()
  for s in h2c h2tls h2up; do [[ -n ${WANT[$s]:-} ]] && H2_SCENARIOS+=("$s"); done
  log "HTTP/2 scenarios: ${H2_SCENARIOS[*]}; h2load -c$H2_CLIENTS -m$H2_STREAMS, ${DURATION}s runs (+${WARMUP}s warm-up), median of $REPEATS"
  H2_UPTIME_START=$(uptime)
  for scen in "${H2_SCENARIOS[@]}"; do
    scheme=http dport=$OH_C
    [[ $scen == h2tls ]] && scheme=https dport=$OH_S
    h2_start "$scen"
    log "$scen: direct ${H2_TARGETS[*]:-}; uptime:$(uptime | sed 's/.*load/ load/')"
    for ((rep = 1; rep <= REPEATS; rep++)); do measure_h2 "$scen" "direct (before)" "$rep" "$scheme://127.0.0.1:$dport/1k" "" "$OH_PID"; done
    for ((rep = 1; rep <= REPEATS; rep++)); do
      for t in ${H2_TARGETS[@]+"${H2_TARGETS[@]}"}; do
        [[ -n ${H2_DEAD[$scen,$t]:-} ]] && continue
        if ! kill -0 "${H2_PID[$scen,$t]}" 2>/dev/null; then
          log "$t ($scen) is no longer running: dropped from the rest of the run"
          H2_DEAD[$scen,$t]=1
          continue
        fi
        oroot=$O_PID
        [[ $scen == h2up ]] && oroot=$OH_PID
        measure_h2 "$scen" "$t" "$rep" "$scheme://127.0.0.1:${H2_PORT[$scen,$t]}/1k" "${H2_PID[$scen,$t]}" "$oroot"
      done
    done
    for ((rep = 1; rep <= REPEATS; rep++)); do measure_h2 "$scen" "direct (after)" "$rep" "$scheme://127.0.0.1:$dport/1k" "" "$OH_PID"; done
    h2_stop "$scen"
  done
  H2_UPTIME_END=$(uptime)

  # Report.
  H2_SUMMARY=$TMP/h2summary.md
  H2_CPU=$TMP/h2cpu.tsv
  : >"$H2_CPU"
  awk -F'\t' -v cpufile="$H2_CPU" -v scens="${H2_SCENARIOS[*]}" '
    function median(key,   n, i, j, v, a) {
      n = cnt[key]
      for (i = 1; i <= n; i++) a[i] = vals[key, i]
      for (i = 2; i <= n; i++) { v = a[i]; j = i - 1; while (j >= 1 && a[j] > v) { a[j + 1] = a[j]; j-- } a[j + 1] = v }
      return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    function add(key, x) { cnt[key]++; vals[key, cnt[key]] = x + 0 }
    function fmt(key, f) { return cnt[key] ? sprintf(f, median(key)) : "—" }
    $11 == "interference" { redo[$1 SUBSEP $2]++; next }
    {
      k = $1 SUBSEP $2; seen[k] = 1; errs[k] += $7; runs[k]++
      if ($11 != "ok") { bad[k] = bad[k] (bad[k] == "" ? "" : ", ") $11; next }
      good[k]++
      add(k SUBSEP "rps", $5); add(k SUBSEP "mean", $6); add(k SUBSEP "other", $13)
      if ($8 != "-") add(k SUBSEP "pus", $8)
      if ($9 != "-") add(k SUBSEP "ppc", $9)
      if ($10 != "-") add(k SUBSEP "ous", $10)
    }
    END {
      label["h2c"] = "h2c 1 KiB"; label["h2tls"] = "h2 over TLS 1 KiB"; label["h2up"] = "h2c 1 KiB, h2 to the origin"
      nt = split("direct (before),portico,nginx,haproxy,h2o,direct (after)", tg, ",")
      ns = split(scens, sc, " ")
      print "| scenario | target | proxy CPU µs/req | req/s | vs direct | mean latency | errors | valid runs | proxy CPU % | origin CPU µs/req | other work on the servers CPU |"
      print "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
      for (s = 1; s <= ns; s++) {
        best = 0
        for (d = 0; d < 2; d++) {
          k = sc[s] SUBSEP (d ? "direct (after)" : "direct (before)")
          if (cnt[k SUBSEP "rps"]) { m = median(k SUBSEP "rps"); if (m > best) best = m }
        }
        for (i = 1; i <= nt; i++) {
          k = sc[s] SUBSEP tg[i]
          if (!(k in seen)) continue
          rps = cnt[k SUBSEP "rps"] ? median(k SUBSEP "rps") : 0
          vs = (best > 0 && cnt[k SUBSEP "rps"]) ? sprintf("%.2f", rps / best) : "—"
          valid = (good[k] + 0) "/" runs[k] (bad[k] != "" ? " (" bad[k] ")" : "") (redo[k] ? ", " redo[k] " redone" : "")
          name = (tg[i] ~ /^direct/) ? tg[i] : "**" tg[i] "**"
          printf "| %s | %s | %s | %s | %s | %s | %d | %s | %s | %s | %s |\n", label[sc[s]], name,
            fmt(k SUBSEP "pus", "**%.2f**"), fmt(k SUBSEP "rps", "%.0f"), vs, fmt(k SUBSEP "mean", "%.2f ms"), errs[k], valid,
            fmt(k SUBSEP "ppc", "%.0f"), fmt(k SUBSEP "ous", "%.2f"), fmt(k SUBSEP "other", "%.0f%%")
          if (tg[i] !~ /^direct/ && cnt[k SUBSEP "pus"]) print sc[s] "\t" tg[i] "\t" fmt(k SUBSEP "pus", "%.2f") > cpufile
        }
      }
    }' "$H2_RAW" >"$H2_SUMMARY"

  h2cpu_of() { awk -F'\t' -v s="$1" -v t="$2" '$1 == s && $2 == t { print $3 }' "$H2_CPU"; }
  ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "n/a" }'; }
  H2_RATIOS=$TMP/h2ratios.md
  {
    for scen in "${H2_SCENARIOS[@]}"; do
      base=$(h2cpu_of "$scen" nginx) ref=nginx
      [[ $scen == h2up ]] && base=$(h2cpu_of "$scen" haproxy) ref=haproxy
      line="- $scen, proxy CPU µs/request relative to $ref:"
      any=0
      for t in portico nginx haproxy h2o; do
        [[ $t == "$ref" ]] && continue
        v=$(h2cpu_of "$scen" "$t")
        [[ -n $v && -n $base ]] || continue
        ((any)) && line+=","
        line+=" $t/$ref = $(ratio "$v" "$base")"
        any=1
      done
      ((any)) || line+=" n/a"
      echo "$line"
    done
    a=$(h2cpu_of h2up portico) b=$(h2cpu_of h2c portico)
    if [[ -n $a && -n $b ]]; then
      echo "- portico, h2 upstream (h2up) vs HTTP/1.1 upstream (h2c): $a vs $b µs/request (×$(ratio "$a" "$b"))"
    fi
    a=$(h2cpu_of h2up haproxy) b=$(h2cpu_of h2c haproxy)
    if [[ -n $a && -n $b ]]; then
      echo "- haproxy, h2 upstream (h2up) vs HTTP/1.1 upstream (h2c): $a vs $b µs/request (×$(ratio "$a" "$b"))"
    fi
    echo
    for scen in "${H2_SCENARIOS[@]}"; do
      for t in portico nginx haproxy h2o; do
        [[ -n ${H2_NOTE[$scen,$t]:-} ]] && echo "- $scen, $t: ${H2_NOTE[$scen,$t]}"
      done
    done
    true
  } >"$H2_RATIOS"

  H2_REPORT=$RESULTS_DIR/h2-$STAMP.md
  {
    echo "# portico HTTP/2 benchmark, $(date '+%Y-%m-%d %H:%M:%S %Z')"
    echo
    echo "- command: \`${ONLY:+ONLY=$ONLY }$( [[ $H2_OTHER_MAX != 15 ]] && echo "H2_OTHER_MAX=$H2_OTHER_MAX ")DURATION=$DURATION REPEATS=$REPEATS WARMUP=$WARMUP bash bench/e2e/run.sh\`"
    echo "- machine: $(machine_desc)"
    echo "- load: \`h2load -t1 -c$H2_CLIENTS -m$H2_STREAMS -D $DURATION\` on GET /1k (1024 bytes), ${WARMUP}s unmeasured run before each run, median of $REPEATS run(s)"
    echo "- TLS: one self-signed RSA-2048 certificate made for the run; h2load offers only $TLS13_CIPHER (TLS 1.3) and $TLS12_CIPHER (TLS 1.2)"
    echo "- pinning: $PINNING"
    echo "- uptime at the start: $H2_UPTIME_START"
    echo "- uptime at the end: $H2_UPTIME_END"
    echo "- CPUs ${BUSY_BEFORE}% busy in the second before the first run of the script (servers idle)"
    echo "- origin for the proxies: $(version_of nginx), 1 worker, HTTP/1.1 keep-alive; direct target and h2up upstream: the same nginx build with \`listen ... http2\` (h2c, prior knowledge) and \`listen ... ssl http2\`, 1 worker"
    for scen in "${H2_SCENARIOS[@]}"; do
      [[ -n ${H2_CMD[$scen,portico]:-} ]] && echo "- portico $scen: \`${H2_CMD[$scen,portico]}\`"
    done
    echo "- portico: $(portico_desc)"
    echo "- nginx proxy: $(version_of nginx), \`worker_processes 1\`, \`listen ... http2\` / \`listen ... ssl http2\`, upstream \`keepalive 64\`, \`proxy_http_version 1.1\`, no access log"
    ((HAVE_HAPROXY)) && echo "- haproxy: $(version_of haproxy), \`nbthread 1\`, \`bind ... proto h2\` / \`bind ... ssl crt ... alpn h2\`, \`http-reuse always\`, h2up: \`server ... proto h2\`"
    ((HAVE_H2O)) && echo "- h2o: $(version_of h2o), \`num-threads: 1\`, \`proxy.reverse.url\`, no access log"
    echo "- h2load: $(version_of h2load)"
    echo
    echo "CPU µs/req = (utime+stime of the proxy's processes and threads over the measured run) ÷ requests that succeeded."
    echo "\"vs direct\" = req/s ÷ the better median of the direct runs (h2load straight to the HTTP/2 nginx) before and after the proxies."
    echo "\"other work\" = share of CPU $PROXY_CPU (the servers' CPU) used by neither the proxy nor the origin during the run (other processes, interrupts, steal); a run with more than ${H2_OTHER_MAX}% is run again (up to 3 tries)."
    echo "h2load reports no percentiles, so the latency column is its mean time per request."
    echo
    cat "$H2_SUMMARY"
    echo
    cat "$H2_RATIOS"
    echo
    echo "<details><summary>every run</summary>"
    echo
    echo "| scenario | target | run | requests | req/s | mean ms | errors | proxy µs/req | proxy CPU % | origin µs/req | counted | load (1 min) | other % | protocol | TLS |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|---|"
    awk -F'\t' '{ printf "| %s | %s | %s | %s | %.0f | %.3f | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, ($11 == "ok" ? "yes" : "no: " $11), $12, $13, $14, $15 }' "$H2_RAW"
    echo
    echo "</details>"
  } >"$H2_REPORT"

  echo
  cat "$H2_SUMMARY"
  echo
  cat "$H2_RATIOS"
  echo "report: ${H2_REPORT#"$ROOT"/}"
fi # RUN_H2
