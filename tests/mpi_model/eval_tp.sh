#!/usr/bin/env bash
# latte eval --tp 2 under mpiexec -n 2 against the same command in one process, for the shipped
# stories260K and an MLA conversion of it (made here): every choice's log-likelihood in --details
# must agree to 1e-4 nats (TP sums in another order, a float32 rounding difference of about 1e-6
# per token; a wrong shard or a missing all-reduce moves a sum by whole nats), and so the picks.
#
#   eval_tp.sh LATTE MODELS_DIR MPIEXEC NP_FLAG [MPIEXEC FLAGS...]
set -euo pipefail
latte=$1
models=$2
shift 2
mpiexec_cmd=("$1" "$2" 2)
shift 2
mpi_flags=("$@")

model=$models/stories260K/stories260K.bin
work=$(mktemp -d "${TMPDIR:-/tmp}/latte_eval_tp.XXXXXX")
trap 'rm -rf "$work"' EXIT

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

cat >"$work/set.jsonl" <<'JSONL'
{"context": "Lily went to the park. She saw a big", "choices": ["dog", "ocean of purple fractions"], "gold": 0}
{"context": "Tom was sad. His mom gave him a", "choices": ["hug", "hug and a cookie", "xylophone"], "gold": 1}
{"context": "Once upon a time", "choices": ["there was a girl", "qzx"], "gold": 1}
JSONL

"$latte" convert --model "$model" --out "$work/mla" --rope-strategy high --rope-pairs 1 --d-kv 4 --quiet \
  >"$work/convert.txt" 2>"$work/convert.err" || { cat "$work/convert.err" >&2; fail "latte convert"; }

check() {
  local name=$1 m=$2
  "$latte" eval --model "$m" --jsonl "$work/set.jsonl" --quiet --details "$work/single.jsonl" >/dev/null \
    2>"$work/single.err" || { cat "$work/single.err" >&2; fail "$name: single-process eval"; }
  "${mpiexec_cmd[@]}" "${mpi_flags[@]}" "$latte" eval --tp 2 --model "$m" --jsonl "$work/set.jsonl" --quiet \
    --details "$work/tp.jsonl" >/dev/null 2>"$work/tp.err" || { cat "$work/tp.err" >&2; fail "$name: eval --tp 2"; }
  python3 - "$name" "$work/single.jsonl" "$work/tp.jsonl" <<'PY' || fail "$name: log-likelihoods differ"
import json, sys
name, a_path, b_path = sys.argv[1:]
a = [json.loads(l) for l in open(a_path)]
b = [json.loads(l) for l in open(b_path)]
assert len(a) == len(b) == 3, (len(a), len(b))
worst = 0.0
for x, y in zip(a, b):
    assert x["pick"] == y["pick"] and x["pick_norm"] == y["pick_norm"], (x, y)
    for p, q in zip(x["log_likelihood"], y["log_likelihood"], strict=True):
        worst = max(worst, abs(p - q))
print(f"{name}: largest |single - tp 2| log-likelihood difference {worst:.2e} nats (limit 1e-4)")
sys.exit(0 if worst <= 1e-4 else 1)
PY
}

check stories260K "$model"
check stories260K-mla "$work/mla"
echo "PASS"
