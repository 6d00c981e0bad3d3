#!/usr/bin/env bash
# End to end: `latte shard` (under mpiexec for --tp 2) serves stories260K and its MLA conversion
# on 127.0.0.1; shard_client waits for health SERVING, checks ModelInfo, and sends a greedy
# Generate, whose streamed text must equal `latte generate --temperature 0` for the same prompt
# and length; then SIGINT to rank 0 (its pid is on the shard's stderr) must stop the whole job
# cleanly: exit code 0 within 30 s and "latte shard: stopped" on stderr. Under TP the collective
# watchdog is set to 5 s and the first shard sits idle for 12 s before its first request: the
# followers wait in a collective all that time, so the job survives only if rank 0 pings them.
# Last, under TP, a follower killed (SIGKILL) while requests run must not leave rank 0 or its
# clients hanging: the job ends within 30 s and the clients get an error.
#
#   shard_e2e.sh LATTE SHARD_CLIENT MODELS_DIR TP [MPIEXEC NP_FLAG [MPIEXEC FLAGS...]]
# (TP 1 runs the shard as a plain process; TP > 1 needs the mpiexec arguments.)
set -euo pipefail
latte=$1
client=$2
models=$3
tp=$4
shift 4
launcher=()
idle_s=0
if [ "$tp" -gt 1 ]; then
  launcher=("$1" "$2" "$tp")
  shift 2
  launcher+=("$@")
  export LATTE_COLLECTIVE_TIMEOUT_S=5
  idle_s=12
fi

model=$models/stories260K/stories260K.bin
tok=$models/stories260K/tok512.bin
prompt="Once upon a time"
max_new=60
work=$(mktemp -d "${TMPDIR:-/tmp}/latte_shard_e2e.XXXXXX")
shard_pid=
cleanup() {
  if [ -n "$shard_pid" ] && kill -0 "$shard_pid" 2>/dev/null; then kill -KILL "$shard_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  for f in "$work"/*.out "$work"/*.err; do [ -s "$f" ] && { echo "--- $f" >&2; cat "$f" >&2; }; done
  exit 1
}

