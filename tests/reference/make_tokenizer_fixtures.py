#!/usr/bin/env python3
"""Regenerates the tokenizer test fixtures in tests/data/tokenizers/ and the code point tables in
core/tokenizer/unicode_tables.inc.

The fixtures are real Hugging Face tokenizer.json files trained with the `tokenizers` package on
tinyshakespeare (public domain), plus golden files holding the ids that `tokenizers` itself gives
for a fixed list of texts. Latte's C++ tokenizers must reproduce those ids exactly. `tokenizers` is
a fixture generator only; Latte does not depend on it at run time.

    pip install tokenizers          # fixtures were generated with the version in GOLDEN["tokenizers_version"]
    python3 tests/reference/make_tokenizer_fixtures.py                  # fixtures
    python3 tests/reference/make_tokenizer_fixtures.py --unicode-table  # core/tokenizer/unicode_tables.inc
    python3 tests/reference/make_tokenizer_fixtures.py --runc-expected  # tok512 ids pasted in the llama2.c tests

Training is deterministic for a given `tokenizers` version; another version may train different
merges, which is fine: the golden ids are regenerated together with the tokenizer.json they belong to.
"""
import argparse
import json
import os
import random
import sys
import unicodedata

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CORPUS = os.path.join(ROOT, "tests", "data", "corpus", "tinyshakespeare.txt")
VALID_HEAD = os.path.join(ROOT, "models", "stories260K", "tinystories_valid_head.txt")
OUT_DIR = os.path.join(ROOT, "tests", "data", "tokenizers")
TABLE_PATH = os.path.join(ROOT, "core", "tokenizer", "unicode_tables.inc")

# The Llama 3 pre-tokenizer regex, as in Meta's tokenizer.json.
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def golden_texts():
    """About 50 texts: corpus lines, contractions, digits, non-ASCII scripts, emoji, odd whitespace
    and special tokens in the middle of text."""
    with open(CORPUS, encoding="utf-8") as f:
        shakespeare = f.read().split("\n")
    texts = [
        "",
        " ",
        "  ",
        "\n",
        "a",
        "Hello world",
        " Hello world",
        "Hello  world  ",
        "   leading spaces",
        "trailing spaces   ",
        "a\n\nb\n\n\nc",
        "  \n  x \t y\t\tz",
        "tabs\tand\r\nCRLF\r\nlines\r\n",
        "I'm sure they'll say we're done; he's 'tis o'er. DON'T YOU'LL I'D we've",
        "''s ' s 'S 'Ll",
        "In 1999, 3.14159 and 1,000,000 and 12345678 or 007.",
        "x2 + y^2 = 42; 10% of $3.50 is $0.35 #hashtag @user",
        "Ünïcödé: café, naïve, façade, Straße, Œuvre, ÀÉÎÕÜ",
        "Ελληνικά: Καλημέρα κόσμε",
        "Русский: Привет, мир! Ёжик.",
        "中文：你好，世界。汉字测试",
        "日本語のテキスト、カタカナとひらがな。",
        "한국어 텍스트입니다",
        "العربية: مرحبا بالعالم",
        "emoji 😀🎉👍🏽 family 👨‍👩‍👧 flag 🇫🇷 done",
        "nbsp\u00a0here\u3000ideographic\u2003em space",
        "combining e\u0301 and arabic digits \u0663\u0664, superscript \u00b2, half \u00bd, roman \u216b",
        "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n",
        "text<|endoftext|>more text",
        "<s>Hello</s>",
        "Hello<s> world</s> again",
        "<unk> token and <0x41> literal",
        "Lily said, \u00e2\u20ac\u0153Thank you!\u00e2\u20ac\u009d and smiled.",
        "Once upon a time, there was a little girl named Lily. She loved to play outside in the park.",
        "One day, a little girl named Lily found a needle in her room.",
        "--- ... !!! ??? ,,, ;;; ((()))",
        "\u00a0",
        "a" * 40,
        " " * 9 + "nine spaces",
    ]
    # Lines from the training text itself, so that long merges are exercised.
    for i in (0, 1, 2, 3, 8, 40, 100, 1234, 5000, 20000):
        texts.append(shakespeare[i])
    texts.append("\n".join(shakespeare[200:210]))
    # A stretch of TinyStories with its mojibake (out of domain for these vocabularies).
    with open(VALID_HEAD, encoding="utf-8") as f:
        stories = f.read()
    start = stories.index("\u00e2\u20ac")  # the first mojibake
    texts.append(stories[start - 2000:start + 2000])
    # Random mixtures of the character classes the pre-tokenizer regexes distinguish, so that the
    # hand-written scanners are compared with the regex engine on odd neighbours.
    rng = random.Random(20240527)
    pool = ["a", "Z", "\u00e9", "\u00df", "\u0416", "\u0436", "\u03c9", "\u4e2d", "\u30a2", "\ud55c", "0", "7",
            "\u0663", "\u00bd", "\u216b", "\u00b2", "'", "'", "'", "s", "t", "re", "ve", "ll", "d", "m", "S",
            "T", "RE", "LL", "\n", "\r", "\t", " ", " ", " ", " ", "!", "?", ".", ",", "-", "(", "\"", "#",
            "\U0001F600", "\U0001F44D\U0001F3FD", "\u0301", "\u00a0", "\u3000", "\u2003", "\u200b",
            "\u2581", "\u0120", "123", "4567", "  ", "\n\n", " \n", "\r\n"]
    for _ in range(20):
        texts.append("".join(rng.choice(pool) for _ in range(40)))
    return texts


