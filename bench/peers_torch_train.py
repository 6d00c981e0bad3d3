#!/usr/bin/env python3
"""PyTorch eager training-step rate of a Llama decoder with a config.json's exact shapes (bench/peers).

A minimal Llama (token embedding, RMSNorm, RoPE, GQA attention, SwiGLU MLP, tied output head) in
f32 with random weights (normal, std 0.02): the timing depends only on the shapes, not on the
values. One step is forward + cross-entropy + backward over random tokens, with no optimizer update,
which is what bench/train_step times on Latte's side. Prints one JSON line with tokens/s.

  python3 bench/peers_torch_train.py --config models/smollm2-135m-hf/config.json [--batch 4] [--seq 256]
"""
import argparse
import json
import math
import time

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(seq, head_dim, theta):
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    freqs = torch.outer(torch.arange(seq, dtype=torch.float32), inv)  # [T, hd/2]
    emb = torch.cat([freqs, freqs], dim=-1)  # HF layout: rotate the two halves
    return emb.cos(), emb.sin()


def rotate_half(x):
    a, b = x.chunk(2, dim=-1)
    return torch.cat([-b, a], dim=-1)


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, hd = c["hidden_size"], c["head_dim"]
        self.nh, self.nkv, self.hd = c["num_attention_heads"], c["num_key_value_heads"], hd
        self.attn_norm = RMSNorm(d, c["rms_norm_eps"])
        self.wq = nn.Linear(d, self.nh * hd, bias=False)
        self.wk = nn.Linear(d, self.nkv * hd, bias=False)
        self.wv = nn.Linear(d, self.nkv * hd, bias=False)
        self.wo = nn.Linear(self.nh * hd, d, bias=False)
        self.mlp_norm = RMSNorm(d, c["rms_norm_eps"])
        self.w_gate = nn.Linear(d, c["intermediate_size"], bias=False)
        self.w_up = nn.Linear(d, c["intermediate_size"], bias=False)
        self.w_down = nn.Linear(c["intermediate_size"], d, bias=False)

    def forward(self, x, cos, sin, mask):
        B, T, _ = x.shape
        h = self.attn_norm(x)
        q = self.wq(h).view(B, T, self.nh, self.hd).transpose(1, 2)  # [B, H, T, hd]
        k = self.wk(h).view(B, T, self.nkv, self.hd).transpose(1, 2)
        v = self.wv(h).view(B, T, self.nkv, self.hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = self.nh // self.nkv  # GQA: each KV head serves `rep` query heads
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.hd)) + mask
        o = (att.softmax(-1) @ v).transpose(1, 2).reshape(B, T, self.nh * self.hd)
        x = x + self.wo(o)
        h = self.mlp_norm(x)
        return x + self.w_down(F.silu(self.w_gate(h)) * self.w_up(h))


class Llama(nn.Module):
    def __init__(self, c):
        super().__init__()
        assert c.get("tie_word_embeddings", False), "this model ties the output head to the embedding"
        self.c = c
        self.embed = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = nn.ModuleList(Block(c) for _ in range(c["num_hidden_layers"]))
        self.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, tokens, targets):
        B, T = tokens.shape
        cos, sin = rope_tables(T, self.c["head_dim"], self.c.get("rope_theta", 10000.0))
        mask = torch.full((T, T), float("-inf")).triu(1)
        x = self.embed(tokens)
        for layer in self.layers:
            x = layer(x, cos, sin, mask)
        logits = F.linear(self.norm(x), self.embed.weight)  # tied head
        return F.cross_entropy(logits.view(B * T, -1), targets.view(B * T))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, help="HF config.json of a Llama model")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    with open(a.config) as f:
        c = json.load(f)
    c.setdefault("head_dim", c["hidden_size"] // c["num_attention_heads"])
    model = Llama(c)
    params = sum(p.numel() for p in model.parameters())
    tokens = torch.randint(0, c["vocab_size"], (a.batch, a.seq))
    targets = torch.randint(0, c["vocab_size"], (a.batch, a.seq))

    def step():
        model.zero_grad(set_to_none=True)
        model(tokens, targets).backward()

    step()  # warm-up: allocator, first-touch pages
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    s = time.perf_counter() - t0
    print(json.dumps({"bench": "torch_train_step", "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "batch": a.batch, "seq": a.seq, "steps": a.steps, "params": params, "optimizer": False,
                      "tokens_per_s": round(a.batch * a.seq * a.steps / s, 1)}))


if __name__ == "__main__":
    main()
