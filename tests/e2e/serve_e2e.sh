#!/usr/bin/env bash
# End to end: `latte shard --tp 2` under mpiexec on stories260K, `latte coordinator` in front of
# it, and the Python client (inference/clients/python):
#   1. greedy generation through the coordinator equals `latte generate --temperature 0`;
#   2. rank 1 of the group killed (SIGKILL) while a stream is running: the client gets
#      UNAVAILABLE naming the group, the group's mpirun ends, the next request is UNAVAILABLE,
#      the coordinator is still up and reports the group (and itself) NOT_SERVING;
#   3. the group restarted on its port: SERVING again, used again, same greedy text;
#   4. the group replaced by one serving an MLA conversion of stories260K: greedy through the
#      coordinator equals `latte generate --temperature 0` on the converted model.
#
#   serve_e2e.sh LATTE MODELS_DIR PYTHON PYTHONPATH MPIEXEC NP_FLAG [MPIEXEC FLAGS...]
# (tests/CMakeLists.txt passes the flags of tests/mpi: --allow-run-as-root --oversubscribe
# --mca btl self,vader --mca oob_tcp_if_include lo.)
set -euo pipefail
latte=$1
models=$2
python=$3
export PYTHONPATH=$4
mpiexec=("$5" "$6" 2)
shift 6
mpi_flags=("$@")

model=$models/stories260K/stories260K.bin
prompt="Once upon a time"
new_tokens=60
work=$(mktemp -d "${TMPDIR:-/tmp}/latte_serve_e2e.XXXXXX")
group_pid=
coord_pid=

