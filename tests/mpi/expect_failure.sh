#!/usr/bin/env bash
# expect_failure.sh: runs a command that must fail, and checks how it failed.
#   expect_failure.sh [--within SECONDS] [--exit-code N] [--expect REGEX]... [--reject REGEX]...
#                     -- command args...
# Passes when the command exits non-zero (with --exit-code, exactly N), its combined stdout+stderr matches every --expect
# (grep -E, one line each) and no --reject, and, with --within, it ended in that many seconds.
# The output is echoed so that ctest --output-on-failure shows what happened.
set -u
within=0
want_rc=
expects=()
rejects=()
while [ $# -gt 0 ]; do
  case "$1" in
    --within) within=$2; shift 2 ;;
    --exit-code) want_rc=$2; shift 2 ;;
    --expect) expects+=("$2"); shift 2 ;;
    --reject) rejects+=("$2"); shift 2 ;;
    --) shift; break ;;
    *) echo "expect_failure.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
[ $# -gt 0 ] || { echo "expect_failure.sh: no command after --" >&2; exit 2; }

log=$(mktemp)
trap 'rm -f "$log"' EXIT
start=$(date +%s.%N)
"$@" >"$log" 2>&1
rc=$?
elapsed=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
cat "$log"
echo "---- expect_failure.sh: exit code $rc after $elapsed s"

ok=1
if [ "$rc" -eq 0 ]; then echo "FAIL: the command exited 0, expected a failure"; ok=0; fi
if [ -n "$want_rc" ] && [ "$rc" -ne "$want_rc" ]; then echo "FAIL: exit code $rc, expected $want_rc"; ok=0; fi
for re in "${expects[@]}"; do
  if grep -Eq -- "$re" "$log"; then echo "ok: output matches /$re/"
  else echo "FAIL: output does not match /$re/"; ok=0; fi
done
for re in "${rejects[@]}"; do
  if grep -Eq -- "$re" "$log"; then echo "FAIL: output matches rejected /$re/"; ok=0; fi
done
if [ "$within" != 0 ] && awk -v e="$elapsed" -v w="$within" 'BEGIN { exit !(e > w) }'; then
  echo "FAIL: took $elapsed s, expected at most $within s"; ok=0
fi
[ "$ok" -eq 1 ] && echo "PASS" && exit 0
exit 1
