# shellcheck shell=bash
# shellcheck disable=SC2034 # many variables set here are read by the sourcing scripts only
# Shared toolkit of the benchmark scripts (bench/e2e, bench/pool, bench/tls, bench/idle). Each one
# sources it right after `set -euo pipefail`:
#
#   LOG_TAG=e2e
#   source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
#
# Sourcing only defines functions and a few variables (below); nothing is started or written.
# Every function works under `set -euo pipefail`: what it reads from the script has a default
# here, is read with ${VAR:-default}, or stops the script with a message naming it (${VAR:?}).
#
# Variables the script sets:
#   LOG_TAG       before sourcing: prefix of log/die messages, "[LOG_TAG] ..." (default bench)
#   START_LOG     after sourcing, 0: start_server does not log the starts (default 1)
#   QUIET_WHAT    after sourcing: the word in wait_quiet's "the ... is flagged" (default run)
#   QUIET_WAIT, QUIET_BUDGET, FOREIGN_MAX, BUSY_PROCS   read by wait_quiet (BUSY_PROCS: default here)
#   ATTEMPTS, RAW                                       read by retry_if_busy
#   INSTALL_OPTIONAL                                    read by optional_cmd
#   WRK_PID                                             read and cleared by finish_wrk
#   ROOT, PORTICO_BIN                                   read by copy_portico / portico_desc
# Variables set here: NCPU, CLK_TCK, TMP (setup_tmp), ROOTS, EXIT_STATUS, PIN_SRV, PIN_CLI,
#   PINNING (pin_cpus), USED_PORTS, SUDO, APT_UPDATED, WAITED_TOTAL, WAITED_CASES,
#   PORTICO_ORIG, PORTICO_TIME, PORTICO_BIN (copy_portico).
# A script that starts other processes outside start_server (load generators) names them to the
# EXIT trap by defining extra_pids (see cleanup).

LOG_TAG=${LOG_TAG:-bench}
START_LOG=1
QUIET_WHAT=run
NCPU=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)
CLK_TCK=$(getconf CLK_TCK)
TMP=""
ROOTS=()                   # process trees started by start_server, killed by cleanup
declare -gA EXIT_STATUS=() # exit status of every PID kill_tree waited for
PIN_SRV=() PIN_CLI=()
PINNING="none"
USED_PORTS=" "
WAITED_TOTAL=0 WAITED_CASES=0
# Processes whose presence means "someone is building": measurements taken next to them are void
# (busy_now). Taken from the environment when set there.
BUSY_PROCS=${BUSY_PROCS:-"cc1plus cc1 ld ld.bfd ld.gold ld.lld x86_64-linux-gnu-ld"}

# ---------------------------------------------------------------------------------------------
# Messages, settings, help.
# ---------------------------------------------------------------------------------------------
log() { printf '[%s] %s\n' "$LOG_TAG" "$*" >&2; }                # log MSG... : to stderr
die() { printf '[%s] error: %s\n' "$LOG_TAG" "$*" >&2; exit 1; } # die MSG... : log and exit 1

print_help() { # print_help FILE : FILE's header comment (line 2 up to `set -euo`), without the '#'
  sed -n '2,/^set -euo/p' "$1" | sed '$d; s/^# \{0,1\}//'
}

is_uint() { [[ $1 =~ ^(0|[1-9][0-9]{0,6})$ ]]; } # is_uint VALUE : a decimal integer of at most 7 digits
check_var() { # check_var NAME VALUE MIN MAX : die unless VALUE is an integer in MIN..MAX
  if ! is_uint "$2" || (($2 < $3 || $2 > $4)); then die "$1 must be an integer in $3..$4 (got '$2')"; fi
}

need() { command -v "$1" >/dev/null || die "$1 is required but not found${2:+ ($2)}"; } # need CMD [HINT]

