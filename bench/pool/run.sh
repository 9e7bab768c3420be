#!/usr/bin/env bash
# Upstream connection reuse: how many connections portico's reverse_proxy opens to its origin per
# 100,000 proxied requests, next to nginx with an `upstream { keepalive }` block, same run, same load.
#
#   bash bench/pool/run.sh                        # DURATION=10 WORKERS="2 4", about 5 min
#   DURATION=3 WARMUP=1 WORKERS=2 bash bench/pool/run.sh   # quick look
#
# The measurement is the origin's own accept counter (nginx stub_status, `accepts`), read before
# and after every run: it does not depend on anything the proxy reports about itself.
#
# Environment:
#   DURATION        seconds of each measured wrk run (default 10)
#   WARMUP          seconds of the wrk run before it, same load, not in the main table (default 3)
#   WORKERS         worker counts to measure (default "2 4"): portico --threads N, nginx worker_processes N
#   CLIENTS         wrk connections (default 64)
#   PROXIES         which proxies to measure (default "portico nginx")
#   PORTICO_BIN     portico binary (default build/examples/reverse_proxy in the repository); it is
#                   copied to the temporary directory at start, so a rebuild cannot swap it mid-run
#   PORTICO_ARGS    extra arguments for reverse_proxy (default none)
#   NGINX_KEEPALIVE nginx `keepalive` in the upstream block, idle connections kept PER WORKER (default 64)
#   NGINX_REUSEPORT 1 (default): nginx listens with `reuseport`, so the kernel spreads new client
#                   connections over the workers by hash, as it does for portico (SO_REUSEPORT per
#                   worker); 0: one shared listening socket (nginx's default)
#   SRV_CPU/WRK_CPU CPUs for origin + proxy / for wrk (default 0 / 1)
#   QUIET_WAIT      seconds to wait, before each case, until no compiler/linker runs and other
#                   processes use less than FOREIGN_MAX (default 1800, polled every 20 s); 0: do not
#                   wait. All waits of one run together stop at 2 x QUIET_WAIT.
#   FOREIGN_MAX     % of one CPU that processes not started by this script may use, before and
#                   during a measured run, for it to count as quiet (default 10)
#   ATTEMPTS        tries per case when the machine was not quiet during the measurement (default 3)
#   RESULTS_DIR     where the markdown report goes (default bench/results)
#
# Everything listens on 127.0.0.1 only. Every process the script starts is killed on exit and the
# temporary directory is removed. See bench/pool/README.md for the method and the caveats.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin" # nginx lives in /usr/sbin, not on a user's PATH
# shellcheck disable=SC2034 # read by log/die (bench/lib.sh)
LOG_TAG=pool
# shellcheck source=SCRIPTDIR/../lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# shellcheck disable=SC2034 # read by wait_quiet (bench/lib.sh)
QUIET_WHAT=row # wait_quiet's warning: "the row is flagged"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-3}
WORKERS=${WORKERS:-"2 4"}
CLIENTS=${CLIENTS:-64}
PROXIES=${PROXIES:-"portico nginx"}
PORTICO_BIN=${PORTICO_BIN:-$ROOT/build/examples/reverse_proxy}
PORTICO_ARGS=${PORTICO_ARGS:-}
NGINX_KEEPALIVE=${NGINX_KEEPALIVE:-64}
NGINX_REUSEPORT=${NGINX_REUSEPORT:-1}
SRV_CPU=${SRV_CPU:-0}
WRK_CPU=${WRK_CPU:-1}
QUIET_WAIT=${QUIET_WAIT:-1800}
ATTEMPTS=${ATTEMPTS:-3}
FOREIGN_MAX=${FOREIGN_MAX:-10}
RESULTS_DIR=${RESULTS_DIR:-$ROOT/bench/results}
# BUSY_PROCS (processes whose presence means "someone is building"): default in bench/lib.sh.

