#!/usr/bin/env bash
# TLS termination benchmark: keep-alive HTTPS requests, full handshakes and resumed handshakes per
# second, and the proxy CPU time per request and per handshake, for portico's reverse_proxy next to
# nginx and HAProxy, in the same run, with the same certificate, the same load and the same origin.
#
#   bash bench/tls/run.sh                                   # DURATION=10 REPEATS=3, about 15 min
#   DURATION=3 REPEATS=1 WARMUP=1 bash bench/tls/run.sh     # quick look, about 2 min
#
# Environment:
#   DURATION        seconds of each measured run (default 10)
#   REPEATS         measured runs per proxy and scenario, interleaved across proxies; the median
#                   and the spread (min–max) are reported (default 3)
#   WARMUP          seconds of the same load, unmeasured, before each measured run (default 2)
#   CONNECTIONS     wrk connections in the keep-alive scenario (default 64)
#   HS_CLIENTS      `openssl s_time` processes run side by side in the handshake scenarios, all
#                   on the client CPU (default 2; 1 = strictly one handshake at a time)
#   SCENARIOS       which scenarios, in order (default "ka full resumed full12 resumed12 full-rsa"):
#                     ka         wrk keep-alive HTTPS GET /           (EC certificate, TLS 1.3)
#                     full       s_time -new: full handshake + GET   (EC, TLS 1.3)
#                     resumed    s_time -reuse: resumed handshake    (EC, TLS 1.3, ticket)
#                     full12     s_time -new -tls1_2                 (EC, TLS 1.2)
#                     resumed12  s_time -reuse -tls1_2               (EC, TLS 1.2)
#                     full-rsa   s_time -new                         (RSA-2048 certificate, TLS 1.3)
#   PROXIES         which proxies (default "portico nginx haproxy"; haproxy is skipped when absent)
#   PORTICO_BIN     portico binary (default build-tlsbench/examples/reverse_proxy when it exists,
#                   else build/examples/reverse_proxy); copied to the temporary directory at start
#   SRV_CPU/CLI_CPU CPU for the origin and the proxies / for wrk and openssl s_time (default 0 / 1)
#   QUIET_WAIT      seconds to wait, before each measured run, until no compiler/linker runs and
#                   other processes use less than FOREIGN_MAX (default 1800, polled every 20 s);
#                   0: do not wait. All waits of one run together stop at QUIET_BUDGET seconds
#                   (default 2 x QUIET_WAIT); after that it measures anyway and flags the run.
#   FOREIGN_MAX     % of one CPU that processes not started by this script may use (default 10)
#   ATTEMPTS        tries of a run during which the machine was not quiet (default 2)
#   RESULTS_DIR     where the markdown report goes (default bench/results)
#
# Certificates (an EC P-256 CA, an EC P-256 leaf and an RSA-2048 leaf for bench.test) are made
# with the openssl CLI in the temporary directory and deleted with it. Everything listens on
# 127.0.0.1 only. Every process the script starts is killed on exit. See bench/tls/README.md.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin" # nginx and haproxy live in /usr/sbin
# shellcheck disable=SC2034 # read by log/die (bench/lib.sh)
LOG_TAG=tls
# shellcheck source=SCRIPTDIR/../lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DURATION=${DURATION:-10}
REPEATS=${REPEATS:-3}
WARMUP=${WARMUP:-2}
CONNECTIONS=${CONNECTIONS:-64}
HS_CLIENTS=${HS_CLIENTS:-2}
SCENARIOS=${SCENARIOS:-"ka full resumed full12 resumed12 full-rsa"}
PROXIES=${PROXIES:-"portico nginx haproxy"}
if [[ -z ${PORTICO_BIN:-} ]]; then
  PORTICO_BIN=$ROOT/build/examples/reverse_proxy
  [[ -x $ROOT/build-tlsbench/examples/reverse_proxy ]] && PORTICO_BIN=$ROOT/build-tlsbench/examples/reverse_proxy
fi
SRV_CPU=${SRV_CPU:-0}
CLI_CPU=${CLI_CPU:-1}
QUIET_WAIT=${QUIET_WAIT:-1800}
FOREIGN_MAX=${FOREIGN_MAX:-10}
ATTEMPTS=${ATTEMPTS:-2}
RESULTS_DIR=${RESULTS_DIR:-$ROOT/bench/results}
# BUSY_PROCS (processes whose presence means "someone is building"): default in bench/lib.sh.
BODY=hello