# ---------------------------------------------------------------------------------------------
# Process bookkeeping and cleanup.
# ---------------------------------------------------------------------------------------------
descendants() { # descendants PID : PID and every process below it, one per line
  { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v root="$1" '
    { s = $0; sub(/.*\) /, "", s); split(s, f, " "); ppid[$1] = f[2] }
    END {
      want[root] = 1; print root; changed = 1
      while (changed) {
        changed = 0
        for (p in ppid) if (!(p in want) && (ppid[p] in want)) { want[p] = 1; print p; changed = 1 }
      }
    }'
}

parent_of() { { cat "/proc/$1/stat" 2>/dev/null || true; } | awk '{ sub(/.*\) /, ""); print $2 }'; } # parent_of PID : its PPID

running() { # running PID : exists and is not a zombie (an orphan's zombie may never be reaped here)
  local st
  st=$({ cat "/proc/$1/stat" 2>/dev/null || true; } | awk '{ sub(/.*\) /, ""); print $1 }')
  [[ -n $st && $st != Z && $st != X ]]
}

kill_tree() { # kill_tree PID... : TERM these process trees, wait up to 3 s, then KILL what is left; exit statuses in EXIT_STATUS
  local pids="" p i alive
  # Only PIDs that are still this script's children: a PID that ended may have been reused.
  for p in "$@"; do [[ $(parent_of "$p") == "$$" ]] && pids+=" $(descendants "$p")"; done
  for p in $pids; do kill -TERM "$p" 2>/dev/null || true; done
  for ((i = 0; i < 30; i++)); do
    alive=0
    for p in $pids; do running "$p" && alive=1; done
    ((alive)) || break
    sleep 0.1
  done
  for p in $pids; do kill -KILL "$p" 2>/dev/null || true; done
  for p in "$@"; do
    EXIT_STATUS[$p]=0
    wait "$p" 2>/dev/null || EXIT_STATUS[$p]=$?
  done
}

stop_root() { # stop_root PID : kill a process tree started by start_server and forget it
  local r keep=()
  kill_tree "$1"
  for r in ${ROOTS[@]+"${ROOTS[@]}"}; do [[ $r == "$1" ]] || keep+=("$r"); done
  ROOTS=(${keep[@]+"${keep[@]}"})
}

cleanup() { # EXIT trap: kill every tree in ROOTS and the PIDs extra_pids prints, remove $TMP
  local rc=$? extra=()
  trap - EXIT INT TERM
  if declare -F extra_pids >/dev/null; then read -r -a extra <<<"$(extra_pids)" || true; fi
  kill_tree ${extra[@]+"${extra[@]}"} ${ROOTS[@]+"${ROOTS[@]}"}
  [[ -z $TMP ]] || rm -rf "$TMP"
  exit "$rc"
}

