#!/usr/bin/env bash
# latte train under mpiexec refuses a layout it cannot run before it loads the model: every rank
# exits non-zero, within seconds (no rank is left waiting in a collective), the output names the
# problem, and --out is not created.
#   --tp 3 at np 3: stories260K's 8 heads do not split over 3 ranks;
#   --tp 2 --max-memory 1MiB at np 2: the f32 plan (4.08 MiB per rank at TP 2) is over the limit;
#   --tp 1 --zero1 --max-memory 1MiB at np 2: DP 2, the message names the layout the same way.
#
#   train_refusals.sh LATTE MODELS_DIR MPIEXEC NP_FLAG [MPIEXEC FLAGS...]
set -euo pipefail
latte=$1
models=$2
mpiexec=$3
np_flag=$4
shift 4
mpi_flags=("$@")

work=$(mktemp -d "${TMPDIR:-/tmp}/latte_train_refusals.XXXXXX")
trap 'rm -rf "$work"' EXIT

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

"$latte" tokenize --tokenizer "$models/stories260K/tok512.bin" "$models/stories260K/tinystories_valid_head.txt" \
  -o "$work/data.bin" >/dev/null 2>"$work/tokenize.err" || { cat "$work/tokenize.err" >&2; fail "latte tokenize"; }

n=0
# expect_refusal NP REGEX [train flags...]: the job fails within 60 s, its output matches REGEX
# (grep -E) and its --out folder does not exist.
expect_refusal() {
  local np=$1 regex=$2
  shift 2
  n=$((n + 1))
  local out=$work/out$n log=$work/log$n rc=0
  local start=$SECONDS
  timeout 120 "$mpiexec" "$np_flag" "$np" "${mpi_flags[@]}" "$latte" train --model "$models/stories260K/stories260K.bin" \
    --data "$work/data.bin" --out "$out" --steps 2 --micro-batch 2 --seq 64 --threads 1 -q "$@" >"$log" 2>&1 || rc=$?
  local took=$((SECONDS - start))
  cat "$log"
  echo "---- np $np $*: exit code $rc after $took s"
  [ "$rc" -ne 0 ] || fail "np $np $*: the job exited 0"
  [ "$rc" -ne 124 ] || fail "np $np $*: the job hung (killed after 120 s)"
  [ "$took" -le 60 ] || fail "np $np $*: took $took s"
  grep -Eq -- "$regex" "$log" || fail "np $np $*: output does not match /$regex/"
  [ ! -e "$out" ] || fail "np $np $*: the refused run created $out"
}

expect_refusal 3 'cannot train .*stories260K\.bin: --tp 3 does not divide n_heads \(8\)' --tp 3
expect_refusal 2 'exceeds --max-memory 1\.00 MiB \(1,048,576 bytes\) for TP 2, DP 1, --zero1 off, --recompute off, --micro-batch 2, --seq 64' \
  --tp 2 --max-memory 1MiB
expect_refusal 2 'for TP 1, DP 2, --zero1 on, --recompute off, --micro-batch 2, --seq 64 .*; try ' \
  --tp 1 --zero1 --max-memory 1MiB
echo "PASS"