def write_golden(path, obj):
    # One case per line: small, and diffs stay readable.
    with open(path, "w", encoding="utf-8") as f:
        f.write('{"tokenizers_version": %s,\n "cases": [\n' % json.dumps(obj["tokenizers_version"]))
        f.write(",\n".join(json.dumps(c, ensure_ascii=False, separators=(",", ":")) for c in obj["cases"]))
        f.write("\n]}\n")


def goldens(tok, texts):
    import tokenizers
    cases = []
    for t in texts:
        plain = tok.encode(t, add_special_tokens=False).ids
        special = tok.encode(t, add_special_tokens=True).ids
        cases.append({"text": t, "ids": plain, "ids_with_special": special,
                      "decoded": tok.decode(plain, skip_special_tokens=False)})
    return {"tokenizers_version": tokenizers.__version__, "cases": cases}


def train_byte_level(pre, vocab_size, specials, ignore_merges=False):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train([CORPUS], trainer)
    return tok


def make_fixtures():
    import tokenizers
    from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, normalizers,
                            pre_tokenizers, processors, trainers)
    os.makedirs(OUT_DIR, exist_ok=True)
    texts = golden_texts()
    chat_specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

    def save(name, tok):
        path = os.path.join(OUT_DIR, name + ".json")
        tok.save(path, pretty=False)
        write_golden(os.path.join(OUT_DIR, name + ".golden.json"), goldens(tok, texts))
        print(f"{name}: vocab {tok.get_vocab_size()}, {os.path.getsize(path)} bytes")

    # (a) GPT-2 style byte-level BPE.
    tok = train_byte_level(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True), 600,
                           chat_specials)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    save("bytelevel_gpt2", tok)

    # (a') SmolLM2's pre-tokenizer: every digit alone, then the GPT-2 regex.
    tok = train_byte_level(pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]), 600, chat_specials)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    save("bytelevel_smollm", tok)

    # (a'') Llama 3's: a Split on the Llama 3 regex, ByteLevel without its own regex,
    # ignore_merges, and a template that adds <|begin_of_text|>.
    tok = train_byte_level(pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]), 600,
        ["<|begin_of_text|>", "<|end_of_text|>"], ignore_merges=True)
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(
            single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
            special_tokens=[("<|begin_of_text|>", tok.token_to_id("<|begin_of_text|>"))])])
    save("bytelevel_llama3", tok)

    # (b) SentencePiece-style BPE laid out like Llama 2's tokenizer.json: <unk> <s> </s>, then the
    # 256 byte-fallback tokens <0x00>..<0xFF>, then the learned pieces. Trained per "▁word" with
    # Metaspace, then given Llama 2's normalizer (Prepend + Replace) and decoder.
    trainer_tok = Tokenizer(models.BPE())
    trainer_tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always",
                                                         split=True)
    trainer = trainers.BpeTrainer(vocab_size=560, min_frequency=2, special_tokens=[],
                                  show_progress=False)
    trainer_tok.train([CORPUS], trainer)
    learned = json.loads(trainer_tok.to_str())["model"]
    by_id = sorted(learned["vocab"].items(), key=lambda kv: kv[1])
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for piece, _ in by_id:
        if piece not in vocab:
            vocab[piece] = len(vocab)
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in learned["merges"]]

    def spm_tokenizer(metaspace_first):
        tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True,
                                   fuse_unk=True))
        tok.add_special_tokens([AddedToken(t, normalized=False, special=True)
                                for t in ("<unk>", "<s>", "</s>")])
        if metaspace_first:
            # Newer Llama/Mistral files (legacy=false): the prefix only at the very start.
            tok.normalizer = None
            tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first",
                                                         split=False)
        else:
            tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"),
                                                   normalizers.Replace(" ", "▁")])
            tok.pre_tokenizer = None
        tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                         decoders.Fuse(), decoders.Strip(" ", 1, 0)])
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
        return tok

    save("spm_llama", spm_tokenizer(False))
    save("spm_metaspace", spm_tokenizer(True))
    print("tokenizers", tokenizers.__version__)


