#!/usr/bin/env bash
# launch/serve with a stand-in for `latte shard` (the scripted shard, which prints the shard's
# ready line) and the real `latte coordinator`: the address it prints serves Generate through the
# coordinator; SIGINT stops everything it started; a group that exits stops the coordinator too.
#
#   launch_serve_test.sh SOURCE_DIR LATTE SCRIPTED_SHARD PYTHON
# (PYTHONPATH: the client package and the generated stubs, set by ctest.)
set -euo pipefail
src=$1 latte=$2 shard=$3 python=$4
work=$(mktemp -d "${TMPDIR:-/tmp}/latte_serve_test.XXXXXX")
serve_pid=
cleanup() {  # serve stops what it started on SIGTERM; SIGKILL only if it does not
  if [ -n "$serve_pid" ]; then
    kill -TERM "$serve_pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$serve_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$serve_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; cat "$work"/serve.err >&2 2>/dev/null || true; exit 1; }

# latte with `shard` replaced by the scripted shard (same flags, same ready line).
cat >"$work/latte" <<EOF_FAKE
#!/usr/bin/env bash
if [ "\$1" != shard ]; then exec "$latte" "\$@"; fi
shift
while [ \$# -gt 0 ]; do
  case "\$1" in --tp) tp=\$2 ;; --model) model=\$2 ;; --listen) listen=\$2 ;; esac
  shift 2
done
rm -f "$work/shard.ready"
"$shard" --port "\${listen##*:}" --tokens 5 >"$work/shard.ready" &
child=\$!
echo \$child >"$work/shard.pid"
trap 'kill -TERM \$child; wait \$child; exit 0' TERM INT
for _ in \$(seq 100); do grep -q ready "$work/shard.ready" && break; sleep 0.1; done
echo "latte shard: serving \$model on \$listen (tp \$tp)"
wait \$child
EOF_FAKE
chmod +x "$work/latte"

port() { "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
start_serve() {
  listen=127.0.0.1:$(port)
  shard_listen=127.0.0.1:$(port)
  # A background job of a script starts with SIGINT ignored, and bash cannot trap a signal that
  # was ignored when it started; Ctrl-C in a terminal has no such problem. Python restores it.
  setsid "$python" -c 'import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])' \
    "$src/launch/serve" --model fake.bin --tp 1 --latte "$work/latte" --listen "$listen" \
    --shard-listen "$shard_listen" >"$work/serve.out" 2>"$work/serve.err" &
  serve_pid=$!
  for _ in $(seq 300); do [ -s "$work/serve.out" ] && break; sleep 0.1; done
  [ "$(head -n1 "$work/serve.out")" = "$listen" ] || fail "serve printed '$(cat "$work/serve.out")', expected $listen"
}
wait_exit() {  # serve's exit code into rc, within 30 s (not in a subshell: wait needs the parent)
  for _ in $(seq 300); do kill -0 "$serve_pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$serve_pid" 2>/dev/null && fail "serve still runs 30 s later"
  rc=0
  wait "$serve_pid" || rc=$?
  serve_pid=
}
none_left() {
  sleep 0.5
  if pgrep -f "$shard --port ${shard_listen##*:}" >/dev/null || pgrep -f "coordinator --listen $listen" >/dev/null; then
    ps -ef | grep -E "scripted_shard|coordinator" | grep -v grep >&2
    fail "serve left processes behind ($1)"
  fi
}

start_serve
"$python" - "$listen" <<'EOF_PY' || fail "Generate through serve's address"
import sys
from latte_client import LatteClient
text = LatteClient(sys.argv[1], timeout=20).generate_text("hi", max_new_tokens=5)
assert text == "t0 t1 t2 t3 t4 ", text
print("ok: generated through", sys.argv[1])
EOF_PY
kill -INT "$serve_pid"
wait_exit
[ "$rc" = 0 ] || fail "serve exited $rc on SIGINT, expected 0"
none_left "after SIGINT"
echo "ok: SIGINT stopped the coordinator and the shard group"

start_serve
kill -KILL "$(cat "$work/shard.pid")"
wait_exit
[ "$rc" = 1 ] || fail "serve exited $rc when its shard group died, expected 1"
grep -q "a server exited" "$work/serve.err" || fail "serve did not say why it stopped"
none_left "after the group died"
echo "ok: a dead shard group stops serve and its coordinator"
echo PASS