# Waits (at most $2 seconds) for the ready line in $1; prints the address.
wait_ready() {
  local out=$1 limit=$2 line
  for ((i = 0; i < limit * 10; i++)); do
    line=$(grep -E "^latte shard: serving .* on .* \(tp $tp\)$" "$out" 2>/dev/null || true)
    if [ -n "$line" ]; then
      echo "$line" | sed -E 's/^latte shard: serving .* on (.*) \(tp [0-9]+\)$/\1/'
      return 0
    fi
    kill -0 "$shard_pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# Waits (at most $1 seconds) for the shard to exit; sets shard_rc.
wait_exit() {
  local limit=$1
  for ((i = 0; i < limit * 10; i++)); do
    if ! kill -0 "$shard_pid" 2>/dev/null; then
      set +e
      wait "$shard_pid"
      shard_rc=$?
      set -e
      return 0
    fi
    sleep 0.1
  done
  return 1
}

check() {
  local name=$1 m=$2 attention=$3
  local out=$work/$name.shard.out err=$work/$name.shard.err
  "${launcher[@]}" "$latte" shard --tp "$tp" --model "$m" --tokenizer "$tok" --listen 127.0.0.1:0 --cache-gib 0.02 \
    --threads 1 >"$out" 2>"$err" &
  shard_pid=$!
  local addr
  addr=$(wait_ready "$out" 120) || fail "$name: no ready line from latte shard within 120 s"
  local health
  health=$("$client" "$addr" health) || fail "$name: health check"
  [ "$health" = "SERVING" ] || fail "$name: health says $health"
  if [ "$idle_s" -gt 0 ]; then
    sleep "$idle_s"
    idle_s=0
    kill -0 "$shard_pid" 2>/dev/null || fail "$name: the shard died while idle (watchdog: were the followers pinged?)"
  fi
  local info
  info=$("$client" "$addr" info) || fail "$name: ModelInfo"
  [ "$info" = "model $(basename "$m") tp $tp attention $attention" ] || fail "$name: ModelInfo says '$info'"

  local summary
  summary=$("$client" "$addr" generate "$prompt" "$max_new" "$work/$name.served.txt") || fail "$name: Generate"
  local prompt_tokens
  prompt_tokens=$(echo "$summary" | awk '{print $2}')
  # latte generate -n counts positions, prompt included; its last one samples token max_new.
  "$latte" generate --model "$m" --tokenizer "$tok" --prompt "$prompt" --temperature 0 \
    --steps $((prompt_tokens + max_new - 1)) --threads 1 >"$work/$name.generate.out" 2>"$work/$name.generate.err" ||
    fail "$name: latte generate"
  { printf '%s' "$prompt"; cat "$work/$name.served.txt"; printf '\n'; } >"$work/$name.want.txt"
  cmp -s "$work/$name.want.txt" "$work/$name.generate.out" ||
    fail "$name: served text differs from latte generate:
served:   $(cat "$work/$name.served.txt")
generate: $(cat "$work/$name.generate.out")"
  echo "$name: tp $tp, served $summary; text equals latte generate ($(wc -c <"$work/$name.served.txt") bytes)"

  local rank0
  rank0=$(sed -nE 's/^latte shard: pid ([0-9]+);.*/\1/p' "$err")
  [ -n "$rank0" ] || fail "$name: no pid line on the shard's stderr"
  local t0=$SECONDS
  kill -INT "$rank0"
  wait_exit 30 || fail "$name: the shard did not exit within 30 s of SIGINT"
  [ "$shard_rc" -eq 0 ] || fail "$name: the shard exited with $shard_rc after SIGINT"
  grep -q "^latte shard: stopped$" "$err" || fail "$name: no 'stopped' line"
  echo "$name: SIGINT to rank 0: exit 0 in $((SECONDS - t0)) s"
  shard_pid=
}

"$latte" convert --model "$model" --out "$work/stories260K-mla" --rope-strategy high --rope-pairs 1 --d-kv 4 --quiet \
  >"$work/convert.out" 2>"$work/convert.err" || fail "latte convert"

follower_dies() {
  local out=$work/dies.shard.out err=$work/dies.shard.err
  "${launcher[@]}" "$latte" shard --tp "$tp" --model "$model" --tokenizer "$tok" --listen 127.0.0.1:0 \
    --cache-gib 0.02 --threads 1 >"$out" 2>"$err" &
  shard_pid=$!
  local addr
  addr=$(wait_ready "$out" 120) || fail "dies: no ready line from latte shard within 120 s"
  local rank0 rank1
  rank0=$(sed -nE 's/^latte shard: pid ([0-9]+);.*/\1/p' "$err")
  rank1=$(pgrep -P "$shard_pid" | grep -vx "$rank0" | head -1)
  [ -n "$rank1" ] || fail "dies: no second rank under mpiexec (pid $shard_pid)"
  local clients=()
  for i in 1 2 3; do
    "$client" "$addr" generate "$prompt" 400 "$work/dies$i.txt" >"$work/dies$i.client.out" 2>&1 &
    clients+=($!)
  done
  sleep 0.3
  local t0=$SECONDS
  kill -KILL "$rank1"
  wait_exit 30 || fail "dies: the job still runs 30 s after its follower was killed"
  [ "$shard_rc" -ne 0 ] || fail "dies: the job exited 0 although a follower was killed"
  shard_pid=
  for c in "${clients[@]}"; do
    set +e
    wait "$c"
    local rc=$?
    set -e
    # 0 is possible: a request may have finished before the kill.
    [ "$rc" -le 1 ] || fail "dies: a client ended with $rc"
  done
  echo "follower killed: the job ended in $((SECONDS - t0)) s (exit $shard_rc); clients returned"
}

check stories260K "$model" ATTENTION_KIND_LLAMA
check stories260K-mla "$work/stories260K-mla" ATTENTION_KIND_MLA
if [ "$tp" -gt 1 ]; then follower_dies; fi
echo "PASS"