setup_tmp() { # setup_tmp NAME : TMP = a new ${TMPDIR:-/tmp}/portico-NAME.XXXXXX (mode 755); installs the traps
  TMP=$(mktemp -d "${TMPDIR:-/tmp}/portico-$1.XXXXXX")
  chmod 755 "$TMP"
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

# ---------------------------------------------------------------------------------------------
# Packages: installed with apt only when missing; `apt-get update` only before an install.
# ---------------------------------------------------------------------------------------------
if [[ $(id -u) -eq 0 ]]; then SUDO=(); elif command -v sudo >/dev/null; then SUDO=(sudo); else SUDO=(); fi
APT_UPDATED=0

apt_install() { # apt_install PKG... : apt-get install (sudo when not root); returns apt-get's status
  command -v apt-get >/dev/null || { log "apt-get not available, cannot install: $*"; return 1; }
  if [[ $(id -u) -ne 0 && ${#SUDO[@]} -eq 0 ]]; then log "not root and no sudo, cannot install: $*"; return 1; fi
  if ((APT_UPDATED == 0)); then
    log "apt-get update"
    if ! "${SUDO[@]}" apt-get update -q >"${TMP:?}/apt.log" 2>&1; then
      tail -n 20 "$TMP/apt.log" | sed 's/^/    /' >&2
      return 1
    fi
    APT_UPDATED=1
  fi
  log "apt-get install $*"
  if ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" \
    >"${TMP:?}/apt.log" 2>&1; then
    tail -n 20 "$TMP/apt.log" | sed 's/^/    /' >&2
    return 1
  fi
}

svc_running() { command -v pgrep >/dev/null && pgrep -x "$1" >/dev/null; } # svc_running NAME : a process NAME runs

ensure_cmd() { # ensure_cmd CMD PKG : install PKG when CMD is missing
  command -v "$1" >/dev/null && return 0
  local was_running=0
  svc_running "$1" && was_running=1
  apt_install "$2" || return 1
  hash -r
  # Where the package's maintainer scripts start the system service, stop it again: the scripts
  # run their own instances and leave nothing behind.
  if ((was_running == 0)) && svc_running "$1" && command -v service >/dev/null; then
    log "stopping the $1 system service that the install of $2 started"
    "${SUDO[@]}" service "$1" stop >&2 || true
  fi
  command -v "$1" >/dev/null
}

optional_cmd() { # optional_cmd CMD PKG : 0 when CMD is there or (INSTALL_OPTIONAL=1) was installed; else logs the skip
  if command -v "$1" >/dev/null || { [[ ${INSTALL_OPTIONAL:-1} == 1 ]] && ensure_cmd "$1" "$2"; }; then return 0; fi
  log "$1 not available: skipped (optional)"
  return 1
}

# ---------------------------------------------------------------------------------------------
# CPU pinning and CPU time.
# ---------------------------------------------------------------------------------------------
pin_cpus() { # pin_cpus SRV_CPU CLI_CPU DESCRIPTION : PIN_SRV / PIN_CLI = taskset prefixes, PINNING = DESCRIPTION (or why not)
  if command -v taskset >/dev/null && ((NCPU >= 2 && $1 < NCPU && $2 < NCPU && $1 != $2)); then
    PIN_SRV=(taskset -c "$1")
    PIN_CLI=(taskset -c "$2")
    PINNING=$3
  else
    PIN_SRV=() PIN_CLI=()
    PINNING="none (needs taskset and 2 distinct online CPUs; $NCPU online)"
    log "warning: no CPU pinning: $PINNING"
  fi
}

cpu_ticks() { # cpu_ticks PID... : utime+stime (fields 14+15, all threads) summed, in clock ticks
  local p
  for p in "$@"; do cat "/proc/$p/stat" 2>/dev/null || true; done |
    awk '{ s = $0; sub(/.*\) /, "", s); split(s, f, " "); t += f[12] + f[13] } END { print t + 0 }'
}

times_ticks() { # times_ticks FILE [LINE] : user+sys in clock ticks from `times` output (LINE 2: reaped children only)
  awk -v hz="$CLK_TCK" -v only="${2:-0}" 'only == 0 || NR == only {
      for (i = 1; i <= NF; i++) { v = $i; m = v; sub(/m.*/, "", m); sub(/^[0-9]+m/, "", v); sub(/s$/, "", v); t += m * 60 + v } }
    END { printf "%d", t * hz + 0.5 }' "$1"
}
self_ticks() { times_ticks "$1"; }       # self_ticks FILE : user+sys of this shell and its reaped children
children_ticks() { times_ticks "$1" 2; } # children_ticks FILE : user+sys of this shell's reaped children

machine_desc() { # machine_desc : "kernel release arch, N CPUs (model name)" for the reports
  printf '%s, %s CPUs (%s)' "$(uname -srm)" "$NCPU" \
    "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || echo unknown)"
}

version_of() { # version_of TOOL : one-line version of nginx, haproxy, h2o, wrk, h2load, openssl or python3
  case $1 in
    nginx) nginx -v 2>&1 | head -n 1 | sed 's/^nginx version: //' ;;
    haproxy) haproxy -v 2>/dev/null | head -n 1 | awk '{ print $1, $3 }' ;;
    h2o) h2o --version 2>/dev/null | head -n 1 ;;
    wrk) wrk -v 2>&1 | head -n 1 | awk '{ print $1, $2 }' ;;
    h2load) h2load --version 2>/dev/null | head -n 1 | awk '{ print $2 }' ;;
    openssl) openssl version ;;
    python3) python3 --version 2>&1 ;;
  esac
}