fail() {
  echo "FAIL: $*" >&2
  for f in "$work"/*.log; do
    [ -f "$f" ] && { echo "---- $(basename "$f")" >&2; tail -n 40 "$f" >&2; }
  done
  exit 1
}

# Each server runs in its own process group (setsid), so that one kill reaches mpirun and every
# rank it started.
stop_group() {
  local pid=$1
  [ -n "$pid" ] || return 0
  kill -TERM -- "-$pid" 2>/dev/null || return 0
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL -- "-$pid" 2>/dev/null || true
}
cleanup() {
  stop_group "$coord_pid"
  stop_group "$group_pid"
  rm -rf "$work"
}
trap cleanup EXIT

# The first line of LOG matching REGEX (grep -E), waiting up to SECONDS while PID lives.
wait_line() {
  local log=$1 regex=$2 seconds=$3 pid=$4
  for _ in $(seq $((seconds * 10))); do
    if grep -Eq "$regex" "$log" 2>/dev/null; then grep -Em1 "$regex" "$log"; return 0; fi
    kill -0 "$pid" 2>/dev/null || fail "$(basename "$log" .log) exited before printing /$regex/"
    sleep 0.1
  done
  fail "no /$regex/ in $(basename "$log") after $seconds s"
}

free_port() {
  "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start_group() {
  setsid "${mpiexec[@]}" "${mpi_flags[@]}" "$latte" shard --tp 2 --model "$model" --listen "$shard_addr" \
    >"$work/shard.log" 2>&1 &
  group_pid=$!
  wait_line "$work/shard.log" "^latte shard: serving .* on .* \\(tp 2\\)" 180 "$group_pid"
}

# Python with the client: the snippet gets the coordinator's address as sys.argv[1].
client() {
  "$python" - "$coord_addr" "$@"
}

# Waits (30 s at most) until the coordinator reports the group, and itself, SERVING again.
wait_serving() {
  client "$shard_addr" "$1" <<'EOF_PY' || fail "$1 is not SERVING"
import sys, time
from latte_client import LatteClient
c = LatteClient(sys.argv[1], timeout=30)
group = "shard:" + sys.argv[2]
end = time.time() + 30
while c.health(group) != "SERVING":
    assert time.time() < end, "%s is still %s" % (sys.argv[3], c.health(group))
    time.sleep(0.1)
assert c.health() == "SERVING", c.health()
print("ok: %s (%s) SERVING" % (sys.argv[3], group))
EOF_PY
}

shard_addr=127.0.0.1:$(free_port)
start_group
setsid "$latte" coordinator --listen 127.0.0.1:0 --shard "$shard_addr" --health-interval-ms 200 \
  >"$work/coordinator.log" 2>&1 &
coord_pid=$!
ready=$(wait_line "$work/coordinator.log" "^latte coordinator: serving on .*, 1 shard groups" 60 "$coord_pid")
coord_addr=$(echo "$ready" | sed -E 's/^latte coordinator: serving on ([^,]+),.*/\1/')
echo "shard group on $shard_addr, coordinator on $coord_addr"

# Greedy through the coordinator vs latte generate on MODEL (what the group serves), written to
# OUT. latte generate runs `steps` positions, prompt (with BOS) included, and generates
# steps - prompt + 1 tokens; it echoes the prompt.
prompt_tokens=$(client "$prompt" <<'EOF_PY'
import sys
from latte_client import LatteClient
print(len(LatteClient(sys.argv[1], timeout=30).tokenize(sys.argv[2], add_bos=True).ids))
EOF_PY
) || fail "Tokenize through the coordinator"
greedy() {
  client "$prompt" "$new_tokens" <<'EOF_PY'
import sys
from latte_client import LatteClient
sys.stdout.write(LatteClient(sys.argv[1], timeout=60).generate_text(sys.argv[2], max_new_tokens=int(sys.argv[3]),
                                                                    temperature=0))
EOF_PY
}
check_greedy() {
  local served_model=$1 out=$2
  "$latte" generate --model "$served_model" --temperature 0 --prompt "$prompt" --steps $((new_tokens + prompt_tokens - 1)) \
    >"$work/generate.out" 2>"$work/generate.log" || fail "latte generate --model $served_model"
  greedy >"$out" || fail "greedy generation through the coordinator"
  "$python" - "$work/generate.out" "$out" "$prompt" <<'EOF_PY' || fail "served text differs from latte generate on $served_model"
import sys
reference = open(sys.argv[1]).read()
served = open(sys.argv[2]).read()
prompt = sys.argv[3]
assert reference.endswith("\n"), "latte generate output does not end with a newline"
reference = reference[:-1]
assert reference.startswith(prompt), "latte generate does not echo the prompt: %r" % reference[:80]
reference = reference[len(prompt):]
print("latte generate: %r" % reference)
print("served:         %r" % served)
sys.exit(0 if served == reference and len(served) > 0 else 1)
EOF_PY
  echo "ok: greedy output through the coordinator equals latte generate on $(basename "$served_model") ($new_tokens tokens)"
}

# 1. Greedy through the coordinator vs latte generate.
check_greedy "$model" "$work/served.out"

# 2. Kill rank 1 of the group: OpenMPI puts each rank's index in its environment.
rank1=
for pid in $(pgrep -s "$group_pid"); do
  if tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=1"; then rank1=$pid; fi
done
[ -n "$rank1" ] || fail "no rank 1 among the group's processes"
# A stream as long as the context allows, with rank 1 frozen (SIGSTOP) before the call starts and
# killed a second into it: the group can run no decode step without rank 1, so the call is in
# flight on the group when it dies, however fast the model or slow the machine. (Killing it at the
# first piece raced the server: under load stories260K finished all 400 tokens before that piece
# reached the client.)
client "$rank1" <<'EOF_PY' || fail "the stream during the kill"
import os, signal, sys, threading, grpc
from latte_client import LatteClient, LatteError
from latte.v1 import inference_pb2 as pb
c = LatteClient(sys.argv[1], timeout=60)
rank1 = int(sys.argv[2])
os.kill(rank1, signal.SIGSTOP)
killer = threading.Timer(1.0, lambda: os.kill(rank1, signal.SIGKILL))
killer.start()
pieces = 0
try:
    for message in c.generate_responses("Once upon a time", max_new_tokens=400, temperature=0):
        assert message.finish_reason in (0, pb.FINISH_REASON_ERROR), \
            "the stream ended normally after %d pieces: the kill came too late" % pieces
        if message.text:
            pieces += 1
    raise SystemExit("the stream ended without an error after the kill")
except LatteError as e:
    assert e.code == grpc.StatusCode.UNAVAILABLE, e
    print("ok: rank 1 frozen, then killed during the call; the stream ended UNAVAILABLE after %d pieces: %s"
          % (pieces, e.details))
finally:
    killer.join()
EOF_PY
for _ in $(seq 300); do kill -0 "$group_pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$group_pid" 2>/dev/null && fail "mpirun still runs 30 s after rank 1 was killed"
group_pid=
client "$shard_addr" <<'EOF_PY' || fail "after the kill"
import sys, time, grpc
from latte_client import LatteClient, LatteError
c = LatteClient(sys.argv[1], timeout=30)
group = "shard:" + sys.argv[2]
end = time.time() + 20
while c.health(group) != "NOT_SERVING":
    assert time.time() < end, "the coordinator still reports %s %s" % (group, c.health(group))
    time.sleep(0.1)
assert c.health() == "NOT_SERVING", c.health()
try:
    c.generate_text("Once upon a time", max_new_tokens=5)
    raise SystemExit("a request succeeded with the only group dead")
except LatteError as e:
    assert e.code == grpc.StatusCode.UNAVAILABLE, e
    assert sys.argv[2] in e.details, e.details
    print("ok: UNAVAILABLE:", e.details)
print("ok: coordinator up, %s NOT_SERVING" % group)
EOF_PY
kill -0 "$coord_pid" 2>/dev/null || fail "the coordinator died with the group"

# 3. Restart the group on its port: it is healthy and used again.
start_group
wait_serving "the restarted group"
greedy >"$work/served2.out" || fail "greedy generation after the restart"
cmp -s "$work/served.out" "$work/served2.out" || fail "the restarted group answers differently"
client <<'EOF_PY' || fail "stats after the restart"
import sys
from latte_client import LatteClient
g = LatteClient(sys.argv[1], timeout=30).stats().shard_groups[0]
assert g.healthy and g.requests_routed >= 3, g
print("ok: the restarted group served again (%d calls routed to it in all)" % g.requests_routed)
EOF_PY

# 4. The same through an MLA conversion of stories260K (partial RoPE, low-rank latent): the group
#    stopped and started again on the converted model.
"$latte" convert --model "$model" --out "$work/stories260K-mla" --rope-strategy high --rope-pairs 1 --d-kv 4 --quiet \
  >"$work/convert.log" 2>&1 || fail "latte convert"
stop_group "$group_pid"
group_pid=
model=$work/stories260K-mla
start_group
wait_serving "the MLA group"
client <<'EOF_PY' || fail "after the switch to MLA"
import sys
from latte_client import LatteClient
info = LatteClient(sys.argv[1], timeout=30).model_info()
from latte.v1 import inference_pb2 as pb
assert info.attention == pb.ATTENTION_KIND_MLA and info.kv_latent_rank > 0, info
print("ok: the coordinator serves the MLA group: %s" % str(info).replace("\n", "; "))
EOF_PY
check_greedy "$model" "$work/served-mla.out"

kill -TERM "$coord_pid"
for _ in $(seq 100); do kill -0 "$coord_pid" 2>/dev/null || break; sleep 0.1; done
wait "$coord_pid" || fail "the coordinator exited with $? on SIGTERM"
coord_pid=
echo "PASS"