check_var DURATION "$DURATION" 1 600
check_var REPEATS "$REPEATS" 1 50
check_var WARMUP "$WARMUP" 0 120
check_var CONNECTIONS "$CONNECTIONS" 1 10000
check_var HS_CLIENTS "$HS_CLIENTS" 1 64
check_var SRV_CPU "$SRV_CPU" 0 4095
check_var CLI_CPU "$CLI_CPU" 0 4095
check_var QUIET_WAIT "$QUIET_WAIT" 0 86400
check_var FOREIGN_MAX "$FOREIGN_MAX" 1 1000
check_var ATTEMPTS "$ATTEMPTS" 1 20
ALL_SCENARIOS="ka full resumed full12 resumed12 full-rsa"
for s in $SCENARIOS; do [[ " $ALL_SCENARIOS " == *" $s "* ]] || die "SCENARIOS: unknown scenario '$s' ($ALL_SCENARIOS)"; done
for p in $PROXIES; do [[ $p == portico || $p == nginx || $p == haproxy ]] || die "PROXIES: unknown proxy '$p' (portico nginx haproxy)"; done
[[ -n ${SCENARIOS// /} && -n ${PROXIES// /} ]] || die "SCENARIOS and PROXIES must not be empty"

# ---------------------------------------------------------------------------------------------
# Tools: nothing is installed; a missing tool stops the script with its name.
# ---------------------------------------------------------------------------------------------
need openssl "Debian: apt-get install openssl"
need nginx "Debian: apt-get install nginx-light"
need wrk "Debian: apt-get install wrk"
need curl "Debian: apt-get install curl"
need timeout "coreutils"
need awk
need pgrep "Debian: apt-get install procps"
need mktemp
openssl s_time -help 2>&1 | grep -q -- '-reuse' || die "this openssl has no usable s_time command"
if [[ " $PROXIES " == *" haproxy "* ]] && ! command -v haproxy >/dev/null; then
  log "haproxy not found: left out (Debian: apt-get install haproxy)"
  PROXIES=$(printf '%s\n' $PROXIES | grep -vx haproxy | tr '\n' ' ')
fi
if [[ " $PROXIES " == *" portico "* ]]; then
  [[ -f $PORTICO_BIN && -x $PORTICO_BIN ]] ||
    die "portico binary not found or not executable: $PORTICO_BIN (build it: cmake -S . -B build-tlsbench -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPORTICO_BUILD_TESTS=OFF -DPORTICO_BUILD_BENCH=OFF && ninja -C build-tlsbench reverse_proxy)"
fi

# ---------------------------------------------------------------------------------------------
# Process bookkeeping and cleanup: bench/lib.sh.
# ---------------------------------------------------------------------------------------------
CLIENT_PIDS=() # wrk / openssl s_time, while they run (started outside start_server)
extra_pids() { echo ${CLIENT_PIDS[@]+"${CLIENT_PIDS[@]}"}; }
setup_tmp tls

# ---------------------------------------------------------------------------------------------
# Pinning: origin and proxies on SRV_CPU, the load generators on CLI_CPU.
# ---------------------------------------------------------------------------------------------
pin_cpus "$SRV_CPU" "$CLI_CPU" "origin and proxies on CPU $SRV_CPU, wrk / openssl s_time on CPU $CLI_CPU (taskset)"

# ---------------------------------------------------------------------------------------------
# Certificates: made now, in the temporary directory; never written anywhere else.
# ---------------------------------------------------------------------------------------------
PKI=$TMP/pki
mkdir -p "$PKI"
gen_pki() {
  cd "$PKI"
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
    -days 2 -subj "/CN=portico TLS bench CA" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
  printf 'subjectAltName=DNS:bench.test\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' >leaf.ext
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ec.key -out ec.csr -subj "/CN=bench.test"
  openssl x509 -req -in ec.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile leaf.ext -out ec.pem
  openssl req -new -newkey rsa:2048 -nodes -keyout rsa.key -out rsa.csr -subj "/CN=bench.test"
  openssl x509 -req -in rsa.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile leaf.ext -out rsa.pem
  local k
  for k in ec rsa; do
    openssl verify -CAfile ca.pem "$k.pem"
    cat "$k.pem" "$k.key" >"$k.combined.pem" # HAProxy: certificate and key in one file
  done
  chmod 644 ./*.pem ./*.key
}
(gen_pki) >"$TMP/pki.log" 2>&1 || { sed 's/^/    /' "$TMP/pki.log" >&2; die "certificate generation failed"; }
log "certificates: EC P-256 CA; leaves for bench.test: EC P-256 and RSA-2048 (in $PKI)"

# ---------------------------------------------------------------------------------------------
# Origin: one nginx worker, plain HTTP/1.1 with keep-alive, a 5-byte body.
# ---------------------------------------------------------------------------------------------
O_DIR=$TMP/origin
mkdir -p "$O_DIR/tmp"
pick_port
O_PORT=$REPLY
cat >"$O_DIR/origin.conf" <<EOF
$(nginx_head "$O_DIR" 1 4096)
    default_type text/plain;
    tcp_nodelay on;
    keepalive_timeout 120s;
    keepalive_requests 100000000;
    server {
        listen 127.0.0.1:$O_PORT;
        location / { return 200 "$BODY"; }
    }
}
EOF
start_nginx origin "$O_DIR" origin.conf
O_PID=$REPLY
wait_listen origin "$O_PID" "$O_PORT" "$O_DIR/stdout.log" "$O_DIR/error.log" || die "origin nginx did not start"
[[ $(curl -sS -m 5 "http://127.0.0.1:$O_PORT/" 2>&1) == "$BODY" ]] || die "the origin does not answer '$BODY'"

# ---------------------------------------------------------------------------------------------
# Proxies terminating TLS, one worker / thread each, two instances per proxy: EC and RSA leaf.
# All use portico's TLS 1.2 cipher list with server preference, so all negotiate the same suite.
# ---------------------------------------------------------------------------------------------
TLS12_CIPHERS="ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
KEYS="ec"
[[ " $SCENARIOS " == *" full-rsa "* ]] && KEYS="ec rsa"
declare -A T_PORT T_PID T_LOG T_NOTE
if [[ " $PROXIES " == *" portico "* ]]; then
  P_BIN=$TMP/reverse_proxy
  cp "$PORTICO_BIN" "$P_BIN"
  P_SUM=$(sha256sum "$P_BIN" | cut -c1-12)
  P_MTIME=$(date -r "$PORTICO_BIN" '+%Y-%m-%d %H:%M:%S')
fi
# The repository as it is now, next to the binary's build time (a commit during the run must not
# change what the report says about the binary).
rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo 'no commit')
dirty=$(git -C "$ROOT" status --porcelain -- src include examples CMakeLists.txt 2>/dev/null | wc -l)

start_proxy() { # start_proxy PROXY KEY : sets T_PORT/T_PID/T_LOG for "PROXY/KEY", or T_NOTE
  local p=$1 k=$2 id="$1/$2" port dir pid logs
  pick_port
  port=$REPLY
  dir=$TMP/$p-$k
  mkdir -p "$dir/tmp"
  case $p in
    portico)
      start_server "$id" "$dir/out.log" "$P_BIN" --listen "127.0.0.1:$port" --upstream "127.0.0.1:$O_PORT" \
        --tls-cert "$PKI/$k.pem" --tls-key "$PKI/$k.key" --threads 1
      logs=("$dir/out.log")
      ;;
    nginx)
      cat >"$dir/proxy.conf" <<EOF
$(nginx_head "$dir" 1 4096)
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 100000000;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_ciphers $TLS12_CIPHERS;
    ssl_prefer_server_ciphers on;
    ssl_session_cache shared:SSL:10m;
    ssl_session_timeout 5m;
    ssl_session_tickets on;
$(nginx_upstream "127.0.0.1:$O_PORT" 64 100000000)
    server {
        listen 127.0.0.1:$port ssl;
        ssl_certificate $PKI/$k.pem;
        ssl_certificate_key $PKI/$k.key;
$(nginx_proxy_location)
    }
}
EOF
      start_nginx "$id" "$dir" proxy.conf
      logs=("$dir/stdout.log" "$dir/error.log")
      ;;
    haproxy)
      haproxy_conf "bind 127.0.0.1:$port ssl crt $PKI/$k.combined.pem" "server o1 127.0.0.1:$O_PORT" \
        "ssl-default-bind-ciphers $TLS12_CIPHERS" "ssl-default-bind-options ssl-min-ver TLSv1.2 ssl-max-ver TLSv1.3" \
        "tune.ssl.cachesize 20000" "tune.ssl.lifetime 300" >"$dir/haproxy.cfg"
      if ! haproxy -c -q -f "$dir/haproxy.cfg" >"$dir/check.log" 2>&1; then
        sed 's/^/    /' "$dir/check.log" >&2
        T_NOTE[$id]="configuration rejected by $(haproxy -v 2>/dev/null | head -n 1)"
        return 1
      fi
      start_server "$id" "$dir/stdout.log" haproxy -db -f "$dir/haproxy.cfg"
      logs=("$dir/stdout.log")
      ;;
  esac
  pid=$REPLY
  if ! wait_listen "$id" "$pid" "$port" "${logs[@]}"; then
    T_NOTE[$id]="did not start (see the script's messages)"
    kill_tree "$pid"
    return 1
  fi
  T_PORT[$id]=$port T_PID[$id]=$pid T_LOG[$id]=${logs[*]}
}

# Checks every instance: HTTPS answer with the CA, negotiated parameters, resumption.
NEG=$TMP/negotiated.tsv
: >"$NEG"
s_client_brief() { # s_client_brief PORT [ARGS...] : one line "protocol | suite | temp key | sig"
  local port=$1
  shift
  printf 'GET / HTTP/1.0\r\n\r\n' | timeout 10 openssl s_client -connect "127.0.0.1:$port" -servername bench.test \
    -CAfile "$PKI/ca.pem" -verify_return_error -brief -ign_eof "$@" 2>&1 | awk -F': ' '
      /^Protocol version/ { v = $2 } /^Ciphersuite/ { c = $2 } /^Server Temp Key/ { k = $2 }
      /^Signature type/ { s = $2 } /^Verification:/ { ok = $2 }
      END { printf "%s | %s | %s | %s | %s\n", v, c, k, s, ok }'
}
resumes() { # resumes PORT [ARGS...] : "Reused" when the second connection resumed the first's session
  local port=$1 sess=$TMP/sess.pem out
  shift
  rm -f "$sess"
  printf 'GET / HTTP/1.0\r\n\r\n' | timeout 10 openssl s_client -connect "127.0.0.1:$port" -servername bench.test \
    -CAfile "$PKI/ca.pem" -ign_eof -sess_out "$sess" "$@" >/dev/null 2>&1 || true
  [[ -s $sess ]] || { echo "no session saved"; return 0; }
  out=$(printf 'GET / HTTP/1.0\r\n\r\n' | timeout 10 openssl s_client -connect "127.0.0.1:$port" -servername bench.test \
    -CAfile "$PKI/ca.pem" -ign_eof -sess_in "$sess" "$@" 2>&1 || true)
  if grep -q '^Reused, ' <<<"$out"; then echo Reused; else grep -m1 -E '^(New|Reused), ' <<<"$out" || echo "no answer"; fi
}
check_instance() { # check_instance ID : 0 when it answers over HTTPS
  local id=$1 port=${T_PORT[$1]} body
  body=$(curl -sS -m 5 --cacert "$PKI/ca.pem" --resolve "bench.test:$port:127.0.0.1" "https://bench.test:$port/" 2>&1) || true
  if [[ $body != "$BODY" ]]; then
    log "$id: GET https://bench.test:$port/ answered '$body' (want '$BODY')"
    return 1
  fi
  # HTTP/1.0 without Host, as openssl s_time -www sends it
  body=$(printf 'GET / HTTP/1.0\r\n\r\n' | timeout 10 openssl s_client -connect "127.0.0.1:$port" -quiet -ign_eof 2>/dev/null | tail -c 5) || true
  if [[ $body != "$BODY" ]]; then
    log "$id: 'GET / HTTP/1.0' without Host (what s_time sends) answered '$body' (want '$BODY')"
    return 1
  fi
  printf '%s\tTLS 1.3\t%s\t%s\n' "$id" "$(s_client_brief "$port")" "$(resumes "$port")" >>"$NEG"
  printf '%s\tTLS 1.2\t%s\t%s\n' "$id" "$(s_client_brief "$port" -tls1_2)" "$(resumes "$port" -tls1_2)" >>"$NEG"
}

TARGETS=() # instances that started and answered
for p in $PROXIES; do
  for k in $KEYS; do
    if start_proxy "$p" "$k"; then
      if check_instance "$p/$k"; then
        TARGETS+=("$p/$k")
      else
        T_NOTE[$p/$k]="does not answer correctly over HTTPS (see the script's messages)"
        kill_tree "${T_PID[$p/$k]}"
        unset "T_PORT[$p/$k]"
      fi
    fi
    [[ -n ${T_NOTE[$p/$k]:-} ]] && log "$p/$k left out: ${T_NOTE[$p/$k]}"
  done
done
((${#TARGETS[@]} > 0)) || die "no proxy is running"
log "negotiated (protocol | suite | key exchange | signature | verification, resumption):"
awk -F'\t' '{ printf "    %-12s %-7s %s, %s\n", $1, $2, $3, $4 }' "$NEG" >&2

# ---------------------------------------------------------------------------------------------
# Quiet machine: no compiler/linker, little foreign CPU: wait_quiet in bench/lib.sh, which counts
# its waits in WAITED_TOTAL / WAITED_CASES.
# ---------------------------------------------------------------------------------------------
QUIET_BUDGET=${QUIET_BUDGET:-$((2 * QUIET_WAIT))}
check_var QUIET_BUDGET "$QUIET_BUDGET" 0 864000

# ---------------------------------------------------------------------------------------------
# Load generators.
# ---------------------------------------------------------------------------------------------
all_pids() { # every process this script started and still runs (origin, all proxy instances)
  local r
  # shellcheck disable=SC2153 # ROOTS: set by start_server (bench/lib.sh)
  for r in ${ROOTS[@]+"${ROOTS[@]}"}; do descendants "$r"; done
}
scen_key() { case $1 in full-rsa) echo rsa ;; *) echo ec ;; esac; }
# run_load SCENARIO PORT SECONDS OUTPREFIX : runs the client(s) pinned, in the background, and
# waits. wrk: OUTPREFIX.0; s_time: OUTPREFIX.0 .. OUTPREFIX.(HS_CLIENTS-1). Returns 0.
run_load() {
  local scen=$1 port=$2 secs=$3 out=$4 i
  local -a args
  CLIENT_PIDS=()
  rm -f "$out".*
  case $scen in
    ka)
      timeout -k 5 $((secs + 30)) "${PIN_CLI[@]}" wrk -t1 -c"$CONNECTIONS" -d"$secs"s "https://127.0.0.1:$port/" \
        >"$out.0" 2>&1 &
      CLIENT_PIDS+=($!)
      ;;
    *)
      case $scen in
        full | full-rsa) args=(-new) ;;
        resumed) args=(-reuse) ;;
        full12) args=(-new -tls1_2) ;;
        resumed12) args=(-reuse -tls1_2) ;;
      esac
      for ((i = 0; i < HS_CLIENTS; i++)); do
        timeout -k 5 $((secs + 30)) "${PIN_CLI[@]}" openssl s_time -connect "127.0.0.1:$port" "${args[@]}" \
          -time "$secs" -www / >"$out.$i" 2>"$out.$i.err" &
        CLIENT_PIDS+=($!)
      done
      ;;
  esac
  LOAD_RC=0
  for i in "${CLIENT_PIDS[@]}"; do wait "$i" || LOAD_RC=$?; done
  CLIENT_PIDS=()
}
# parse_load SCENARIO OUTPREFIX : "count reused errors rate_hint"
#   wrk: count = requests, reused = 0, errors = socket errors + non-2xx, rate_hint = wrk's req/s
#   s_time: count = connections (one progress character each: 'r' resumed, '*' or 't' new),
#           reused = 'r' characters, errors = ERROR lines / runs that reported no total
parse_load() {
  local scen=$1 out=$2
  if [[ $scen == ka ]]; then
    local reqs rps errs
    read -r reqs rps _ errs < <(parse_wrk "$out.0" %.0f)
    printf '%d 0 %d %s\n' "$reqs" "$errs" "$rps"
  else
    local f files=()
    for f in "$out".[0-9]*; do [[ $f == *.err ]] || files+=("$f"); done
    awk '
      FNR == 1 { runs++ }
      /^[*rt3]+$/ { n = length($0); for (i = 1; i <= n; i++) { if (substr($0, i, 1) == "r") r++; c++ } }
      / connections in [0-9.]+s;/ { done++; total += $1 }
      END { if (done < runs) err += runs - done; if (total > c) c = total; printf "%d %d %d 0\n", c, r + 0, err + 0 }' "${files[@]}" |
      { read -r c r e _; printf '%d %d %d 0\n' "$c" "$r" $((e + $(cat "$out".*.err 2>/dev/null | grep -c ERROR || true))); }
  fi
}

# ---------------------------------------------------------------------------------------------
# One measured run.
# ---------------------------------------------------------------------------------------------
RAW=$TMP/raw.tsv
: >"$RAW"
LOADOUT=$TMP/load
measure() { # measure SCENARIO PROXY REP ATTEMPT : appends one line to $RAW; 1 when not quiet
  local scen=$1 p=$2 rep=$3 att=$4 id="$2/$(scen_key "$1")" quiet=1 busy="" b
  local port=${T_PORT[$id]} root=${T_PID[$id]} pids opids allp
  local c0 c1 o0 o1 a0 a1 s0 s1 t0 t1 e0 e1 cl count reused errs hint flag=ok foreign logl0 logl1
  wait_quiet || quiet=0
  if ((WARMUP > 0)); then
    run_load "$scen" "$port" "$WARMUP" "$LOADOUT-warm"
  fi
  pids=$(descendants "$root")
  opids=$(descendants "$O_PID")
  allp=$(all_pids)
  logl0=$(cat ${T_LOG[$id]} 2>/dev/null | wc -l)
  b=$(busy_now)
  [[ -n $b ]] && busy+="$b "
  times >"$TMP/times0"
  # shellcheck disable=SC2086
  { s0=$(sys_busy); t0=$(sys_total); c0=$(cpu_ticks $pids); o0=$(cpu_ticks $opids); a0=$(cpu_ticks $allp); e0=$(date +%s%N); }
  run_load "$scen" "$port" "$DURATION" "$LOADOUT"
  # shellcheck disable=SC2086
  { e1=$(date +%s%N); c1=$(cpu_ticks $pids); o1=$(cpu_ticks $opids); a1=$(cpu_ticks $allp); s1=$(sys_busy); t1=$(sys_total); }
  times >"$TMP/times1"
  b=$(busy_now)
  [[ -n $b ]] && busy+="$b "
  logl1=$(cat ${T_LOG[$id]} 2>/dev/null | wc -l)
  cl=$(($(children_ticks "$TMP/times1") - $(children_ticks "$TMP/times0")))
  # Foreign CPU: busy ticks of /proc/stat minus those of our servers, this shell and its clients,
  # in % of one CPU. Scaled by /proc/stat's own total (its tick count can run a few % off the
  # wall clock in a VM), so an idle machine reads about 0.
  foreign=$(awk -v f=$((s1 - s0 - (a1 - a0) - $(self_ticks "$TMP/times1") + $(self_ticks "$TMP/times0"))) \
    -v t=$((t1 - t0)) -v n="$NCPU" 'BEGIN { v = (t > 0) ? 100 * n * f / t : 0; printf "%.0f", (v < 0 ? 0 : v) }')
  ((foreign < FOREIGN_MAX)) || busy+="other processes ${foreign}% "
  read -r count reused errs hint < <(parse_load "$scen" "$LOADOUT")
  ((LOAD_RC == 0)) || { flag=client-failed; log "load generator exited with status $LOAD_RC:"; head -c 2000 "$LOADOUT".* | sed 's/^/    /' >&2; }
  ((errs == 0)) || flag=errors
  ((count > 0)) || flag=no-result
  kill -0 "$root" 2>/dev/null || flag=died
  [[ $scen == resumed* ]] && ((count > 0 && reused * 100 < count * 99)) && flag=not-resumed
  ((quiet)) || busy+="(busy before) "
  # scen proxy rep flag count reused errs rate_hint wall_ns proxy_ticks origin_ticks client_ticks foreign% busy attempt log_lines
  printf '%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\t%d\t%d\t%d\t%d\t%d\t%s\t%d\t%d\n' \
    "$scen" "$p" "$rep" "$flag" "$count" "$reused" "$errs" "$hint" $((e1 - e0)) $((c1 - c0)) $((o1 - o0)) "$cl" \
    "$foreign" "${busy% }" "$att" $((logl1 - logl0)) >>"$RAW"
  log "$(tail -n 1 "$RAW" | awk -F'\t' -v hz="$CLK_TCK" '{
    secs = $9 / 1e9; rate = ($1 == "ka") ? $8 : $5 / secs
    printf "%-9s %-8s run %s: %9.0f %s  proxy %7.2f us/%s (%3.0f%% CPU)  client %3.0f%% CPU  resumed %d/%d  errors %d  other %d%%%s%s",
      $1, $2, $3, rate, ($1 == "ka" ? "req/s" : "hs/s "), ($5 > 0 ? $10 * 1e6 / hz / $5 : 0), ($1 == "ka" ? "req" : "hs "),
      100 * $10 / hz / secs, 100 * $12 / hz / secs, $6, $5, $7, $13,
      ($4 == "ok" ? "" : "  [" $4 "]"), ($14 == "" ? "" : "  [busy: " $14 "]") }')"
  [[ -z ${busy// /} ]]
}

# ---------------------------------------------------------------------------------------------
# Run: REPEATS rounds; in each round every scenario, and in each scenario every proxy in turn.
# ---------------------------------------------------------------------------------------------
n_runs=0
for s in $SCENARIOS; do for p in $PROXIES; do [[ -n ${T_PORT[$p/$(scen_key "$s")]:-} ]] && n_runs=$((n_runs + 1)); done; done
n_runs=$((n_runs * REPEATS))
log "origin 127.0.0.1:$O_PORT; pinning: $PINNING"
log "$n_runs measured runs of ${DURATION}s (+${WARMUP}s warm-up), about $((n_runs * (DURATION + WARMUP + 2) / 60 + 1)) min on a quiet machine"
BUSY_BEFORE=$(idle_load)
START_TIME=$(date '+%Y-%m-%d %H:%M:%S %Z')
for ((rep = 1; rep <= REPEATS; rep++)); do
  for s in $SCENARIOS; do
    for p in $PROXIES; do
      id="$p/$(scen_key "$s")"
      [[ -n ${T_PORT[$id]:-} ]] || continue
      if ! kill -0 "${T_PID[$id]}" 2>/dev/null; then
        log "$id is no longer running: left out of the rest of the run"
        T_NOTE[$id]="exited during the run"
        unset "T_PORT[$id]"
        continue
      fi
      retry_if_busy "$s $p run $rep" measure "$s" "$p" "$rep"
    done
  done
done
END_TIME=$(date '+%Y-%m-%d %H:%M:%S %Z')

# ---------------------------------------------------------------------------------------------
# Report.
# ---------------------------------------------------------------------------------------------
MAIN=$TMP/main.md
VERDICT=$TMP/verdict.md
awk -F'\t' -v hz="$CLK_TCK" -v scens="$SCENARIOS" -v proxies="$PROXIES" -v verdict="$VERDICT" '
  function sort(a, n,   i, j, v) { for (i = 2; i <= n; i++) { v = a[i]; j = i - 1; while (j >= 1 && a[j] > v) { a[j + 1] = a[j]; j-- } a[j + 1] = v } }
  function med(k,   n, i, a) { n = cnt[k]; for (i = 1; i <= n; i++) a[i] = vals[k, i]; sort(a, n); return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
  function lo(k,   i, m) { m = vals[k, 1]; for (i = 2; i <= cnt[k]; i++) if (vals[k, i] < m) m = vals[k, i]; return m }
  function hi(k,   i, m) { m = vals[k, 1]; for (i = 2; i <= cnt[k]; i++) if (vals[k, i] > m) m = vals[k, i]; return m }
  function add(k, x) { cnt[k]++; vals[k, cnt[k]] = x + 0 }
  function spread(k, f) { return cnt[k] > 1 ? sprintf(" (" f "–" f ")", lo(k), hi(k)) : "" }
  BEGIN {
    label["ka"] = "keep-alive HTTPS requests (EC, TLS 1.3)"; unit["ka"] = "req/s"; per["ka"] = "request"
    label["full"] = "full handshakes (EC P-256, TLS 1.3)"; label["resumed"] = "resumed handshakes (EC, TLS 1.3 ticket)"
    label["full12"] = "full handshakes (EC P-256, TLS 1.2)"; label["resumed12"] = "resumed handshakes (EC, TLS 1.2)"
    label["full-rsa"] = "full handshakes (RSA-2048, TLS 1.3)"
  }
  {
    k = $1 SUBSEP $2; seen[k] = 1; runs[k]++; errs[k] += $7; tot[k] += $5; res[k] += $6
    if ($4 != "ok") { bad[k] = bad[k] (bad[k] == "" ? "" : ", ") $4; next }
    if ($14 != "") noisy[k]++
    good[k]++
    secs = $9 / 1e9
    add(k SUBSEP "rate", $1 == "ka" ? $8 : $5 / secs)
    add(k SUBSEP "cpu", $5 > 0 ? $10 * 1e6 / hz / $5 : 0)
    add(k SUBSEP "pct", 100 * $10 / hz / secs)
    add(k SUBSEP "cli", 100 * $12 / hz / secs)
    run[$1, $2, $3] = $5 > 0 ? $10 * 1e6 / hz / $5 : 0
    if ($3 > maxround) maxround = $3
  }
  function paired(sc, p,   r, n, a, b) { # ratios to nginx of the same round: "median (min–max)" and pm/plo/phi
    n = 0
    for (r = 1; r <= maxround; r++)
      if (((sc, p, r) in run) && ((sc, "nginx", r) in run) && run[sc, "nginx", r] > 0) { n++; a[n] = run[sc, p, r] / run[sc, "nginx", r] }
    if (n == 0) return "—"
    sort(a, n); pm = (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2; plo = a[1]; phi = a[n]
    return n > 1 ? sprintf("%.2f (%.2f–%.2f)", pm, plo, phi) : sprintf("%.2f", pm)
  }
  END {
    ns = split(scens, S, " "); np = split(proxies, P, " ")
    print "| scenario | proxy | rate, median (min–max) | proxy CPU µs per request / handshake, median (min–max) | ratio to nginx (medians) | ratio to nginx, same round: median (min–max) | proxy CPU % | client CPU % | resumed | valid runs |"
    print "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"
    for (s = 1; s <= ns; s++) {
      sc = S[s]; u = (sc == "ka") ? "req/s" : "hs/s"
      nk = sc SUBSEP "nginx"; base = cnt[nk SUBSEP "cpu"] ? med(nk SUBSEP "cpu") : 0
      for (i = 1; i <= np; i++) {
        k = sc SUBSEP P[i]
        if (!(k in seen)) continue
        if (!cnt[k SUBSEP "cpu"]) {
          printf "| %s | **%s** | — | — | — | — | — | — | — | 0/%d (%s) |\n", label[sc], P[i], runs[k], bad[k]
          continue
        }
        c = med(k SUBSEP "cpu")
        ratio = base > 0 ? sprintf("%.2f", c / base) : "—"
        resd = (sc ~ /^resumed/) ? sprintf("%d/%d", res[k], tot[k]) : ((sc == "ka") ? "—" : sprintf("%d/%d", res[k], tot[k]))
        valid = good[k] "/" runs[k] (bad[k] != "" ? " (" bad[k] ")" : "") (noisy[k] ? " † " noisy[k] " noisy" : "")
        printf "| %s | **%s** | %.0f %s%s | %.1f%s | %s | %s | %.0f | %.0f | %s | %s |\n", label[sc], P[i],
          med(k SUBSEP "rate"), u, spread(k SUBSEP "rate", "%.0f"), c, spread(k SUBSEP "cpu", "%.1f"), ratio, paired(sc, P[i]),
          med(k SUBSEP "pct"), med(k SUBSEP "cli"), resd, valid
        cpu[sc, P[i]] = c
        if (cnt[k SUBSEP "cpu"] > 1) { cpulo[sc, P[i]] = lo(k SUBSEP "cpu"); cpuhi[sc, P[i]] = hi(k SUBSEP "cpu") }
      }
    }
    # The criterion: full-handshake CPU within 10 % of nginx on the same run.
    for (s = 1; s <= ns; s++) {
      sc = S[s]
      if (sc !~ /^full/) continue
      if (!((sc, "portico") in cpu) || !((sc, "nginx") in cpu)) {
        printf "- %s: portico/nginx n/a (a median is missing)\n", label[sc] > verdict
        continue
      }
      r = cpu[sc, "portico"] / cpu[sc, "nginx"]
      pr = paired(sc, "portico")
      # Two estimates: ratio of the medians, and median of the same-round ratios. Both must agree.
      if (pr == "—") pm = r
      if (r <= 1.10 && pm <= 1.10) met = "**within 10 % of nginx: yes**"
      else if (r > 1.10 && pm > 1.10) met = "**within 10 % of nginx: NO**"
      else met = sprintf("**within 10 %% of nginx: undecided** (ratio of medians %.2f, median same-round ratio %.2f)", r, pm)
      note = "; same-round ratios " pr
      if (((sc, "portico") in cpulo) && ((sc, "nginx") in cpulo)) {
        rlo = cpulo[sc, "portico"] / cpuhi[sc, "nginx"]; rhi = cpuhi[sc, "portico"] / cpulo[sc, "nginx"]
        note = note sprintf("; any portico run ÷ any nginx run: %.2f–%.2f", rlo, rhi)
      }
      ha = ((sc, "haproxy") in cpu) ? sprintf(", HAProxy %.1f µs (%.2f × nginx)", cpu[sc, "haproxy"], cpu[sc, "haproxy"] / cpu[sc, "nginx"]) : ""
      printf "- %s: portico %.1f µs, nginx %.1f µs per handshake%s → portico/nginx = %.2f, %s%s\n", label[sc],
        cpu[sc, "portico"], cpu[sc, "nginx"], ha, r, met, note > verdict
    }
  }' "$RAW" >"$MAIN"

STAMP=$(date +%Y%m%d-%H%M%S)
mkdir -p "$RESULTS_DIR"
REPORT=$RESULTS_DIR/tls-$STAMP.md
noisy_runs=$(awk -F'\t' '$14 != ""' "$RAW" | wc -l)
retried=$(awk -F'\t' '$15 > 1' "$RAW" | wc -l)
foreign_med=$(awk -F'\t' '{ print $13 }' "$RAW" | sort -n | awk '{ a[NR] = $1 } END { if (NR) print a[int((NR + 1) / 2)]; else print 0 }')
foreign_max=$(awk -F'\t' '{ print $13 }' "$RAW" | sort -n | tail -n 1)
{
  echo "# portico TLS termination benchmark, $START_TIME"
  echo
  echo "- machine: $(machine_desc); $(version_of openssl)"
  echo "- pinning: $PINNING"
  echo "- quiet: before each run the script waited until no compiler/linker ($BUSY_PROCS) ran and other processes used < ${FOREIGN_MAX}% of a CPU; it waited before $WAITED_CASES run(s), ${WAITED_TOTAL} s in all. Other processes' CPU during the measured runs: median ${foreign_med}%, max ${foreign_max:-0}% of one CPU. $noisy_runs run(s) flagged as noisy (†), $retried measured again. Idle load before the first run: ${BUSY_BEFORE}% of a CPU. Run from $START_TIME to $END_TIME."
  echo "- origin: $(version_of nginx), 1 worker, plain HTTP/1.1 keep-alive, \`return 200 \"$BODY\"\` (5 bytes)"
  if [[ " $PROXIES " == *" portico "* ]]; then
    echo "- portico: \`reverse_proxy --listen 127.0.0.1:P --upstream 127.0.0.1:O --tls-cert leaf.pem --tls-key leaf.key --threads 1\` (library TLS defaults: TLS 1.2–1.3, tickets + session cache), binary $PORTICO_BIN (built $P_MTIME, sha256 $P_SUM…), repository at $rev with $dirty uncommitted change(s) under src/ include/ examples/ CMakeLists.txt when the run started"
  fi
  if [[ " $PROXIES " == *" nginx "* ]]; then
    echo "- nginx: $(version_of nginx), \`worker_processes 1\`, \`listen … ssl\`, \`ssl_protocols TLSv1.2 TLSv1.3\`, \`ssl_ciphers\` = portico's TLS 1.2 list, \`ssl_prefer_server_ciphers on\`, \`ssl_session_cache shared:SSL:10m\`, \`ssl_session_tickets on\`, upstream \`keepalive 64\`, \`proxy_http_version 1.1\`, access_log off; CPU = master + worker"
  fi
  if [[ " $PROXIES " == *" haproxy "* ]]; then
    echo "- HAProxy: $(version_of haproxy), \`nbthread 1\`, \`bind … ssl crt combined.pem\`, \`ssl-default-bind-ciphers\` = portico's TLS 1.2 list, ssl-min-ver TLSv1.2, \`tune.ssl.cachesize 20000\`, tickets on (default), \`http-reuse always\`, no log"
  fi
  echo "- certificates: made at run time with the openssl CLI: EC P-256 CA; leaf for bench.test with an EC P-256 key (all scenarios but full-rsa) or an RSA-2048 key (full-rsa); each server sends the leaf only (no chain)"
  echo "- keep-alive load: $(version_of wrk), \`wrk -t1 -c$CONNECTIONS -d${DURATION}s https://127.0.0.1:P/\`"
  echo "- handshake load: $HS_CLIENTS × \`openssl s_time -connect 127.0.0.1:P {-new|-reuse} [-tls1_2] -time $DURATION -www /\` side by side: every connection does one handshake (new, or resuming the session of the client's first connection) and one \`GET / HTTP/1.0\`, then the proxy closes it. No SNI."
  echo "- each run: ${WARMUP} s of the same load unmeasured, then ${DURATION} s measured; $REPEATS round(s), each round runs every scenario for every proxy in turn"
  echo
  echo "Rate = requests (wrk) or connections = handshakes (s_time) ÷ wall time of the measured run."
  echo "Proxy CPU µs = utime+stime of the proxy (all threads; nginx master + worker) from /proc/PID/stat over the measured run ÷ requests or handshakes."
  echo "For handshakes that is the whole connection: TCP accept, handshake, one proxied request to the kept-alive origin, close. Ratio to nginx (medians) = proxy CPU µs ÷ nginx's, medians over the rounds; same round = the proxy's run ÷ nginx's run of the same round (minutes apart, so less exposed to the machine's drift), median and range over the rounds."
  echo "Proxy CPU % = share of CPU $SRV_CPU the proxy used; client CPU % = share of CPU $CLI_CPU used by wrk / s_time (100 % means the load generator was the limit)."
  echo "Resumed = connections s_time reported as resumed ('r') / all connections."
  echo
  cat "$MAIN"
  echo
  echo "## Full-handshake CPU next to nginx"
  echo
  cat "$VERDICT" 2>/dev/null || echo "- n/a"
  echo
  echo "## Negotiated parameters"
  echo
  echo "\`openssl s_client -brief -servername bench.test -CAfile ca.pem\` (and \`-tls1_2\`) against each instance; resumption: a second s_client with the first one's \`-sess_out\` session."
  echo
  echo "| instance | client max | protocol | cipher suite | key exchange | signature | verification | second connection |"
  echo "|---|---|---|---|---|---|---|---|"
  awk -F'\t' '{ printf "| %s | %s | %s | %s |\n", $1, $2, $3, $4 }' "$NEG"
  for id in "${!T_NOTE[@]}"; do echo; echo "- $id: ${T_NOTE[$id]}"; done
  echo
  echo "<details><summary>every run</summary>"
  echo
  echo "| scenario | proxy | round | attempt | result | count | resumed | errors | rate | proxy µs/unit | proxy CPU % | origin µs/unit | client CPU % | other CPU % | proxy log lines | busy |"
  echo "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
  awk -F'\t' -v hz="$CLK_TCK" '{ secs = $9 / 1e9; rate = ($1 == "ka") ? $8 : $5 / secs
    printf "| %s | %s | %s | %s | %s | %d | %d | %d | %.0f | %.2f | %.0f | %.2f | %.0f | %d | %d | %s |\n", $1, $2, $3, $15, $4, $5, $6, $7, rate,
      ($5 > 0 ? $10 * 1e6 / hz / $5 : 0), 100 * $10 / hz / secs, ($5 > 0 ? $11 * 1e6 / hz / $5 : 0), 100 * $12 / hz / secs, $13, $16, $14 }' "$RAW"
  echo
  echo "</details>"
} >"$REPORT"

echo
cat "$MAIN"
echo
cat "$VERDICT" 2>/dev/null || true
echo "report: ${REPORT#"$ROOT"/}"