# ---------------------------------------------------------------------------------------------
# Quiet machine: no compiler or linker running and little CPU used by processes not ours.
# ---------------------------------------------------------------------------------------------
busy_now() { # busy_now : the names of running BUSY_PROCS (compilers, linkers), empty if none
  local p out=""
  for p in ${BUSY_PROCS:-}; do pgrep -x "$p" >/dev/null 2>&1 && out+="$p "; done
  printf '%s' "${out% }"
}
# Busy ticks in /proc/stat: user nice system irq softirq. The kernel's tick accounting also
# charges irq/softirq ticks to the task they interrupted, so this sum matches utime+stime of all
# tasks (plus interrupts that hit an idle CPU).
sys_busy() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8; exit }' /proc/stat; }                  # sys_busy : busy ticks, all CPUs
sys_total() { awk '/^cpu / { t = 0; for (i = 2; i <= 9; i++) t += $i; print t; exit }' /proc/stat; } # sys_total : all ticks, all CPUs

idle_load() { # idle_load : % of one CPU busy during the next second (run while the servers are idle)
  local b0 t0 b1 t1
  b0=$(sys_busy) t0=$(sys_total)
  sleep 1
  b1=$(sys_busy) t1=$(sys_total)
  awk -v b=$((b1 - b0)) -v t=$((t1 - t0)) -v n="$NCPU" 'BEGIN { printf "%.0f", (t > 0 ? 100 * b * n / t : 0) }'
}

# wait_quiet : up to QUIET_WAIT s (and what is left of QUIET_BUDGET, default 2 x QUIET_WAIT),
# polling every 20 s, until busy_now is empty and idle_load < FOREIGN_MAX (default 10); returns 1
# if still busy (the measurement is then flagged: "the QUIET_WHAT is flagged"). Adds the seconds
# waited to WAITED_TOTAL and counts the waits in WAITED_CASES.
wait_quiet() {
  local waited=0 b l limit=${QUIET_WAIT:-0}
  QUIET_BUDGET=${QUIET_BUDGET:-$((2 * limit))}
  ((limit <= QUIET_BUDGET)) || limit=$QUIET_BUDGET
  while :; do
    b=$(busy_now)
    l=$(idle_load)
    if [[ -z $b ]] && ((l < ${FOREIGN_MAX:-10})); then
      if ((waited > 0)); then
        log "machine quiet after ${waited}s"
        WAITED_TOTAL=$((WAITED_TOTAL + waited)) WAITED_CASES=$((WAITED_CASES + 1))
      fi
      return 0
    fi
    if ((waited >= limit)); then
      ((${QUIET_WAIT:-0} == 0)) || log "warning: still busy after ${waited}s (${b:+$b, }${l}% of a CPU); measuring anyway, the $QUIET_WHAT is flagged"
      WAITED_TOTAL=$((WAITED_TOTAL + waited))
      ((waited == 0)) || WAITED_CASES=$((WAITED_CASES + 1))
      return 1
    fi
    ((waited > 0)) || log "waiting for a quiet machine: ${b:+$b running, }other processes use ${l}% of a CPU (up to ${limit}s, polling every 20 s)"
    sleep 19 # + 1 s in idle_load
    waited=$((waited + 20))
    QUIET_BUDGET=$((QUIET_BUDGET > 20 ? QUIET_BUDGET - 20 : 0))
  done
}

