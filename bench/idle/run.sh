#!/usr/bin/env bash
# Idle-connection memory benchmark: resident memory (RSS) each idle keep-alive client connection
# costs in portico's reverse_proxy example, next to nginx, HAProxy and h2o, measured in one run.
#
#   bash bench/idle/run.sh                    # N=10000 REPEATS=3, HTTP/1.1 and h2c
#   N=1000 REPEATS=1 bash bench/idle/run.sh   # quick look
#
# For every proxy, protocol and repeat a fresh proxy process (one worker) is started, warmed up
# with CONCURRENCY requests on as many connections (which also fills its upstream pool), and its
# RSS is read ("before"). Then bench/idle/idle_client.py opens N connections, sends one GET /5b on
# each (HTTP/1.1 keep-alive, or h2c: preface + SETTINGS + one HEADERS frame), reads and checks
# every response, and holds all N open and idle. After IDLE_SECONDS the RSS is read again
# ("with N idle"), the client checks that none of the N was closed, closes them all, and once the
# proxy has let go of its sockets the RSS is read a third time ("after close").
# Per connection = (with N idle - before) / N. RSS is Rss of /proc/PID/smaps_rollup summed over
# the proxy's process tree. The report shows medians over REPEATS.
#
# Environment:
#   N                 idle connections held open (default 10000)
#   REPEATS           measurements per proxy and protocol; the median is reported (default 3)
#   PROTOCOLS         h1, h1tls (HTTP/1.1 over TLS), h2c, h2tls (HTTP/2 over TLS), comma-separated
#                     (default h1,h2c)
#   PROXIES           any of portico,nginx,haproxy,h2o (default all four)
#   CONCURRENCY       connections being opened / awaiting their response at a time (default 16)
#   IDLE_SECONDS      seconds the N connections sit idle before RSS is read (default 2)
#   KEEPALIVE_S       idle keep-alive timeout set in every proxy, seconds (default 300)
#   PORTICO_BIN       portico binary (default build/examples/reverse_proxy in the repository)
#   INSTALL_OPTIONAL  1 (default): apt-install haproxy and h2o when missing; 0: use them only if present
#   PROXY_CPU/CLIENT_CPU  CPUs for the servers / for the client (default 0 / 1)
#   RESULTS_DIR       where the markdown report goes (default bench/results)
#
# Everything listens on 127.0.0.1 only, on free ports picked at run time. Every process the
# script starts is killed on exit and the temporary directory is removed. The exit status is 1
# when any measurement failed (fewer than N good responses, or connections lost while idle).
# See bench/README.md ("Idle connections").
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin" # nginx and haproxy live in /usr/sbin, not on a user's PATH
# shellcheck disable=SC2034 # read by log/die (bench/lib.sh)
LOG_TAG=idle
# shellcheck source=SCRIPTDIR/../lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# shellcheck disable=SC2034 # read by start_server (bench/lib.sh)
START_LOG=0 # start_server: no "started ..." line per proxy process

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
N=${N:-10000}
REPEATS=${REPEATS:-3}
PROTOCOLS=${PROTOCOLS:-h1,h2c}
PROXIES=${PROXIES:-portico,nginx,haproxy,h2o}
CONCURRENCY=${CONCURRENCY:-16}
IDLE_SECONDS=${IDLE_SECONDS:-2}
KEEPALIVE_S=${KEEPALIVE_S:-300}
PORTICO_BIN=${PORTICO_BIN:-$ROOT/build/examples/reverse_proxy}
INSTALL_OPTIONAL=${INSTALL_OPTIONAL:-1}
PROXY_CPU=${PROXY_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
RESULTS_DIR=${RESULTS_DIR:-$ROOT/bench/results}
CLIENT=$ROOT/bench/idle/idle_client.py

case ${1:-} in
  -h | --help) print_help "${BASH_SOURCE[0]}"; exit 0 ;;
  '') ;;
  *) die "unknown argument '$1' (settings are environment variables; try --help)" ;;
esac

