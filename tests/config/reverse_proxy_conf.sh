#!/usr/bin/env bash
# ctest: the shared command line of the reverse_proxy example, end to end. `-t -c` on a
# configuration with a typo fails naming the file, line, column and key; on a good one it prints
# "configuration OK"; a good configuration runs the self-test; bad flags are usage errors.
#
#   tests/config/reverse_proxy_conf.sh build/examples/reverse_proxy
set -uo pipefail
bin=${1:?usage: $0 PATH/TO/reverse_proxy}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0

fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# run ARGS...: sets $rc, $out, $err.
run() {
  "$bin" "$@" >"$work/out" 2>"$work/err"
  rc=$?
  out=$(cat "$work/out")
  err=$(cat "$work/err")
}

cat >"$work/typo.yaml" <<'EOF'
version: 1
threads: 2
thraeds: 4
EOF
run -t -c "$work/typo.yaml"
[[ $rc -ne 0 ]] || fail "-t on a typo exited 0"
want="$work/typo.yaml:3:1: unknown key 'thraeds' (did you mean 'threads'?)"
[[ $err == *"$want"* ]] || fail "-t on a typo: stderr is [$err], wanted [$want]"
[[ -z $out ]] || fail "-t on a typo printed [$out] on stdout"

cat >"$work/type.yaml" <<'EOF'
limits:
  max_header_count: many
EOF
run --test --conf "$work/type.yaml"
[[ $rc -eq 1 ]] || fail "-t on a bad value exited $rc, wanted 1"
want="$work/type.yaml:2:21: 'limits.max_header_count' must be a positive integer, got \"many\""
[[ $err == *"$want"* ]] || fail "-t on a bad value: stderr is [$err], wanted [$want]"

cat >"$work/good.yaml" <<'EOF'
version: 1
threads: 2
grace_period_seconds: 5
timeouts:
  header_read_ms: 2000
  keepalive_ms: 3000
limits:
  max_header_count: 64
listeners:
  - address: 127.0.0.1:0
EOF
run -t -c "$work/good.yaml"
[[ $rc -eq 0 ]] || fail "-t on a good configuration exited $rc: $err"
[[ $out == "configuration OK: $work/good.yaml" ]] || fail "-t on a good configuration printed [$out]"

# The configuration sets the server up; the self-test then proxies through it.
run --self-test -c "$work/good.yaml" --threads 3
[[ $rc -eq 0 && $out == ok ]] || fail "--self-test with -c: exit $rc, stdout [$out], stderr [$err]"

run --threads 0 --self-test
[[ $rc -eq 2 ]] || fail "--threads 0 exited $rc, wanted 2"
[[ $err == *"--threads needs a positive integer"* ]] || fail "--threads 0: stderr [$err]"
run --header-read-timeout-ms 0 --self-test
[[ $rc -eq 2 && $err == *"--header-read-timeout-ms needs a number of milliseconds in 1..86400000"* ]] ||
  fail "--header-read-timeout-ms 0: exit $rc, stderr [$err]"
run --no-such-flag
[[ $rc -eq 2 ]] || fail "an unknown flag exited $rc, wanted 2"

run --version
[[ $rc -eq 0 && $out == "reverse_proxy (portico "*")" ]] || fail "--version: exit $rc, stdout [$out]"
run --help
[[ $rc -eq 0 && $out == *"-c,--conf FILE"* && $out == *"--upstream"* ]] || fail "--help: exit $rc"

if [[ $failures -ne 0 ]]; then
  echo "$failures check(s) failed"
  exit 1
fi
echo "all reverse_proxy configuration checks passed"