# retry_if_busy WHAT CMD... : runs `CMD... ATTEMPT` for ATTEMPT = 1, 2, ... up to ATTEMPTS (default
# 1) until it returns 0; a non-zero return means "the machine was not quiet", and before measuring
# again the line CMD appended to $RAW is dropped (the last attempt's line stays, flagged)
retry_if_busy() {
  local what=$1 att
  shift
  for ((att = 1; att <= ${ATTEMPTS:-1}; att++)); do
    if "$@" "$att"; then break; fi
    if ((att < ${ATTEMPTS:-1})); then
      log "the machine was not quiet during $what: measuring it again"
      sed -i '$d' "${RAW:?}"
    fi
  done
}

# ---------------------------------------------------------------------------------------------
# The portico binary.
# ---------------------------------------------------------------------------------------------
# copy_portico : when PORTICO_BIN is an executable file, copies it to $TMP/reverse_proxy and points
# PORTICO_BIN at the copy, so that a rebuild during the run cannot mix two builds in one report;
# PORTICO_ORIG and PORTICO_TIME keep the original's path and modification time. 1 when there is none.
copy_portico() {
  PORTICO_ORIG=${PORTICO_BIN:?}
  [[ -f $PORTICO_BIN && -x $PORTICO_BIN ]] || return 1
  PORTICO_TIME=$(date -r "$PORTICO_BIN" '+%Y-%m-%d %H:%M:%S' 2>/dev/null || echo '?')
  cp "$PORTICO_BIN" "${TMP:?}/reverse_proxy" || return 1
  PORTICO_BIN=$TMP/reverse_proxy
}

portico_desc() { # portico_desc : "a copy of BIN (modified TIME), repository at REV[ with uncommitted changes ...]" for the reports
  printf 'a copy of %s (modified %s), repository at %s%s' "${PORTICO_ORIG#"${ROOT:?}"/}" "${PORTICO_TIME:-?}" \
    "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo 'no commit yet')" \
    "$(git -C "$ROOT" diff --quiet HEAD -- src include 2>/dev/null || echo ' with uncommitted changes in src/ or include/')"
}

# ---------------------------------------------------------------------------------------------
# Ports and servers: random high ports below the ephemeral range, checked free, never reused in
# a run; servers started pinned, in the background.
# ---------------------------------------------------------------------------------------------
port_busy() { # port_busy PORT : 0 when something listens on (or has bound) 127.0.0.1:PORT
  if command -v ss >/dev/null; then
    [[ -n $(ss -Htln "sport = :$1" 2>/dev/null) ]]
  elif command -v python3 >/dev/null; then
    if python3 -c 'import socket,sys; s=socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1])))' "$1" 2>/dev/null; then
      return 1
    fi
  else
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
  fi
}

pick_port() { # pick_port : sets REPLY to a free port in 20000..31999 not used before in this run
  local i p
  for ((i = 0; i < 200; i++)); do
    p=$((20000 + (RANDOM * 32768 + RANDOM) % 12000))
    [[ $USED_PORTS == *" $p "* ]] && continue
    port_busy "$p" && continue
    USED_PORTS+="$p "
    REPLY=$p
    return 0
  done
  die "no free port found"
}

start_server() { # start_server NAME LOG CMD... : pinned (PIN_SRV), in the background, in ROOTS; sets REPLY to its pid
  local name=$1 logf=$2
  shift 2
  "${PIN_SRV[@]}" "$@" >"$logf" 2>&1 &
  REPLY=$!
  ROOTS+=("$REPLY")
  if ((START_LOG)); then log "started $name (pid $REPLY): $*"; fi
}

