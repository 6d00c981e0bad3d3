#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (tests/fuzz/*_fuzz.cpp) into OUT/<target>/.

Seeds are the repository's real small files where they are small enough to mutate quickly
(tokenizers, stories260K's tokenizer) and, for the binary checkpoint formats, tiny files of the
same layout made here, so that every structure (all GGUF value types, quantized blocks, tied and
untied llama2.c classifiers, the three safetensors dtypes) is in the corpus from the first
execution. The 1 MB stories260K.bin is not a seed: each mutation of it would cost a full parse.

usage: make_seeds.py OUT
"""
import json
import os
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write(out, target, name, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def f32s(n, value=0.5):
    return struct.pack(f"<{n}f", *([value] * n))


def llama2c(dim, hidden, layers, heads, kv_heads, vocab, seq, tied):
    head = dim // heads
    kv = kv_heads * head
    n = vocab * dim + layers * dim + layers * dim * dim + 2 * layers * kv * dim + layers * dim * dim
    n += layers * dim + 3 * layers * hidden * dim + dim + 2 * seq * (head // 2)
    if not tied:
        n += vocab * dim
    return struct.pack("<7i", dim, hidden, layers, heads, kv_heads, vocab if tied else -vocab, seq) + f32s(n)


def safetensors(tensors, pad_to=8):
    header, data = {}, b""
    for name, dtype, shape, elem in tensors:
        count = 1
        for d in shape:
            count *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + count * elem]}
        data += bytes((i * 37) & 0x3F for i in range(count * elem))
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header).encode()
    h += b" " * ((-len(h)) % pad_to)
    return struct.pack("<Q", len(h)) + h + data


class Gguf:
    U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
    FMT = {U8: "B", I8: "b", U16: "H", I16: "h", U32: "I", I32: "i", F32: "f", BOOL: "B", U64: "Q", I64: "q", F64: "d"}

    def __init__(self):
        self.kv, self.n_kv, self.tensors = b"", 0, []

    @staticmethod
    def s(text):
        b = text.encode()
        return struct.pack("<Q", len(b)) + b

    def value(self, key, vtype, v):
        payload = self.s(v) if vtype == self.STRING else struct.pack("<" + self.FMT[vtype], v)
        self.kv += self.s(key) + struct.pack("<I", vtype) + payload
        self.n_kv += 1

    def array(self, key, etype, values):
        p = struct.pack("<IQ", etype, len(values))
        for v in values:
            p += self.s(v) if etype == self.STRING else struct.pack("<" + self.FMT[etype], v)
        self.kv += self.s(key) + struct.pack("<I", self.ARRAY) + p
        self.n_kv += 1

    def tensor(self, name, ne, ttype, data):
        self.tensors.append((name, ne, ttype, data))

    def bytes(self, alignment=32):
        b = struct.pack("<IIQQ", 0x46554747, 3, len(self.tensors), self.n_kv) + self.kv
        data = b""
        for name, ne, ttype, payload in self.tensors:
            data += b"\0" * ((-len(data)) % alignment)
            b += self.s(name) + struct.pack("<I", len(ne)) + struct.pack(f"<{len(ne)}Q", *ne)
            b += struct.pack("<IQ", ttype, len(data))
            data += payload
        b += b"\0" * ((-len(b)) % alignment)
        return b + data


def gguf_tiny(with_tokenizer):
    """dim 32, hidden 32, 1 layer, 2 heads of 16, 1 KV head, vocab 8: one tensor of each type."""
    g = Gguf()
    g.value("general.architecture", g.STRING, "llama")
    g.value("llama.block_count", g.U32, 1)
    g.value("llama.context_length", g.U64, 16)
    g.value("llama.embedding_length", g.I32, 32)
    g.value("llama.feed_forward_length", g.U32, 32)
    g.value("llama.attention.head_count", g.U16, 2)
    g.value("llama.attention.head_count_kv", g.U8, 1)
    g.value("llama.rope.freq_base", g.F32, 10000.0)
    g.value("llama.attention.layer_norm_rms_epsilon", g.F64, 1e-5)
    g.value("test.i8", g.I8, -3)
    g.value("test.i16", g.I16, -300)
    g.value("test.i64", g.I64, -5)
    g.value("test.bool", g.BOOL, 1)
    nested = struct.pack("<IQ", g.ARRAY, 2) + 2 * (struct.pack("<IQ", g.U16, 2) + struct.pack("<2H", 1, 2))
    g.kv += g.s("test.nested") + struct.pack("<I", g.ARRAY) + nested
    g.n_kv += 1
    if with_tokenizer:
        g.value("tokenizer.ggml.model", g.STRING, "gpt2")
        g.value("tokenizer.ggml.pre", g.STRING, "smollm")
        g.array("tokenizer.ggml.tokens", g.STRING, ["<unk>", "<s>", "</s>", "a", "b", "ab", "\u0120", "\u0120a"])
        g.array("tokenizer.ggml.token_type", g.I32, [2, 3, 3, 1, 1, 1, 1, 1])
        g.array("tokenizer.ggml.scores", g.F32, [0.0] * 8)
        g.array("tokenizer.ggml.merges", g.STRING, ["a b", "\u0120 a"])
        g.value("tokenizer.ggml.bos_token_id", g.U32, 1)
        g.value("tokenizer.ggml.eos_token_id", g.U32, 2)
        g.value("tokenizer.ggml.unknown_token_id", g.U32, 0)
        g.value("tokenizer.ggml.add_bos_token", g.BOOL, 1)
    else:
        g.value("llama.vocab_size", g.U32, 8)
    q8 = struct.pack("<H", 0x3400) + bytes(range(32))                     # Q8_0: f16 d, 32 x int8
    q4_0 = struct.pack("<H", 0x3800) + bytes(range(16))                   # Q4_0: f16 d, 16 nibble pairs
    q4_1 = struct.pack("<HH", 0x3800, 0xBC00) + bytes(range(16))          # Q4_1: f16 d, f16 m, nibbles
    g.tensor("token_embd.weight", [32, 8], 8, q8 * 8)
    g.tensor("blk.0.attn_norm.weight", [32], 0, f32s(32, 1.0))
    g.tensor("blk.0.attn_q.weight", [32, 32], 2, q4_0 * 32)
    g.tensor("blk.0.attn_k.weight", [32, 16], 3, q4_1 * 16)
    g.tensor("blk.0.attn_v.weight", [32, 16], 1, struct.pack("<H", 0x3E00) * 512)  # F16 1.5
    g.tensor("blk.0.attn_output.weight", [32, 32], 30, struct.pack("<H", 0x3FC0) * 1024)  # BF16 1.5
    g.tensor("blk.0.ffn_norm.weight", [32], 0, f32s(32, 0.5))
    g.tensor("blk.0.ffn_gate.weight", [32, 32], 8, q8 * 32)
    g.tensor("blk.0.ffn_up.weight", [32, 32], 3, q4_1 * 32)
    g.tensor("blk.0.ffn_down.weight", [32, 32], 0, f32s(1024, 0.125))
    g.tensor("output_norm.weight", [32], 0, f32s(32, 2.0))
    if not with_tokenizer:
        g.tensor("output.weight", [32, 8], 2, q4_0 * 8)
    return g.bytes()


def hf_names(layers, tied):
    names = ["model.embed_tokens.weight", "model.norm.weight"] + ([] if tied else ["lm_head.weight"])
    for i in range(layers):
        for s in ["input_layernorm", "post_attention_layernorm"]:
            names.append(f"model.layers.{i}.{s}.weight")
        for s in ["q_proj", "k_proj", "v_proj", "o_proj"]:
            names.append(f"model.layers.{i}.self_attn.{s}.weight")
        for s in ["gate_proj", "up_proj", "down_proj"]:
            names.append(f"model.layers.{i}.mlp.{s}.weight")
    return names


def token_shard(ids, width, vocab, tokenizer_id):
    h = b"LATTETOK" + struct.pack("<IIQQ", 1, width, vocab, len(ids)) + tokenizer_id.encode().ljust(32, b"\0")
    return h + struct.pack(f"<{len(ids)}{'H' if width == 2 else 'I'}", *ids)


LLAMA_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 172,
    "num_hidden_layers": 5, "num_attention_heads": 8, "num_key_value_heads": 4, "vocab_size": 512,
    "max_position_embeddings": 512, "rope_theta": 10000.0, "rms_norm_eps": 1e-05, "tie_word_embeddings": True,
    "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu", "torch_dtype": "float32",
    "latte_rope_layout": "interleaved",
}
MLA_CONFIG = dict(LLAMA_CONFIG, model_type="latte_mla", num_hidden_layers=1, mla_rope_pairs=2,
                  mla_kv_rank_per_head=4, kv_lora_rank=16, mla_rope_freqs=[[[0, 1], [0, 2], [1, 3], [2, 3]]],
                  mla_provenance={"method": "seed"})


def varint(v):
    v &= (1 << 64) - 1  # negative int32/int64 values go on the wire as 10-byte two's complement
    b = bytearray()
    while True:
        byte, v = v & 0x7F, v >> 7
        b.append(byte | (0x80 if v else 0))
        if not v:
            return bytes(b)


def pb_field(number, wire_type, payload):
    """One protobuf field: key, then a varint (type 0), 4 bytes (type 5) or length + bytes (type 2)."""
    key = varint(number << 3 | wire_type)
    if wire_type == 0:
        return key + varint(payload)
    if wire_type == 5:
        return key + struct.pack("<f", payload)
    return key + varint(len(payload)) + payload


def generate_request(text=None, ids=None, max_new=None, temperature=None, top_k=None, top_p=None, seed=None,
                     stop=(), chat=False, ignore_eos=False):
    """A latte.v1.GenerateRequest (proto/latte/v1/inference.proto), encoded by hand."""
    m = pb_field(1, 2, b"seed-request")
    if text is not None:
        m += pb_field(2, 2, text)
    if ids is not None:
        m += pb_field(3, 2, pb_field(1, 2, b"".join(varint(i) for i in ids)))  # TokenIds, packed
    if max_new is not None:
        m += pb_field(4, 0, max_new)
    sampling = b""
    if temperature is not None:
        sampling += pb_field(1, 5, temperature)
    if top_k is not None:
        sampling += pb_field(2, 0, top_k)
    if top_p is not None:
        sampling += pb_field(3, 5, top_p)
    if sampling:
        m += pb_field(5, 2, sampling)
    if seed is not None:
        m += pb_field(6, 0, seed)
    for st in stop:
        m += pb_field(7, 2, st)
    if chat:
        m += pb_field(8, 0, 1)
    if ignore_eos:
        m += pb_field(9, 0, 1)
    return m


def main(out):
    write(out, "llama2c_checkpoint_fuzz", "tied.bin", llama2c(8, 16, 1, 2, 1, 16, 4, True))
    write(out, "llama2c_checkpoint_fuzz", "untied_gqa.bin", llama2c(16, 24, 2, 4, 2, 12, 2, False))
    write(out, "llama2c_checkpoint_fuzz", "stories260K_header.bin",
          open(os.path.join(ROOT, "models/stories260K/stories260K.bin"), "rb").read(28))

    write(out, "safetensors_fuzz", "three_dtypes.safetensors",
          safetensors([("a", "F32", [2, 3], 4), ("b", "BF16", [4], 2), ("c", "F16", [1, 2, 2], 2)]))
    write(out, "safetensors_fuzz", "unaligned.safetensors", safetensors([("w", "F32", [3], 4)], pad_to=1))
    write(out, "safetensors_fuzz", "empty.safetensors", safetensors([]))

    names = hf_names(5, True)  # stories260K, as safetensors_index_fuzz lays it out
    write(out, "safetensors_index_fuzz", "all.json",
          json.dumps({"metadata": {"total_size": 1056512}, "weight_map": {n: n + ".safetensors" for n in names}}))
    write(out, "safetensors_index_fuzz", "half.json",
          json.dumps({"weight_map": {n: n + ".safetensors" for n in names[: len(names) // 2]}}))

    write(out, "config_json_fuzz", "llama.json", json.dumps(LLAMA_CONFIG, indent=2))
    write(out, "config_json_fuzz", "mla.json", json.dumps(MLA_CONFIG, indent=2))

    write(out, "gguf_fuzz", "tiny_tokenizer.gguf", gguf_tiny(True))
    write(out, "gguf_fuzz", "tiny_untied.gguf", gguf_tiny(False))

    tok_dir = os.path.join(ROOT, "tests/data/tokenizers")
    for f in sorted(os.listdir(tok_dir)):
        if f.endswith(".json") and not f.endswith(".golden.json"):
            write(out, "tokenizer_json_fuzz", f, open(os.path.join(tok_dir, f), "rb").read())
    write(out, "tokenizer_bin_fuzz", "tok512.bin", open(os.path.join(ROOT, "models/stories260K/tok512.bin"), "rb").read())

    texts = [b"Once upon a time, there was a little girl named Lily.",
             b"First Citizen:\nBefore we proceed any further, hear me speak.",
             "naïve café — 日本語 🙂 <|endoftext|> <s> </s>".encode(),
             b"\xff\xfe invalid \xc3\x28 utf-8 \xe2\x82", b"   12345 6789  \t\n\n  x"]
    for k, t in enumerate(texts):
        for which in range(6):
            write(out, "tokenizer_encode_fuzz", f"text{k}_tok{which}", bytes([which + 128 * (k % 2)]) + t)

    write(out, "token_shard_fuzz", "u16.bin", token_shard([1, 5, 511, 2], 2, 512, "llama2c:512"))
    write(out, "token_shard_fuzz", "u32.bin", token_shard([70000, 1], 4, 100000, "bpe-bytelevel:100000"))

    write(out, "grpc_request_fuzz", "text.pb", generate_request(text=b"Once upon a time", max_new=16))
    write(out, "grpc_request_fuzz", "ids.pb", generate_request(ids=[1, 403, 407, 261, 378], max_new=8, seed=7,
                                                               temperature=0.8, top_k=40, top_p=0.9))
    write(out, "grpc_request_fuzz", "stop_chat.pb", generate_request(text=b"Lily", stop=[b".", b"\n"], chat=True,
                                                                     ignore_eos=True))
    write(out, "grpc_request_fuzz", "bad_values.pb", generate_request(ids=[-1, 600], max_new=-5, temperature=-1.0))

    state = {"step": 20, "seed": 1234, "layout": {"tp_size": 2, "dp_size": 1, "zero1": False},
             "config": LLAMA_CONFIG, "data": {"path": "data/shard.bin", "tokens": 4096},
             "optimizer": {"steps": 20, "total": 260000}, "metrics": {"step": 20, "loss": 3.5}}
    write(out, "train_state_fuzz", "state.json", json.dumps(state, indent=2))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
