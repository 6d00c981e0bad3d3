#!/usr/bin/env bash
# latte perplexity --tp 2 under mpiexec -n 2 against the same command in one process without --tp,
# for the shipped stories260K and for an MLA conversion of it (latte convert --rope-strategy high
# --rope-pairs 1 --d-kv 4, made here). The perplexities must agree to 5 significant digits:
# |tp - single| <= half a unit of the 5th significant digit of the single-process value. (TP sums
# in another order than one process, a float32 rounding difference, about 1e-6 relative; a wrong
# shard or a missing all-reduce moves the perplexity by whole percent.)
#
#   perplexity_tp.sh LATTE MODELS_DIR MPIEXEC NP_FLAG [MPIEXEC FLAGS...]
# (CMake passes mpiexec, its -n flag and the flags of tests/mpi_model/CMakeLists.txt; "-n 2" is
# appended here.)
set -euo pipefail
latte=$1
models=$2
shift 2
mpiexec_cmd=("$1" "$2" 2)
shift 2
mpi_flags=("$@")

model=$models/stories260K/stories260K.bin
text=$models/stories260K/tinystories_valid_head.txt
work=$(mktemp -d "${TMPDIR:-/tmp}/latte_ppl_tp.XXXXXX")
trap 'rm -rf "$work"' EXIT

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

"$latte" convert --model "$model" --out "$work/mla" --rope-strategy high --rope-pairs 1 --d-kv 4 --quiet \
  >"$work/convert.txt" 2>"$work/convert.err" || { cat "$work/convert.err" >&2; fail "latte convert"; }

# The "perplexity" field of the one JSON line.
ppl_of() {
  python3 -c 'import json,sys; print(repr(json.loads(sys.stdin.read().strip().splitlines()[-1])["perplexity"]))'
}

check() {
  local name=$1 m=$2
  local single tp
  single=$("$latte" perplexity --model "$m" --text "$text" --max-chars 20000 --json --quiet \
    2>"$work/single.err") || { cat "$work/single.err" >&2; fail "$name: single-process perplexity"; }
  tp=$("${mpiexec_cmd[@]}" "${mpi_flags[@]}" "$latte" perplexity --tp 2 --model "$m" --text "$text" \
    --max-chars 20000 --json --quiet 2>"$work/tp.err") || { cat "$work/tp.err" >&2; fail "$name: perplexity --tp 2"; }
  local a b
  a=$(echo "$single" | ppl_of) || fail "$name: no JSON from the single-process run: $single"
  b=$(echo "$tp" | ppl_of) || fail "$name: no JSON from the --tp 2 run: $tp"
  python3 - "$name" "$a" "$b" <<'EOF' || fail "$name: perplexities differ (single $a, tp 2 $b)"
import math, sys
name, a, b = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
half_unit = 0.5 * 10 ** (math.floor(math.log10(abs(a))) - 4)  # half a unit of the 5th significant digit
diff = abs(a - b)
print(f"{name}: perplexity single {a:.6f}  tp 2 {b:.6f}  |diff| {diff:.2e}  (limit {half_unit:.1e}, "
      f"5 significant digits: {a:.5g} / {b:.5g})")
sys.exit(0 if diff <= half_unit and math.isfinite(a) and a > 1 else 1)
EOF
}

check stories260K "$model"
check stories260K-mla "$work/mla"
echo "PASS"
