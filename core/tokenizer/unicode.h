// Internal to latte_tokenizer: UTF-8 walking, the code point classes the BPE pre-tokenizer regexes
// need (\p{L}, \p{N}, \s), GPT-2's byte <-> unicode table, and the pre-tokenizers written as
// hand-made scanners (std::regex has no \p{L}, and a regex engine is not worth a dependency).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace latte::unicode {

// Byte length of the UTF-8 sequence that starts with lead byte b, as llama.cpp and HF count it for
// valid text; a stray continuation byte or an invalid lead byte counts as 1.
size_t utf8_len(uint8_t lead);

// The code point at s[i] and its byte length. Invalid or truncated sequences decode to a
// code point that is none of letter/number/space (one byte long), so any byte string can be
// pre-tokenized and no byte is lost.
uint32_t decode_utf8(std::string_view s, size_t i, size_t* len);
void append_utf8(std::string& out, uint32_t cp);

bool is_letter(uint32_t cp);  // general category L*
bool is_number(uint32_t cp);  // general category N* (also what Rust's char::is_numeric tests)
bool is_space(uint32_t cp);   // the Unicode White_Space property (Oniguruma's \s)

// GPT-2's bytes_to_unicode: byte b -> the UTF-8 of the printable code point that stands for it.
const std::string& byte_to_unicode(uint8_t b);
// The inverse; returns -1 for a code point that stands for no byte.
int unicode_to_byte(uint32_t cp);

// A byte span [begin, begin + size) of the text handed to a pre-tokenizer.
struct Span {
  size_t begin;
  size_t size;
};

enum class PreTokenizer {
  gpt2,    // 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  smollm,  // Digits(individual_digits=true), then gpt2
  llama3,  // (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
           //  ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
};

// Splits text into the pieces the pre-tokenizer would give (they cover the text, in order).
std::vector<Span> pre_tokenize(PreTokenizer kind, std::string_view text);

}  // namespace latte::unicode