# wait_listen [--ready TEXT] NAME PID PORT LOG... : up to 10 s for 127.0.0.1:PORT to accept (and,
# with --ready, for TEXT to appear in the logs) while PID lives; prints the logs' last lines when not.
wait_listen() {
  local ready="" name pid port i
  if [[ ${1:-} == --ready ]]; then ready=$2; shift 2; fi
  name=$1 pid=$2 port=$3
  shift 3
  for ((i = 0; i < 100; i++)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "$name exited during start-up; last lines of its logs:"
      if (($#)); then tail -n 20 "$@" 2>/dev/null | sed 's/^/    /' >&2 || true; fi
      return 1
    fi
    if [[ -z $ready ]] || grep -q -- "$ready" "$@" 2>/dev/null; then
      if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    fi
    sleep 0.1
  done
  if [[ -n $ready ]]; then
    log "$name did not become ready on 127.0.0.1:$port within 10 s; last lines of its logs:"
  else
    log "$name did not listen on 127.0.0.1:$port within 10 s; last lines of its logs:"
  fi
  if (($#)); then tail -n 20 "$@" 2>/dev/null | sed 's/^/    /' >&2 || true; fi
  return 1
}

# ---------------------------------------------------------------------------------------------
# nginx (origin and proxy): configuration pieces and start-up.
# ---------------------------------------------------------------------------------------------
nginx_temp_paths() { # nginx_temp_paths DIR : the *_temp_path lines, all under DIR/tmp
  local d=$1
  printf '    client_body_temp_path %s/tmp/body;\n    proxy_temp_path %s/tmp/proxy;\n' "$d" "$d"
  printf '    fastcgi_temp_path %s/tmp/fastcgi;\n    uwsgi_temp_path %s/tmp/uwsgi;\n    scgi_temp_path %s/tmp/scgi;\n' "$d" "$d" "$d"
}

# nginx_head DIR WORKERS CONNECTIONS [RLIMIT_NOFILE] : an nginx.conf from its first line up to the
# temp paths inside `http {` (user root when run as root, pid and error log in DIR, access log off)
nginx_head() {
  local user=""
  [[ $(id -u) -ne 0 ]] || user="user root;"
  printf '%s\nworker_processes %s;\n' "$user" "$2"
  if [[ -n ${4:-} ]]; then printf 'worker_rlimit_nofile %s;\n' "$4"; fi
  printf 'pid %s/nginx.pid;\nerror_log %s/error.log warn;\nevents { worker_connections %s; }\nhttp {\n    access_log off;\n' \
    "$1" "$1" "$3"
  nginx_temp_paths "$1"
}

nginx_upstream() { # nginx_upstream ADDR KEEPALIVE REQUESTS [TIMEOUT] : `upstream origin { ... }` with idle keep-alive connections
  printf '    upstream origin {\n        server %s;\n        keepalive %s;\n        keepalive_requests %s;\n' "$1" "$2" "$3"
  if [[ -n ${4:-} ]]; then printf '        keepalive_timeout %s;\n' "$4"; fi
  printf '    }\n'
}

nginx_proxy_location() { # nginx_proxy_location : `location /` passing to upstream origin over HTTP/1.1 keep-alive
  printf '        location / {\n            proxy_pass http://origin;\n            proxy_http_version 1.1;\n'
  printf '            proxy_set_header Connection "";\n        }\n'
}

# nginx_origin_conf [--sendfile] DIR WWW KEEPALIVE_TIMEOUT SERVER_LINE... : the nginx.conf of an
# origin (nginx_head DIR 1 4096) serving the files under WWW with keep-alive (KEEPALIVE_TIMEOUT,
# keepalive_requests 1000000); the SERVER_LINEs (the listen lines, TLS settings, more locations)
# go into its server block. --sendfile: `sendfile on` and an open_file_cache, for bodies that
# matter (a 5-byte body does not need them).
nginx_origin_conf() {
  local files="" l
  if [[ ${1:-} == --sendfile ]]; then
    files=$'    sendfile on;\n    open_file_cache max=16 inactive=60s;\n'
    shift
  fi
  nginx_head "$1" 1 4096
  printf '    default_type application/octet-stream;\n%s    tcp_nodelay on;\n' "$files"
  printf '    keepalive_timeout %s;\n    keepalive_requests 1000000;\n    server {\n' "$3"
  for l in "${@:4}"; do printf '        %s\n' "$l"; done
  printf '        root %s;\n        location / { }\n    }\n}\n' "$2"
}

nginx_accepts() { # nginx_accepts URL : the `accepts` counter of an nginx stub_status page (this read's own connection included)
  local out
  out=$(timeout -k 2 10 "${PIN_CLI[@]}" curl -sS -m 5 "$1" 2>&1) || { log "cannot read $1: $out"; return 1; }
  awk '/^ *[0-9]+ +[0-9]+ +[0-9]+ *$/ { print $1; found = 1; exit } END { exit !found }' <<<"$out" ||
    { log "no counters in $1: $out"; return 1; }
}

start_nginx() { # start_nginx NAME DIR CONF [STDOUT_LOG] : nginx -p DIR -c DIR/CONF in the foreground via start_server (log DIR/STDOUT_LOG, default stdout.log)
  start_server "$1" "$2/${4:-stdout.log}" nginx -e "$2/error.log" -p "$2" -c "$2/$3" -g 'daemon off;'
}

# ---------------------------------------------------------------------------------------------
# HAProxy.
# ---------------------------------------------------------------------------------------------
# haproxy_conf BIND_LINE SERVER_LINE [GLOBAL_LINE...] : haproxy.cfg of a one-thread HTTP proxy
# (maxconn 4096, keep-alive both ways, http-reuse always, 5 s connect / 30 s client and server
# timeouts), frontend fe with BIND_LINE, backend origin with SERVER_LINE. Kernel splicing, its
# zero-copy path for bodies (portico splices long ones), by HAPROXY_SPLICE: auto (default:
# `option splice-auto`, where HAProxy judges it worth it), response (`option splice-response`,
# every response body it can) or off.
haproxy_conf() {
  local bind=$1 srv=$2 g
  shift 2
  printf 'global\n    nbthread 1\n    maxconn 4096\n'
  for g in "$@"; do printf '    %s\n' "$g"; done
  printf 'defaults\n    mode http\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n'
  printf '    option http-keep-alive\n    http-reuse always\n'
  case ${HAPROXY_SPLICE:-auto} in
    auto) printf '    option splice-auto\n' ;;
    response) printf '    option splice-response\n' ;;
  esac
  printf 'frontend fe\n    %s\n    default_backend origin\nbackend origin\n    %s\n' "$bind" "$srv"
}

# ---------------------------------------------------------------------------------------------
# Load generators.
# ---------------------------------------------------------------------------------------------
finish_wrk() { # finish_wrk : wait for the load generator started in the background as WRK_PID; returns its status
  local rc=0
  wait "${WRK_PID:?finish_wrk: no load generator running}" || rc=$?
  WRK_PID=""
  return "$rc"
}

# parse_wrk FILE [RPS_FORMAT] : "requests rps p99_ms errors" from wrk's output; rps as wrk wrote
# it, or printf-formatted with RPS_FORMAT (e.g. %.0f); p99 is 0 when wrk ran without --latency
parse_wrk() {
  awk -v rfmt="${2:-%s}" '
    / requests in / { reqs = $1 }
    /^Requests\/sec:/ { rps = $2 }
    /^ +99(\.0+)?%/ { p99 = $2 }
    /Socket errors:/ { l = $0; gsub(/[^0-9]+/, " ", l); n = split(l, a, " "); for (i = 1; i <= n; i++) err += a[i] }
    /Non-2xx or 3xx responses:/ { err += $NF }
    END {
      v = p99 + 0; u = p99; sub(/^[0-9.]+/, "", u)
      if (u == "us") v /= 1000; else if (u == "s") v *= 1000; else if (u == "m") v *= 60000; else if (u == "h") v *= 3600000
      if (reqs == "") reqs = 0
      if (rps == "") rps = 0
      printf "%d " rfmt " %.3f %d\n", reqs, rps, v, err
    }' "$1"
}
