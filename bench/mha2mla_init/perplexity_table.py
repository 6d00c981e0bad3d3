#!/usr/bin/env python3
"""Perplexity before fine-tuning of MLA conversions, one JSON line per row (issue 17).

For each row INIT:STRATEGY:R:D_KV[:ALPHA] (ALPHA: --pca-key-scale) it runs `latte convert` into a scratch folder, keeps the
report's per-layer means (SVD energy on the weights, energy kept on the calibration activations
for svd and pca), then `latte perplexity` on the first --eval-chars characters of --eval-text.
The row "original" scores the source model. STRATEGY "rorope" runs `--rope-mode rorope` with
R = --rope-dims (d_r, the dims of the one shared RoPE key) instead of a pair count. Calibration and evaluation texts are given
separately; keeping them disjoint is the caller's job (the README gives the commands used).

  perplexity_table.py --latte build/bin/latte --model M --eval-text F --eval-chars N \
      --calib C --calib-tokens T --out results.jsonl original pca:2norm:4:16 svd:2norm:4:16 ...
"""
import argparse
import json
import re
import subprocess
import sys
import tempfile
import time


def parse_report(text):
    out = {}
    m = re.search(r"KV cache elements/token\s+(\d+)\s+(\d+)", text)
    if m:
        before, after = int(m.group(1)), int(m.group(2))
        out["kv_elements_per_token"] = [before, after]
        out["kv_saved_percent"] = round(100.0 * (before - after) / before, 2)
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("RoRoPE: share of the keys' energy"):
            for l in lines[i:]:
                if l.strip().startswith("mean"):
                    out["rorope_key_energy_mean"] = float(l.split()[1])
                    break
        if line.startswith("SVD energy kept"):
            for l in lines[i:]:
                if l.strip().startswith("mean"):
                    out["svd_weight_energy_mean"] = float(l.split()[1])
                    break
        if line.startswith("Energy kept on the calibration activations"):
            for l in lines[i:]:
                f = l.split()
                if f and f[0] == "mean":
                    out["activation_energy_mean"] = {
                        "svd_keys": float(f[1]), "svd_values": float(f[2]), "pca_keys": float(f[3]),
                        "pca_values": float(f[4]), "pca_balanced": float(f[5]), "alpha": float(f[6])}
                    break
    return out


def perplexity(a, model):
    cmd = [a.latte, "perplexity", "-q", "--json", "--threads", str(a.threads), "--model", model, "--text",
           a.eval_text, "--max-chars", str(a.eval_chars)]
    r = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1]), " ".join(cmd)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--latte", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--eval-text", required=True)
    p.add_argument("--eval-chars", type=int, required=True)
    p.add_argument("--calib", required=True)
    p.add_argument("--calib-tokens", type=int, default=32768)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True, help="JSON lines, appended")
    p.add_argument("rows", nargs="+")
    a = p.parse_args()
    for row in a.rows:
        t0 = time.time()
        rec = {"model": a.model, "eval_text": a.eval_text, "eval_chars": a.eval_chars}
        if row == "original":
            ppl, cmd = perplexity(a, a.model)
            rec.update({"row": "original", "perplexity": ppl["perplexity"], "eval_tokens": ppl["tokens"],
                        "commands": [cmd]})
        else:
            init, strategy, r, d_kv, *alpha = row.split(":")
            with tempfile.TemporaryDirectory(prefix="latte_init_table_") as d:
                rope = (["--rope-mode", "rorope", "--rope-dims", r] if strategy == "rorope"
                        else ["--rope-strategy", strategy, "--rope-pairs", r])
                conv = [a.latte, "convert", "-q", "--threads", str(a.threads), "--model", a.model, "--out", d + "/mla",
                        "--init", init] + rope + ["--d-kv", d_kv, "--calib", a.calib, "--calib-tokens", str(a.calib_tokens)]
                if alpha:
                    conv += ["--pca-key-scale", alpha[0]]
                rep = subprocess.run(conv, capture_output=True, text=True)
                if rep.returncode != 0:
                    sys.exit(f"{' '.join(conv)} failed: {rep.stderr.strip()}")
                ppl, cmd = perplexity(a, d + "/mla")
            rope_key = "rope_dims" if strategy == "rorope" else "rope_pairs"
            rec.update({"row": row, "init": init, "strategy": strategy, rope_key: int(r), "d_kv": int(d_kv),
                        "pca_key_scale": float(alpha[0]) if alpha else None, "calib": a.calib, "calib_tokens": a.calib_tokens, "perplexity": ppl["perplexity"],
                        "eval_tokens": ppl["tokens"], "commands": [" ".join(conv), cmd]})
            rec.update(parse_report(rep.stdout))
        rec["seconds"] = round(time.time() - t0, 1)
        with open(a.out, "a") as f:
            f.write(json.dumps(rec) + "\n")
        print(json.dumps({k: rec[k] for k in ("row", "perplexity") if k in rec}), flush=True)


if __name__ == "__main__":
    main()