check_var DURATION "$DURATION" 1 600
check_var WARMUP "$WARMUP" 0 120
check_var CLIENTS "$CLIENTS" 1 10000
check_var NGINX_KEEPALIVE "$NGINX_KEEPALIVE" 1 100000
check_var NGINX_REUSEPORT "$NGINX_REUSEPORT" 0 1
check_var SRV_CPU "$SRV_CPU" 0 4095
check_var WRK_CPU "$WRK_CPU" 0 4095
check_var QUIET_WAIT "$QUIET_WAIT" 0 86400
check_var ATTEMPTS "$ATTEMPTS" 1 20
check_var FOREIGN_MAX "$FOREIGN_MAX" 1 1000
[[ -n ${WORKERS// /} ]] || die "WORKERS is empty"
for n in $WORKERS; do check_var "WORKERS entry" "$n" 1 256; done
for p in $PROXIES; do [[ $p == portico || $p == nginx ]] || die "PROXIES: unknown proxy '$p' (portico, nginx)"; done

# ---------------------------------------------------------------------------------------------
# Tools: nothing is installed; a missing tool stops the script with its name.
# ---------------------------------------------------------------------------------------------
need nginx "Debian: apt-get install nginx-light"
need wrk "Debian: apt-get install wrk"
need curl "Debian: apt-get install curl"
need timeout "coreutils"
need awk
need pgrep "Debian: apt-get install procps"
need mktemp
nginx -V 2>&1 | grep -q -- '--with-http_stub_status_module' ||
  die "this nginx has no stub_status module ($(nginx -v 2>&1)); the origin's accept counter needs it"
if [[ $PROXIES == *portico* ]]; then
  [[ -f $PORTICO_BIN && -x $PORTICO_BIN ]] ||
    die "portico binary not found or not executable: $PORTICO_BIN (build it: cmake -S . -B build-pool -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPORTICO_BUILD_TESTS=OFF -DPORTICO_BUILD_BENCH=OFF && ninja -C build-pool reverse_proxy; then PORTICO_BIN=build-pool/examples/reverse_proxy)"
fi

# ---------------------------------------------------------------------------------------------
# Process bookkeeping and cleanup: bench/lib.sh.
# ---------------------------------------------------------------------------------------------
WRK_PID=""
extra_pids() { echo "${WRK_PID:-}"; } # wrk, while one runs (started outside start_server)
setup_tmp pool

# ---------------------------------------------------------------------------------------------
# Pinning: origin and proxy on SRV_CPU, wrk (and the stub_status curls) on WRK_CPU.
# ---------------------------------------------------------------------------------------------
pin_cpus "$SRV_CPU" "$WRK_CPU" "origin and proxy on CPU $SRV_CPU (all N workers share it), wrk on CPU $WRK_CPU (taskset)"

# ---------------------------------------------------------------------------------------------
# Checks.
# ---------------------------------------------------------------------------------------------
BODY=hello
check_http() { # check_http PORT : GET / returns 200 and exactly $BODY
  local code
  code=$(curl -sS -m 5 -o "$TMP/check.body" -w '%{http_code}' "http://127.0.0.1:$1/" 2>"$TMP/check.err") || code=000
  [[ $code == 200 && $(cat "$TMP/check.body") == "$BODY" ]] && return 0
  log "GET 127.0.0.1:$1/: status $code, body '$(head -c 80 "$TMP/check.body" 2>/dev/null)' (want 200, '$BODY') $(cat "$TMP/check.err" 2>/dev/null)"
  return 1
}

# ---------------------------------------------------------------------------------------------
# Origin: one nginx worker, a fixed 5-byte body on O_PORT, stub_status on S_PORT. Both servers
# are the same process, so `accepts` counts the stub_status connections too: every read adds
# exactly one connection and one request, and the script subtracts them (checked at start-up).
# ---------------------------------------------------------------------------------------------
O_DIR=$TMP/origin
mkdir -p "$O_DIR/tmp"
pick_port
O_PORT=$REPLY
pick_port
S_PORT=$REPLY
cat >"$O_DIR/origin.conf" <<EOF
$(nginx_head "$O_DIR" 1 8192 16384)
    default_type text/plain;
    tcp_nodelay on;
    keepalive_timeout 120;
    keepalive_requests 100000000;
    server {
        listen 127.0.0.1:$O_PORT;
        location / { return 200 "$BODY"; }
    }
    server {
        listen 127.0.0.1:$S_PORT;
        location = /status { stub_status; }
    }
}
EOF
start_nginx origin "$O_DIR" origin.conf
O_PID=$REPLY
wait_listen origin "$O_PID" "$O_PORT" "$O_DIR/stdout.log" || die "origin nginx did not start"
wait_listen origin-status "$O_PID" "$S_PORT" "$O_DIR/stdout.log" || die "origin nginx did not start"
check_http "$O_PORT" || die "origin does not serve its body"

# read_status : sets ST_ACC ST_REQ ST_ACT (accepts, requests, active connections incl. this one)
read_status() {
  local out
  out=$(timeout -k 2 10 "${PIN_CLI[@]}" curl -sS -m 5 "http://127.0.0.1:$S_PORT/status" 2>"$TMP/status.err") ||
    die "cannot read the origin's stub_status: $(cat "$TMP/status.err")"
  read -r ST_ACT ST_ACC ST_REQ < <(awk '
    /^Active connections:/ { act = $3 }
    /^ *[0-9]+ +[0-9]+ +[0-9]+ *$/ { acc = $1; req = $3 }
    END { print act + 0, acc + 0, req + 0 }' <<<"$out")
  ((ST_ACC > 0)) || die "unexpected stub_status output: $out"
}
# The stub_status accounting: two reads in a row differ by exactly one connection and one request.
read_status
a0=$ST_ACC q0=$ST_REQ
read_status
if ((ST_ACC - a0 != 1 || ST_REQ - q0 != 1)); then
  die "stub_status self-check: two reads differ by $((ST_ACC - a0)) accepts / $((ST_REQ - q0)) requests, expected 1 / 1"
fi

# ---------------------------------------------------------------------------------------------
# Proxies.
# ---------------------------------------------------------------------------------------------
if [[ $PROXIES == *portico* ]]; then
  # A private copy: the library is static, so the executable alone is the whole proxy.
  P_BIN=$TMP/reverse_proxy
  cp "$PORTICO_BIN" "$P_BIN"
  P_SUM=$(sha256sum "$P_BIN" | cut -c1-12)
  P_MTIME=$(date -r "$PORTICO_BIN" '+%Y-%m-%d %H:%M:%S')
fi

PROXY_PID="" PROXY_PORT=""
start_proxy() { # start_proxy NAME N : sets PROXY_PID PROXY_PORT, or returns 1
  local name=$1 n=$2 dir=$TMP/$1-$2
  rm -rf "$dir"
  mkdir -p "$dir/tmp"
  pick_port
  PROXY_PORT=$REPLY
  if [[ $name == portico ]]; then
    # shellcheck disable=SC2086 # PORTICO_ARGS is split on purpose
    start_server "portico x$n" "$dir/out.log" "$P_BIN" --listen "127.0.0.1:$PROXY_PORT" \
      --upstream "127.0.0.1:$O_PORT" --threads "$n" $PORTICO_ARGS
    PROXY_PID=$REPLY
    wait_listen --ready "listening on" "portico x$n" "$PROXY_PID" "$PROXY_PORT" "$dir/out.log" || return 1
  else
    local rp=""
    ((NGINX_REUSEPORT)) && rp=" reuseport"
    cat >"$dir/proxy.conf" <<EOF
$(nginx_head "$dir" "$n" 8192 16384)
    tcp_nodelay on;
    keepalive_timeout 120;
    keepalive_requests 100000000;
$(nginx_upstream "127.0.0.1:$O_PORT" "$NGINX_KEEPALIVE" 100000000 120s)
    server {
        listen 127.0.0.1:$PROXY_PORT$rp;
$(nginx_proxy_location)
    }
}
EOF
    start_nginx "nginx x$n" "$dir" proxy.conf out.log
    PROXY_PID=$REPLY
    wait_listen "nginx x$n" "$PROXY_PID" "$PROXY_PORT" "$dir/out.log" || return 1
  fi
}

# ---------------------------------------------------------------------------------------------
# Quiet machine: no compiler or linker running (other people build on this 2-core machine):
# wait_quiet, with all waits of one run together stopping at QUIET_BUDGET = 2 x QUIET_WAIT.
# ---------------------------------------------------------------------------------------------
# shellcheck disable=SC2034 # read and counted down by wait_quiet (bench/lib.sh)
QUIET_BUDGET=$((2 * QUIET_WAIT))

# ---------------------------------------------------------------------------------------------
# Measurement.
# ---------------------------------------------------------------------------------------------
WRK_LOG=$TMP/wrk.out
start_wrk() { # start_wrk PORT SECONDS SCENARIO : in the background, bounded by timeout; sets WRK_PID
  local hdr=()
  [[ $3 == churn ]] && hdr=(-H "Connection: close")
  timeout -k 5 $(($2 + 30)) "${PIN_CLI[@]}" wrk -t1 -c"$CLIENTS" -d"$2"s ${hdr[@]+"${hdr[@]}"} \
    "http://127.0.0.1:$1/" >"$WRK_LOG" 2>&1 &
  WRK_PID=$!
}
fsleep() { sleep "$(awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a * b }')"; } # fsleep SECONDS FACTOR

RAW=$TMP/raw.tsv
: >"$RAW"
# One case: a fresh proxy, a check request, WARMUP s of load, then DURATION s measured. Origin
# counter reads: r0 before the check request, r1 after the warm-up, r2 and r3 at 20 % and 80 % of
# the measured run (a window without the start and end of a wrk run), r4 after it.
# Between reads i < j the proxy opened (acc_j - acc_i) - (j - i) connections: each read is one.
measure_case() { # measure_case PROXY N SCENARIO ATTEMPT : appends one line to $RAW
  local name=$1 n=$2 scen=$3 attempt=$4 quiet=1 busy="" b
  local -a A Q
  local act4 c0 c1 o0 o1 s0 s1 e0 e1 wreq=0 wrps=0 werr=0 wuq=0 wureq=0 flag=ok pids opids foreign
  wait_quiet || quiet=0
  PROXY_PID=""
  if start_proxy "$name" "$n"; then
    read_status # r0: the cold figures count from the first request through the proxy
    A[0]=$ST_ACC Q[0]=$ST_REQ
  fi
  if [[ -z ${A[0]:-} ]] || ! check_http "$PROXY_PORT"; then
    log "$name x$n failed to start or to proxy correctly"
    [[ -n $PROXY_PID ]] && stop_root "$PROXY_PID"
    PROXY_PID=""
    printf '%s\t%s\t%s\t%s\n' "$name" "$n" "$scen" "failed" >>"$RAW"
    return 0
  fi
  if ((WARMUP > 0)); then
    start_wrk "$PROXY_PORT" "$WARMUP" "$scen"
    finish_wrk || log "warm-up wrk exited with an error"
    read -r wureq _ _ wuq < <(parse_wrk "$WRK_LOG")
  fi
  b=$(busy_now)
  [[ -n $b ]] && busy+="$b "
  read_status
  A[1]=$ST_ACC Q[1]=$ST_REQ
  pids=$(descendants "$PROXY_PID")
  opids=$(descendants "$O_PID")
  # Foreign CPU: all busy ticks minus those of the proxy, the origin, this shell and its children.
  times >"$TMP/times0"
  # shellcheck disable=SC2086
  { s0=$(sys_busy); e0=$(date +%s%N); c0=$(cpu_ticks $pids); o0=$(cpu_ticks $opids); }
  start_wrk "$PROXY_PORT" "$DURATION" "$scen"
  fsleep "$DURATION" 0.2
  read_status
  A[2]=$ST_ACC Q[2]=$ST_REQ
  b=$(busy_now)
  [[ -n $b ]] && busy+="$b "
  fsleep "$DURATION" 0.6
  read_status
  A[3]=$ST_ACC Q[3]=$ST_REQ
  finish_wrk || { log "wrk failed against $name x$n ($scen):"; sed 's/^/    /' "$WRK_LOG" >&2; }
  # shellcheck disable=SC2086
  { c1=$(cpu_ticks $pids); o1=$(cpu_ticks $opids); e1=$(date +%s%N); s1=$(sys_busy); }
  times >"$TMP/times1"
  foreign=$(awk -v f=$((s1 - s0 - (c1 - c0) - (o1 - o0) - $(self_ticks "$TMP/times1") + $(self_ticks "$TMP/times0"))) \
    -v ns=$((e1 - e0)) -v hz="$CLK_TCK" 'BEGIN { v = 100 * f / hz / (ns / 1e9); printf "%.0f", (v < 0 ? 0 : v) }')
  ((foreign < FOREIGN_MAX)) || busy+="other processes ${foreign}% "
  b=$(busy_now)
  [[ -n $b ]] && busy+="$b "
  read_status
  A[4]=$ST_ACC Q[4]=$ST_REQ act4=$ST_ACT
  read -r wreq wrps _ werr < <(parse_wrk "$WRK_LOG" %.0f)
  kill -0 "$PROXY_PID" 2>/dev/null || flag=died
  stop_root "$PROXY_PID"
  PROXY_PID=""
  ((werr > 0)) && flag=errors
  ((wreq < 10 * CLIENTS)) && flag=stalled
  ((quiet)) || busy+="(busy before the case) "
  # name n scen flag wreq wrps werr cpu_ticks acc_meas req_meas acc_win req_win acc_cold wrk_cold held busy attempt warmup_errors foreign%
  printf '%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%d\t%d\t%d\n' \
    "$name" "$n" "$scen" "$flag" "$wreq" "$wrps" "$werr" $((c1 - c0)) \
    $((A[4] - A[1] - 3)) $((Q[4] - Q[1] - 3)) $((A[3] - A[2] - 1)) $((Q[3] - Q[2] - 1)) \
    $((A[4] - A[0] - 4)) $((1 + wureq + wreq)) $((act4 - 1)) "${busy% }" "$attempt" "$wuq" "$foreign" >>"$RAW"
  log "$(tail -n 1 "$RAW" | awk -F'\t' -v hz="$CLK_TCK" '{
    printf "%-7s x%s %-5s: %8d req (%6d/s, %d errors)  origin conns %d  per 100k %.1f  CPU %.2f us/req  window %d conns / %d req  other %d%%%s%s",
      $1, $2, $3, $5, $6, $7, $9, ($5 > 0 ? $9 * 100000 / $5 : 0), ($5 > 0 ? $8 * 1e6 / hz / $5 : 0), $11, $12, $19,
      ($4 == "ok" ? "" : "  [" $4 "]"), ($16 == "" ? "" : "  [busy: " $16 "]") }')"
  [[ -z ${busy// /} ]]
}

# ---------------------------------------------------------------------------------------------
# Run.
# ---------------------------------------------------------------------------------------------
SCENARIOS="ka churn"
n_cases=0
for n in $WORKERS; do for s in $SCENARIOS; do for p in $PROXIES; do n_cases=$((n_cases + 1)); done; done; done
log "origin 127.0.0.1:$O_PORT (stub_status on :$S_PORT); pinning: $PINNING"
log "$n_cases cases of ${WARMUP}s warm-up + ${DURATION}s measured, about $((n_cases * (WARMUP + DURATION + 2) / 60 + 1)) min when the machine is quiet"
BUSY_BEFORE=$(idle_load)
START_TIME=$(date '+%Y-%m-%d %H:%M:%S %Z')
# The repository state at start (the binary may be older: its build time is reported too).
rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo 'no commit')
dirty=$(git -C "$ROOT" status --porcelain -- src include examples CMakeLists.txt 2>/dev/null | wc -l)

for n in $WORKERS; do
  for s in $SCENARIOS; do
    for p in $PROXIES; do
      retry_if_busy "$p x$n $s" measure_case "$p" "$n" "$s"
    done
  done
done

# ---------------------------------------------------------------------------------------------
# Report.
# ---------------------------------------------------------------------------------------------
MAIN=$TMP/main.md
DETAIL=$TMP/detail.md
awk -F'\t' -v hz="$CLK_TCK" -v clients="$CLIENTS" '
  function per100k(c, r) { return r > 0 ? sprintf("%.1f", c * 100000 / r) : "—" }
  function ratio(c, r) { return r > 0 ? sprintf("%.5f", 1 - c / r) : "—" }
  {
    label = ($3 == "ka") ? clients " keep-alive" : clients " churning (Connection: close)"
    mark = ""
    if ($4 != "ok") mark = mark " (" $4 ")"
    if ($16 != "") mark = mark " †"
    if ($17 > 1) retried = retried (retried == "" ? "" : ", ") $1 " x" $2 " " label " (attempt " $17 ")"
    if ($4 == "failed") {
      printf "| %s | %s | %s | — | — | — | — | — (failed to start or to proxy) |\n", $1, $2, label > main
      next
    }
    cpu = $5 > 0 ? sprintf("%.2f", $8 * 1e6 / hz / $5) : "—"
    printf "| %s%s | %s | %s | %d | %d | %s | %s | %s |\n", $1, mark, $2, label, $5, $9, per100k($9, $5), ratio($9, $5), cpu > main
    printf "| %s%s | %s | %s | %d | %s | %d | %d | %s | %d | %d | %s | %d | %d |\n", $1, mark, $2, ($3 == "ka" ? "keep-alive" : "churning"),
      $6, $7 " / " $18, $12, $11, per100k($11, $12), $14, $13, per100k($13, $14), $15, $19 > detail
  }
  END { if (retried != "") print "Measured again because the machine was not quiet during an earlier attempt: " retried "." > notes }' notes="$TMP/notes.md" main="$MAIN" detail="$DETAIL" "$RAW"

STAMP=$(date +%Y%m%d-%H%M%S)
mkdir -p "$RESULTS_DIR"
REPORT=$RESULTS_DIR/pool-$STAMP.md
{
  echo "# portico upstream connection reuse, $START_TIME"
  echo
  echo "- machine: $(machine_desc); other processes used ${BUSY_BEFORE}% of a CPU in the second before the first case"
  echo "- pinning: $PINNING"
  echo "- origin: $(nginx -v 2>&1 | sed 's/^nginx version: //'), 1 worker, \`return 200 \"$BODY\"\`, keep-alive (keepalive_requests 100000000, keepalive_timeout 120 s); \`stub_status\` on a second port of the same process"
  if [[ $PROXIES == *portico* ]]; then
    echo "- portico: \`reverse_proxy --listen … --upstream … --threads N${PORTICO_ARGS:+ $PORTICO_ARGS}\`, binary $PORTICO_BIN (built $P_MTIME, sha256 $P_SUM…), repository at the start of the run: $rev with $dirty uncommitted change(s) under src/ include/ examples/"
  fi
  if [[ $PROXIES == *nginx* ]]; then
    rp_note="without reuseport (one shared socket)"
    ((NGINX_REUSEPORT)) && rp_note="with \`reuseport\`"
    echo "- nginx: $(nginx -v 2>&1 | sed 's/^nginx version: //'), \`worker_processes N\`, \`upstream { keepalive $NGINX_KEEPALIVE; keepalive_requests 100000000; }\` (**$NGINX_KEEPALIVE idle connections per worker**), \`proxy_http_version 1.1\`, \`proxy_set_header Connection \"\"\`, listen $rp_note"
  fi
  echo "- load: $(wrk -v 2>&1 | head -n 1 | awk '{ print $1, $2 }'), \`wrk -t1 -c$CLIENTS -d${DURATION}s\` GET / (5-byte body); churning adds \`-H \"Connection: close\"\`, so every request is a new client connection"
  echo "- each case: a fresh proxy, one check request, ${WARMUP} s warm-up with the same load, then the measured ${DURATION} s run"
  echo
  echo "Origin conns = connections the origin accepted during the measured run (stub_status \`accepts\` after the warm-up and after the run, minus the stub_status reads' own connections)."
  echo "Opened per 100k = origin conns × 100000 ÷ requests; reuse ratio = 1 − origin conns ÷ requests; requests = completed by wrk."
  echo "CPU µs/req = utime+stime of the proxy (all threads; nginx: master + workers) over the measured run ÷ requests."
  echo
  echo "| proxy | workers | clients | requests | origin conns | opened per 100k | reuse ratio | CPU µs/req |"
  echo "|---|---:|---|---:|---:|---:|---:|---:|"
  cat "$MAIN"
  echo
  if [[ -s $TMP/notes.md ]]; then
    cat "$TMP/notes.md"
    echo
  fi
  if grep -q '†' "$MAIN"; then
    echo "† the machine was not quiet around this case even after $ATTEMPTS attempt(s) (a compiler/linker ran, or other processes used ≥ ${FOREIGN_MAX}% of a CPU; see the detail table): its CPU figure is not reliable, its connection counts are."
    echo
  fi
  echo "Steady window: origin counters read at 20 % and 80 % of the measured run, so no wrk start (all clients"
  echo "connect and send at once) or stop (in-flight requests are dropped, and a proxy may close the upstream"
  echo "connection of an unfinished exchange) falls inside; requests there are the origin's \`requests\` counter. Cold: from"
  echo "the fresh proxy's first request through warm-up and measured run; requests from wrk. Held after:"
  echo "connections open at the origin right after the measured run (the proxy's idle pool). Other CPU %:"
  echo "CPU time of processes this script did not start, during the measured run, in % of one CPU."
  echo
  echo "| proxy | workers | clients | req/s | wrk errors (run / warm-up) | window requests | window conns | window per 100k | cold requests | cold conns | cold per 100k | held after | other CPU % |"
  echo "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  cat "$DETAIL"
} >"$REPORT"

echo
echo "| proxy | workers | clients | requests | origin conns | opened per 100k | reuse ratio | CPU µs/req |"
echo "|---|---:|---|---:|---:|---:|---:|---:|"
cat "$MAIN"
echo "report: ${REPORT#"$ROOT"/}"