check_var N "$N" 1 1000000
check_var REPEATS "$REPEATS" 1 50
check_var CONCURRENCY "$CONCURRENCY" 1 1000
check_var IDLE_SECONDS "$IDLE_SECONDS" 0 600
check_var KEEPALIVE_S "$KEEPALIVE_S" 10 86400
check_var PROXY_CPU "$PROXY_CPU" 0 4095
check_var CLIENT_CPU "$CLIENT_CPU" 0 4095
PROTOS=() SELECTED=()
IFS=, read -r -a _p <<<"$PROTOCOLS"
for _x in "${_p[@]}"; do
  case $_x in h1 | h1tls | h2c | h2tls) PROTOS+=("$_x") ;; '') ;; *) die "unknown protocol '$_x' in PROTOCOLS (h1, h1tls, h2c, h2tls)" ;; esac
done
IFS=, read -r -a _p <<<"$PROXIES"
for _x in "${_p[@]}"; do
  case $_x in portico | nginx | haproxy | h2o) SELECTED+=("$_x") ;; '') ;; *) die "unknown proxy '$_x' in PROXIES (portico, nginx, haproxy, h2o)" ;; esac
done
((${#PROTOS[@]} > 0)) || die "PROTOCOLS selects nothing"
((${#SELECTED[@]} > 0)) || die "PROXIES selects nothing"
[[ -f $CLIENT ]] || die "client not found: $CLIENT"
command -v python3 >/dev/null || die "python3 is required (the client is bench/idle/idle_client.py)"

# ---------------------------------------------------------------------------------------------
# Process bookkeeping and cleanup: bench/lib.sh.
# ---------------------------------------------------------------------------------------------
CLIENT_PID=""
extra_pids() { echo "${CLIENT_PID:-}"; } # the idle client, while it runs (started outside start_server)
setup_tmp idle

# ---------------------------------------------------------------------------------------------
# Packages: installed with apt only when missing; `apt-get update` only before an install.
# ---------------------------------------------------------------------------------------------
want_proxy() { [[ " ${SELECTED[*]} " == *" $1 "* ]]; }
ensure_cmd nginx nginx-light || die "nginx is required, as the origin (apt package nginx-light)"
HAVE_HAPROXY=0 HAVE_H2O=0
if want_proxy haproxy && optional_cmd haproxy haproxy; then HAVE_HAPROXY=1; fi
if want_proxy h2o && optional_cmd h2o h2o; then HAVE_H2O=1; fi

# ---------------------------------------------------------------------------------------------
# Limits and pinning.
# ---------------------------------------------------------------------------------------------
# Open files: the proxies and the client inherit this shell's limit. Each side needs N sockets
# plus a few (the proxies also hold upstream connections and their listeners).
NOFILE_HARD=$(ulimit -Hn)
if [[ $NOFILE_HARD == unlimited ]] || ((NOFILE_HARD >= 65536)); then
  ulimit -n 65536
else
  ulimit -n "$NOFILE_HARD" # the most this process may have (raising the hard limit needs privileges)
fi
NOFILE=$(ulimit -n)
NEED=$((N + CONCURRENCY + 256))
((NOFILE >= NEED)) || die "open-files limit $NOFILE (hard $NOFILE_HARD) is too low for N=$N connections (need $NEED): lower N or raise the hard limit (ulimit -Hn)"
# The proxies' own connection limits: N plus room for upstream connections. nginx starts closing
# idle keep-alive connections ("reusing connections") once fewer than 1/16 of worker_connections
# are free, so it gets twice that; it preallocates its connection array at start-up (in "before").
MAXCONN=$((N + CONCURRENCY + 128))
NGINX_WC=$((2 * MAXCONN))

pin_cpus "$PROXY_CPU" "$CLIENT_CPU" "servers on CPU $PROXY_CPU, client on CPU $CLIENT_CPU (taskset)"

# ---------------------------------------------------------------------------------------------
# portico binary: wait for a build in progress, then use a copy so that a rebuild during the run
# cannot mix two builds in one report.
# ---------------------------------------------------------------------------------------------
HAVE_PORTICO=0
if want_proxy portico; then
  for ((i = 0; i < 600; i++)); do
    if ! command -v pgrep >/dev/null || ! pgrep -x ninja >/dev/null; then break; fi
    ((i == 0)) && log "a build (ninja) is running: waiting for it to end (at most 10 min)"
    sleep 1
  done
  if copy_portico; then
    HAVE_PORTICO=1
  else
    log "portico SKIPPED: binary not found or not executable: $PORTICO_BIN (build it with 'make build' or set PORTICO_BIN)"
  fi
fi

# ---------------------------------------------------------------------------------------------
# Origin: nginx serving a 5-byte file.
# ---------------------------------------------------------------------------------------------
BODY=hello
O_DIR=$TMP/origin
mkdir -p "$O_DIR/www" "$O_DIR/tmp"
printf '%s' "$BODY" >"$O_DIR/www/5b"
chmod -R a+rX "$O_DIR/www"
pick_port
O_PORT=$REPLY
nginx_origin_conf "$O_DIR" "$O_DIR/www" "${KEEPALIVE_S}s" "listen 127.0.0.1:$O_PORT;" >"$O_DIR/origin.conf"
start_nginx origin "$O_DIR" origin.conf
O_PID=$REPLY
wait_listen origin "$O_PID" "$O_PORT" "$O_DIR/stdout.log" "$O_DIR/error.log" || die "origin nginx did not start"

# A throwaway certificate for h1tls and h2tls (P-256: what a site would use; the client does not
# verify it).
CERT=$TMP/tls/cert.pem KEY=$TMP/tls/key.pem PEM=$TMP/tls/both.pem
if [[ " ${PROTOS[*]} " == *" h1tls "* || " ${PROTOS[*]} " == *" h2tls "* ]]; then
  mkdir -p "$TMP/tls"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$KEY" \
    -out "$CERT" -days 2 -subj /CN=localhost >/dev/null 2>&1 || die "openssl could not make a test certificate"
  cat "$CERT" "$KEY" >"$PEM"
  chmod 644 "$KEY" "$PEM" # the nginx worker (not root) reads them
fi

# ---------------------------------------------------------------------------------------------
# Proxies: one worker, access logs off, keep-alive timeout KEEPALIVE_S, connection limits above N.
# start_proxy NAME PROTO DIR : sets P_PID and P_PORT, or returns 1 (reason in P_WHY)
# ---------------------------------------------------------------------------------------------
declare -A CMDLINE NOTE
start_proxy() {
  local name=$1 proto=$2 d=$3 port
  mkdir -p "$d"
  pick_port
  port=$REPLY
  P_WHY=""
  case $name in
    portico)
      local args=(--listen "127.0.0.1:$port" --upstream "127.0.0.1:$O_PORT" --threads 1
        --keepalive-timeout-ms $((KEEPALIVE_S * 1000)))
      [[ $proto == h2c ]] && args+=(--h2c)
      [[ $proto == h1tls || $proto == h2tls ]] && args+=(--tls-cert "$CERT" --tls-key "$KEY")
      CMDLINE[$name,$proto]="reverse_proxy ${args[*]}"
      start_server "portico" "$d/out.log" "$PORTICO_BIN" "${args[@]}"
      ;;
    nginx)
      local listen="listen 127.0.0.1:$port;"
      [[ $proto == h2c ]] && listen="listen 127.0.0.1:$port http2;" # h2c with prior knowledge (1.22)
      [[ $proto == h1tls ]] && listen="listen 127.0.0.1:$port ssl; ssl_certificate $CERT; ssl_certificate_key $KEY;"
      [[ $proto == h2tls ]] && listen="listen 127.0.0.1:$port ssl http2; ssl_certificate $CERT; ssl_certificate_key $KEY;"
      mkdir -p "$d/tmp"
      cat >"$d/proxy.conf" <<EOF
$(nginx_head "$d" 1 "$NGINX_WC" "$NOFILE")
    tcp_nodelay on;
    keepalive_timeout ${KEEPALIVE_S}s;
    keepalive_requests 1000000;
$(nginx_upstream "127.0.0.1:$O_PORT" 64 1000000)
    server {
        $listen
$(nginx_proxy_location)
    }
}
EOF
      CMDLINE[$name,$proto]="nginx: worker_processes 1, worker_connections $NGINX_WC, $listen keepalive_timeout ${KEEPALIVE_S}s, upstream keepalive 64, access_log off"
      start_nginx nginx "$d" proxy.conf
      ;;
    haproxy)
      local bind="bind 127.0.0.1:$port"
      [[ $proto == h2c ]] && bind+=" proto h2"
      [[ $proto == h1tls ]] && bind+=" ssl crt $PEM alpn http/1.1"
      [[ $proto == h2tls ]] && bind+=" ssl crt $PEM alpn h2"
      cat >"$d/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn $MAXCONN
    # HAProxy sizes its fd table for a server side per connection (about 2 x maxconn) and
    # refuses to start when the open-files limit is lower; idle clients need one fd each.
    no strict-limits
defaults
    mode http
    maxconn $MAXCONN
    timeout connect 5s
    timeout client ${KEEPALIVE_S}s
    timeout server 30s
    timeout http-keep-alive ${KEEPALIVE_S}s
    timeout http-request 30s
    option http-keep-alive
    http-reuse always
frontend fe
    $bind
    default_backend origin
backend origin
    server o1 127.0.0.1:$O_PORT
EOF
      CMDLINE[$name,$proto]="haproxy -db: nbthread 1, maxconn $MAXCONN, no strict-limits, $bind, timeout client/http-keep-alive ${KEEPALIVE_S}s, http-reuse always, no logging"
      if ! haproxy -c -q -f "$d/haproxy.cfg" >"$d/check.log" 2>&1; then
        P_WHY="configuration rejected by $(haproxy -v 2>/dev/null | head -n 1): $(head -c 300 "$d/check.log" | tr '\n' ' ')"
        return 1
      fi
      start_server haproxy "$d/stdout.log" haproxy -db -f "$d/haproxy.cfg"
      ;;
    h2o)
      cat >"$d/h2o.conf" <<EOF
num-threads: 1
max-connections: $MAXCONN
http1-request-timeout: $KEEPALIVE_S
http2-idle-timeout: $KEEPALIVE_S
listen:
  host: 127.0.0.1
  port: $port$( [[ $proto == h1tls || $proto == h2tls ]] && printf '\n  ssl:\n    certificate-file: %s\n    key-file: %s' "$CERT" "$KEY")
error-log: $d/error.log
hosts:
  default:
    paths:
      "/":
        proxy.reverse.url: "http://127.0.0.1:$O_PORT/"
EOF
      CMDLINE[$name,$proto]="h2o: num-threads 1, max-connections $MAXCONN, http1-request-timeout/http2-idle-timeout $KEEPALIVE_S, proxy.reverse.url, no access log"
      [[ $proto == h2c ]] && CMDLINE[$name,$proto]+=" (h2c with prior knowledge on the same plain listener)"
      if ! h2o -t -c "$d/h2o.conf" >"$d/check.log" 2>&1; then
        P_WHY="configuration rejected by $(h2o --version 2>/dev/null | head -n 1): $(head -c 300 "$d/check.log" | tr '\n' ' ')"
        return 1
      fi
      start_server h2o "$d/stdout.log" h2o -c "$d/h2o.conf"
      ;;
  esac
  P_PID=$REPLY P_PORT=$port
  if ! wait_listen "$name" "$P_PID" "$port" "$d"/*.log; then
    P_WHY="did not start (see the script's messages)"
    stop_root "$P_PID"
    return 1
  fi
}

# ---------------------------------------------------------------------------------------------
# Measurement.
# ---------------------------------------------------------------------------------------------
mem_of() { # mem_of ROOT_PID : "rss_kib anon_kib fds processes", summed over the process tree
  local p files=() fds=0 np=0 f
  for p in $(descendants "$1"); do
    running "$p" || continue
    np=$((np + 1))
    if [[ -r /proc/$p/smaps_rollup ]]; then files+=("/proc/$p/smaps_rollup"); else files+=("/proc/$p/status"); fi
    f=$(find "/proc/$p/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l) || f=0
    fds=$((fds + f))
  done
  # smaps_rollup: Rss and Anonymous; status (older kernels): VmRSS and RssAnon
  awk -v fds="$fds" -v np="$np" '
    /^(Rss|VmRSS):/ { r += $2 } /^(Anonymous|RssAnon):/ { a += $2 }
    END { printf "%d %d %d %d\n", r, a, fds, np }' "${files[@]}" 2>/dev/null
}

HAVE_SS=0
command -v ss >/dev/null && HAVE_SS=1
server_conns() { # server_conns PORT : accepted TCP connections of 127.0.0.1:PORT not yet closed by the server
  ss -Htna "( sport = :$1 )" 2>/dev/null | awk '$1 != "LISTEN" && $1 != "TIME-WAIT" { n++ } END { print n + 0 }'
}

wait_line() { # wait_line FILE REGEX PID SECONDS : until FILE has a line matching REGEX; 1 if PID ended or timeout
  local f=$1 re=$2 pid=$3 t=$4 i
  for ((i = 0; i < t * 10; i++)); do
    grep -Eq "$re" "$f" 2>/dev/null && return 0
    if ! running "$pid"; then grep -Eq "$re" "$f" 2>/dev/null && return 0; return 1; fi
    sleep 0.1
  done
  return 1
}

wait_client_exit() { # wait_client_exit SECONDS : kills the client after SECONDS
  local i
  for ((i = 0; i < $1 * 10; i++)); do
    running "$CLIENT_PID" || break
    sleep 0.1
  done
  if running "$CLIENT_PID"; then kill -KILL "$CLIENT_PID" 2>/dev/null || true; fi
  wait "$CLIENT_PID" 2>/dev/null || true
  CLIENT_PID=""
}

RAW=$TMP/raw.tsv
: >"$RAW"
FAILED=0
OPEN_TIMEOUT=$((60 + N / 100)) # seconds for the client to open all N (about 1-2 s per 1000 here)

# measure NAME PROTO REP : one fresh proxy, one measurement, one line in $RAW
measure() {
  local name=$1 proto=$2 rep=$3 d="$TMP/$1-$2-$3" out ready alive i
  local b_rss b_anon b_fds w_rss w_anon w_fds a_rss a_anon a_fds est ok=0 lost=0 status=ok why=""
  if ! start_proxy "$name" "$proto" "$d"; then
    log "$name ($proto, run $rep): $P_WHY"
    printf '%s\t%s\t%s\t-\t-\t-\t-\t-\t-\t-\t-\t-\t0\t0\tfailed: %s\n' "$name" "$proto" "$rep" "$P_WHY" >>"$RAW"
    FAILED=1
    return
  fi
  # Warm-up: CONCURRENCY requests on as many connections at once (also fills the upstream pool
  # to about the size it has during the measurement), then all closed again.
  if ! timeout -k 2 60 "${PIN_CLI[@]}" python3 "$CLIENT" 127.0.0.1 "$P_PORT" "$CONCURRENCY" "$proto" /5b "$BODY" \
    --concurrency "$CONCURRENCY" --open-timeout 20 --no-hold >"$d/warmup.out" 2>&1; then
    why="warm-up failed: $(tr '\n' ' ' <"$d/warmup.out" | head -c 300)"
    log "$name ($proto, run $rep): $why"
    printf '%s\t%s\t%s\t-\t-\t-\t-\t-\t-\t-\t-\t-\t0\t0\tfailed: %s\n' "$name" "$proto" "$rep" "$why" >>"$RAW"
    stop_root "$P_PID"
    FAILED=1
    return
  fi
  sleep 1
  read -r b_rss b_anon b_fds _ < <(mem_of "$P_PID")

  out=$d/client.out
  "${PIN_CLI[@]}" python3 "$CLIENT" 127.0.0.1 "$P_PORT" "$N" "$proto" /5b "$BODY" --concurrency "$CONCURRENCY" \
    --open-timeout "$OPEN_TIMEOUT" --hold-timeout $((OPEN_TIMEOUT + IDLE_SECONDS + 120)) >"$out" 2>"$d/client.err" &
  CLIENT_PID=$!
  if wait_line "$out" '^ready ' "$CLIENT_PID" $((OPEN_TIMEOUT + 20)); then
    ready=$(grep -m1 '^ready ' "$out")
    ok=$(sed -E 's/^ready ok=([0-9]+).*/\1/' <<<"$ready")
  else
    ready="client gave no 'ready' line: $(tail -n 3 "$out" "$d/client.err" 2>/dev/null | tr '\n' ' ' | head -c 300)"
    ok=0
  fi
  if ((ok < N)); then
    status=failed why="only $ok of $N connections got a good response (${ready#ready })"
    log "FAILED: $name ($proto, run $rep): $why"
  fi
  sleep "$IDLE_SECONDS"
  read -r w_rss w_anon w_fds _ < <(mem_of "$P_PID")
  est=-
  if ((HAVE_SS)); then
    est=$(ss -Htn state established "( sport = :$P_PORT )" 2>/dev/null | wc -l)
    if ((est < ok)); then
      status=failed why="${why:+$why; }the proxy side has only $est established connections, the client $ok"
      log "FAILED: $name ($proto, run $rep): the proxy side has only $est established connections"
    fi
  fi
  if [[ -n $CLIENT_PID ]] && running "$CLIENT_PID"; then
    kill -USR1 "$CLIENT_PID" 2>/dev/null || true # check that every held connection is still open
    if wait_line "$out" '^alive ' "$CLIENT_PID" 30; then
      alive=$(grep -m1 '^alive ' "$out")
      lost=$(awk '{ print $4 }' <<<"$alive")
      if ((lost > 0)); then
        status=failed why="${why:+$why; }$lost of $ok connections were closed by the proxy while idle (${alive})"
        log "FAILED: $name ($proto, run $rep): $lost connections lost while idle: $alive"
      fi
    else
      status=failed why="${why:+$why; }client did not report on the held connections"
    fi
    kill -USR1 "$CLIENT_PID" 2>/dev/null || true # close them all
  fi
  wait_client_exit 30
  # Until the proxy has closed the client sockets (at most 15 s), then one more second.
  for ((i = 0; i < 150; i++)); do
    if ((HAVE_SS)); then
      (($(server_conns "$P_PORT") == 0)) && break
    else
      read -r a_rss a_anon a_fds _ < <(mem_of "$P_PID")
      ((a_fds <= b_fds + 2)) && break
    fi
    sleep 0.1
  done
  sleep 1
  read -r a_rss a_anon a_fds _ < <(mem_of "$P_PID")
  if ! running "$P_PID"; then status=failed why="${why:+$why; }the proxy died"; fi
  stop_root "$P_PID"
  [[ $status == ok ]] || FAILED=1
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$proto" "$rep" \
    "$b_rss" "$w_rss" "$a_rss" "$b_anon" "$w_anon" "$a_anon" "$b_fds" "$w_fds" "$a_fds" "$ok" "$lost" \
    "$status${why:+: $why}" "$est" >>"$RAW"
  log "$(tail -n 1 "$RAW" | awk -F'\t' -v n="$N" '{ printf "%-7s %-3s run %s: RSS %d -> %d -> %d KiB  %.2f KiB/conn (anon %.2f)  fds %d -> %d -> %d  ok %d (proxy side %s) lost %d  %s",
    $1, $2, $3, $4, $5, $6, ($5 - $4) / n, ($8 - $7) / n, $10, $11, $12, $13, $16, $14, $15 }')"
}