# The texts whose llama2.c ids tests/unit/tokenizer/llama2c_tokenizer_test.cpp pastes.
RUNC_TEXTS = [
    "Lily",
    "the cat",
    "Once upon a time, there was a little girl named Lily.",
    'Spot. Spot saw the shiny car and said, "Wow, Kitty, your car is so bright and clean!"',
    "",
    "Hello, world! 123",
    "caf\u00e9 \U0001F600 na\u00efve",
    "First Citizen:\nBefore we proceed any further, hear me speak.",
]


def runc_encode(path, text, bos=True):
    """llama2.c run.c encode(), transliterated (quadratic merge loop and all), independent of Latte."""
    import struct
    data = open(path, "rb").read()
    off, vocab, scores = 4, [], []
    while off < len(data):
        score, length = struct.unpack_from("<fi", data, off)
        off += 8
        vocab.append(data[off:off + length])
        scores.append(score)
        off += length
    lookup = {p: i for i, p in enumerate(vocab)}
    raw = text.encode("utf-8")
    tokens = [1] if bos else []
    if raw:
        tokens.append(lookup[b" "])
    buf = b""
    for i, c in enumerate(raw):
        if (c & 0xC0) != 0x80:
            buf = b""
        buf += bytes([c])
        nxt = raw[i + 1] if i + 1 < len(raw) else 0
        if (nxt & 0xC0) == 0x80 and len(buf) < 4:
            continue
        if buf in lookup:
            tokens.append(lookup[buf])
        else:
            tokens.extend(b + 3 for b in buf)
        buf = b""
    while True:
        best, best_id, best_idx = -1e10, -1, -1
        for i in range(len(tokens) - 1):
            cat = vocab[tokens[i]] + vocab[tokens[i + 1]]
            if cat in lookup and scores[lookup[cat]] > best:
                best, best_id, best_idx = scores[lookup[cat]], lookup[cat], i
        if best_idx == -1:
            break
        tokens[best_idx] = best_id
        del tokens[best_idx + 1]
    return tokens


def print_runc_expected():
    path = os.path.join(ROOT, "models", "stories260K", "tok512.bin")
    for t in RUNC_TEXTS:
        print(json.dumps(t, ensure_ascii=False), runc_encode(path, t))


def ranges(pred):
    out, start = [], None
    for cp in range(0x110000):
        ok = pred(cp)
        if ok and start is None:
            start = cp
        elif not ok and start is not None:
            out.append((start, cp - 1))
            start = None
    if start is not None:
        out.append((start, 0x10FFFF))
    return out


def make_unicode_table():
    def emit(name, rs):
        lines = [f"static constexpr CodePointRange {name}[] = {{"]
        row = ""
        for a, b in rs:
            item = f"{{0x{a:X}, 0x{b:X}}}, "
            if len(row) + len(item) > 98:
                lines.append("    " + row.rstrip())
                row = ""
            row += item
        if row:
            lines.append("    " + row.rstrip())
        lines.append("};")
        return "\n".join(lines)

    letters = ranges(lambda c: unicodedata.category(chr(c)).startswith("L"))
    numbers = ranges(lambda c: unicodedata.category(chr(c)).startswith("N"))
    text = (f"// Generated by tests/reference/make_tokenizer_fixtures.py --unicode-table from Python's\n"
            f"// unicodedata (Unicode {unicodedata.unidata_version}): the code point ranges of the\n"
            f"// general categories L* (\\p{{L}}) and N* (\\p{{N}}). Do not edit by hand.\n"
            + emit("kLetterRanges", letters) + "\n" + emit("kNumberRanges", numbers) + "\n")
    with open(TABLE_PATH, "w") as f:
        f.write(text)
    print(f"{TABLE_PATH}: {len(letters)} letter ranges, {len(numbers)} number ranges")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--unicode-table", action="store_true",
                    help="write core/tokenizer/unicode_tables.inc instead of the fixtures")
    ap.add_argument("--runc-expected", action="store_true",
                    help="print run.c's tok512 ids for the texts the llama2.c tests check")
    args = ap.parse_args()
    if args.unicode_table:
        make_unicode_table()
    elif args.runc_expected:
        print_runc_expected()
    else:
        make_fixtures()


if __name__ == "__main__":
    sys.exit(main())