TARGETS=()
for t in "${SELECTED[@]}"; do
  case $t in
    portico) ((HAVE_PORTICO)) && TARGETS+=(portico) || NOTE[portico,all]="skipped: binary not found at ${PORTICO_ORIG:-$PORTICO_BIN}" ;;
    nginx) TARGETS+=(nginx) ;;
    haproxy) ((HAVE_HAPROXY)) && TARGETS+=(haproxy) || NOTE[haproxy,all]="skipped: haproxy not available" ;;
    h2o) ((HAVE_H2O)) && TARGETS+=(h2o) || NOTE[h2o,all]="skipped: h2o not available" ;;
  esac
done
((${#TARGETS[@]} > 0)) || die "no proxy to measure"

STAMP=$(date +%Y%m%d-%H%M%S)
mkdir -p "$RESULTS_DIR"
UPTIME_START=$(uptime)
log "N=$N, ${#TARGETS[@]} proxies (${TARGETS[*]}), protocols ${PROTOS[*]}, $REPEATS repeat(s); open-files limit $NOFILE; $PINNING"
# Rounds: in each one every proxy and protocol gets one measurement with a fresh process.
for ((rep = 1; rep <= REPEATS; rep++)); do
  for proto in "${PROTOS[@]}"; do
    for t in "${TARGETS[@]}"; do
      measure "$t" "$proto" "$rep"
    done
  done
done
UPTIME_END=$(uptime)

# ---------------------------------------------------------------------------------------------
# Report.
# ---------------------------------------------------------------------------------------------
SUMMARY=$TMP/summary.md
awk -F'\t' -v n="$N" -v order="${TARGETS[*]}" -v protos="${PROTOS[*]}" '
  function median(key,   c, i, j, v, a) {
    c = cnt[key]
    for (i = 1; i <= c; i++) a[i] = vals[key, i]
    for (i = 2; i <= c; i++) { v = a[i]; j = i - 1; while (j >= 1 && a[j] > v) { a[j + 1] = a[j]; j-- } a[j + 1] = v }
    return (c % 2) ? a[(c + 1) / 2] : (a[c / 2] + a[c / 2 + 1]) / 2
  }
  function add(key, x) { cnt[key]++; vals[key, cnt[key]] = x + 0 }
  function mib(key) { return cnt[key] ? sprintf("%.1f MiB", median(key) / 1024) : "—" }
  {
    k = $1 SUBSEP $2; runs[k]++
    if ($15 != "ok") { bad[k]++; next }
    good[k]++
    add(k SUBSEP "b", $4); add(k SUBSEP "w", $5); add(k SUBSEP "a", $6)
    add(k SUBSEP "pc", ($5 - $4) / n); add(k SUBSEP "apc", ($8 - $7) / n)
    add(k SUBSEP "ret", ($5 > $4) ? 100 * ($5 - $6) / ($5 - $4) : 0)
  }
  END {
    label["h1"] = "HTTP/1.1"; label["h2c"] = "h2c"; label["h1tls"] = "HTTP/1.1 over TLS"; label["h2tls"] = "HTTP/2 over TLS"
    print "| proxy | protocol | N | RSS before | RSS with N idle | **per connection** | (anonymous memory only) | RSS after close | returned on close | valid runs |"
    print "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    np = split(protos, P, " "); nt = split(order, T, " ")
    for (p = 1; p <= np; p++) for (i = 1; i <= nt; i++) {
      k = T[i] SUBSEP P[p]
      if (!(k in runs)) continue
      pc = cnt[k SUBSEP "pc"] ? sprintf("**%.2f KiB**", median(k SUBSEP "pc")) : "—"
      apc = cnt[k SUBSEP "apc"] ? sprintf("%.2f KiB", median(k SUBSEP "apc")) : "—"
      r = cnt[k SUBSEP "ret"] ? median(k SUBSEP "ret") : ""
      ret = (r == "") ? "—" : sprintf("%.0f%%", (r > -0.5 && r < 0.5) ? 0 : r)
      printf "| **%s** | %s | %d | %s | %s | %s | %s | %s | %s | %d/%d |\n", T[i], label[P[p]], n,
        mib(k SUBSEP "b"), mib(k SUBSEP "w"), pc, apc, mib(k SUBSEP "a"), ret, good[k], runs[k]
    }
  }' "$RAW" >"$SUMMARY"

NOTES=$TMP/notes.md
{
  for t in portico nginx haproxy h2o; do
    [[ -n ${NOTE[$t,all]:-} ]] && echo "- $t: ${NOTE[$t,all]}"
  done
  awk -F'\t' '$15 != "ok" { printf "- %s %s run %s: %s\n", $1, $2, $3, $15 }' "$RAW"
  true
} >"$NOTES"

REPORT=$RESULTS_DIR/idle-$STAMP.md
CMD="N=$N REPEATS=$REPEATS"
[[ $PROTOCOLS != h1,h2c ]] && CMD+=" PROTOCOLS=$PROTOCOLS"
[[ $PROXIES != portico,nginx,haproxy,h2o ]] && CMD+=" PROXIES=$PROXIES"
[[ $CONCURRENCY != 16 ]] && CMD+=" CONCURRENCY=$CONCURRENCY"
[[ $IDLE_SECONDS != 2 ]] && CMD+=" IDLE_SECONDS=$IDLE_SECONDS"
[[ $KEEPALIVE_S != 300 ]] && CMD+=" KEEPALIVE_S=$KEEPALIVE_S"
CMD+=" bash bench/idle/run.sh"
{
  echo "# Memory per idle keep-alive connection, $(date '+%Y-%m-%d %H:%M:%S %Z')"
  echo
  echo "- command: \`$CMD\`"
  echo "- machine: $(machine_desc), $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM"
  echo "- pinning: $PINNING; open-files limit $NOFILE"
  echo "- uptime at the start: $UPTIME_START"
  echo "- uptime at the end: $UPTIME_END"
  echo "- client: bench/idle/idle_client.py ($(version_of python3), epoll), $CONCURRENCY connections being opened at a time; HTTP/1.1: \`GET /5b\` with keep-alive; h2c and HTTP/2 over TLS (ALPN h2): preface + empty SETTINGS + one HEADERS frame (GET /5b), server SETTINGS acknowledged; every response checked (200, body \`$BODY\`), then the connection is left idle"
  echo "- origin: $(version_of nginx), 1 worker, a 5-byte static file, access_log off"
  if [[ " ${TARGETS[*]} " == *" portico "* ]]; then
    echo "- portico: $(portico_desc)"
  fi
  for t in "${TARGETS[@]}"; do
    for p in "${PROTOS[@]}"; do
      [[ -n ${CMDLINE[$t,$p]:-} ]] && echo "- $t $p: \`${CMDLINE[$t,$p]}\`"
    done
    [[ $t != portico ]] && echo "- $t version: $(version_of "$t")"
  done
  echo
  echo "Each measurement starts a fresh proxy process, warms it up with $CONCURRENCY requests on as many"
  echo "connections (closed again), waits 1 s and reads its RSS (**before**); opens N connections, one"
  echo "GET each, and reads the RSS after all N have been idle for ${IDLE_SECONDS} s (**with N idle**). A run counts"
  echo "only if all N responses were good, \`ss\` shows N established connections on the proxy's side"
  echo "at that moment, and the client then finds none of the N closed. The client closes them all and the"
  echo "RSS is read once the proxy has closed its sockets (+1 s, **after close**). RSS = \`Rss\` of /proc/PID/smaps_rollup summed"
  echo "over the proxy's processes (user-space memory only: kernel socket buffers are not in it)."
  echo "**per connection** = (with N idle − before) ÷ N; the anonymous-memory column is the same for"
  echo "\`Anonymous\` (heap and stacks, without file-backed pages). \"returned on close\" = how much of the"
  echo "growth the RSS lost again after the close. Figures are medians over $REPEATS run(s); the proxies take"
  echo "turns in each round."
  echo
  echo "What \"before\" already holds is not in the per-connection figure. nginx allocates and touches its"
  echo "whole connection array (worker_connections = $NGINX_WC slots, a connection and two events each, about"
  echo "0.4 KiB per slot on x86-64) at start-up, so that part of its per-connection cost is in \"before\"."
  echo "HAProxy, h2o and portico allocate per connection when it is accepted."
  echo
  cat "$SUMMARY"
  echo
  if [[ -s $NOTES ]]; then cat "$NOTES"; echo; fi
  echo "<details><summary>every run</summary>"
  echo
  echo "| proxy | protocol | run | RSS before KiB | with N idle | after close | anon before KiB | with N idle | after close | fds before | with N idle | after close | good responses | established (proxy side) | lost while idle | KiB/conn | result |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
  awk -F'\t' -v n="$N" '{
    pc = ($4 ~ /^[0-9]+$/ && $5 ~ /^[0-9]+$/) ? sprintf("%.2f", ($5 - $4) / n) : "-"
    printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, ($16 == "" ? "-" : $16), $14, pc, $15 }' "$RAW"
  echo
  echo "</details>"
} >"$REPORT"

echo
cat "$SUMMARY"
echo
[[ -s $NOTES ]] && cat "$NOTES"
echo "report: ${REPORT#"$ROOT"/}"
if ((FAILED)); then
  log "some measurements FAILED (see above and the report)"
  exit 1
fi
