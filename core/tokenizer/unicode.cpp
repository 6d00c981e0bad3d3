#include "core/tokenizer/unicode.h"

#include <algorithm>
#include <array>

namespace latte::unicode {
namespace {

struct CodePointRange {
  uint32_t first, last;
};

// kLetterRanges, kNumberRanges: the full L* / N* categories rather than a few hand-picked script
// ranges, so that text in any script splits where Hugging Face's Oniguruma regex splits it.
#include "core/tokenizer/unicode_tables.inc"

template <size_t N>
bool in_ranges(const CodePointRange (&ranges)[N], uint32_t cp) {
  auto it = std::upper_bound(std::begin(ranges), std::end(ranges), cp,
                             [](uint32_t c, const CodePointRange& r) { return c < r.first; });
  return it != std::begin(ranges) && cp <= std::prev(it)->last;
}

// A value outside Unicode: what invalid UTF-8 decodes to, so it is punctuation-like ("other") for
// every scanner and each such byte still lands in some piece.
constexpr uint32_t kInvalid = 0xFFFFFFFFu;

enum Class : uint8_t { kLetter, kNumber, kSpace, kOther };

Class classify(uint32_t cp) {
  if (cp < 0x80) {
    if ((cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z')) return kLetter;
    if (cp >= '0' && cp <= '9') return kNumber;
    if (cp == ' ' || (cp >= 0x09 && cp <= 0x0D)) return kSpace;
    return kOther;
  }
  if (is_space(cp)) return kSpace;
  if (is_letter(cp)) return kLetter;
  if (is_number(cp)) return kNumber;
  return kOther;
}

// The text as code points with their byte offsets (off has one extra entry: the end).
struct Decoded {
  std::vector<uint32_t> cp;
  std::vector<Class> cls;
  std::vector<size_t> off;
};

Decoded decode_all(std::string_view text) {
  Decoded d;
  d.cp.reserve(text.size());
  d.cls.reserve(text.size());
  d.off.reserve(text.size() + 1);
  size_t i = 0;
  while (i < text.size()) {
    size_t len = 0;
    uint32_t c = decode_utf8(text, i, &len);
    d.cp.push_back(c);
    d.cls.push_back(classify(c));
    d.off.push_back(i);
    i += len;
  }
  d.off.push_back(text.size());
  return d;
}

using Ranges = std::vector<std::pair<size_t, size_t>>;  // [begin, end) in code point indices

bool is_ascii_letter_ci(uint32_t c, char lower) { return c == uint32_t(lower) || c == uint32_t(lower - 32); }

// Length of a run of code points of class k starting at i (i < hi).
size_t run(const Decoded& d, size_t i, size_t hi, Class k) {
  size_t j = i;
  while (j < hi && d.cls[j] == k) ++j;
  return j - i;
}

// \s+(?!\S)|\s+ at i (d.cls[i] == kSpace): the whole run at the end of the text, else the run less
// its last character so that the last space can start the next word; a lone space stays itself.
size_t whitespace_match(const Decoded& d, size_t i, size_t hi) {
  size_t k = run(d, i, hi, kSpace);
  if (i + k == hi || k == 1) return k;
  return k - 1;
}

// GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
void scan_gpt2(const Decoded& d, size_t lo, size_t hi, Ranges& out) {
  size_t i = lo;
  while (i < hi) {
    const uint32_t c = d.cp[i];
    size_t len = 0;
    if (c == '\'' && i + 1 < hi) {
      const uint32_t c1 = d.cp[i + 1];
      if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') {
        len = 2;
      } else if (i + 2 < hi) {
        const uint32_t c2 = d.cp[i + 2];
        if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) len = 3;
      }
    }
    if (len == 0) {
      // " ?X+": the optional space belongs to the word when a letter, digit or other follows.
      size_t j = i;
      if (c == ' ' && i + 1 < hi && d.cls[i + 1] != kSpace) j = i + 1;
      const Class k = d.cls[j];
      if (k != kSpace) {
        len = (j - i) + run(d, j, hi, k);
      } else {
        len = whitespace_match(d, i, hi);
      }
    }
    out.emplace_back(i, i + len);
    i += len;
  }
}

bool is_cr_lf(uint32_t c) { return c == '\r' || c == '\n'; }

// Llama 3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
//           ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
void scan_llama3(const Decoded& d, size_t lo, size_t hi, Ranges& out) {
  size_t i = lo;
  while (i < hi) {
    const uint32_t c = d.cp[i];
    const Class k = d.cls[i];
    size_t len = 0;
    if (c == '\'' && i + 1 < hi) {
      const uint32_t c1 = d.cp[i + 1];
      if (is_ascii_letter_ci(c1, 's') || is_ascii_letter_ci(c1, 't') || is_ascii_letter_ci(c1, 'm') ||
          is_ascii_letter_ci(c1, 'd')) {
        len = 2;
      } else if (i + 2 < hi) {
        const uint32_t c2 = d.cp[i + 2];
        if ((is_ascii_letter_ci(c1, 'r') && is_ascii_letter_ci(c2, 'e')) ||
            (is_ascii_letter_ci(c1, 'v') && is_ascii_letter_ci(c2, 'e')) ||
            (is_ascii_letter_ci(c1, 'l') && is_ascii_letter_ci(c2, 'l')))
          len = 3;
      }
    }
    if (len == 0) {
      if (k == kLetter) {
        len = run(d, i, hi, kLetter);
      } else if (k != kNumber && !is_cr_lf(c) && i + 1 < hi && d.cls[i + 1] == kLetter) {
        len = 1 + run(d, i + 1, hi, kLetter);  // one leading non-letter (a space, a quote) joins
      } else if (k == kNumber) {
        len = std::min<size_t>(3, run(d, i, hi, kNumber));
      } else {
        size_t j = (c == ' ' && i + 1 < hi) ? i + 1 : i;
        if (d.cls[j] == kOther) {
          j += run(d, j, hi, kOther);
          while (j < hi && is_cr_lf(d.cp[j])) ++j;
          len = j - i;
        } else if (k == kSpace) {
          // \s*[\r\n]+ backtracks to the last line break in the whitespace run.
          size_t n = run(d, i, hi, kSpace);
          size_t last_break = 0;
          for (size_t t = 0; t < n; ++t)
            if (is_cr_lf(d.cp[i + t])) last_break = t + 1;
          len = last_break > 0 ? last_break : whitespace_match(d, i, hi);
        } else {
          len = 1;  // unreachable for valid classes; keeps the scan moving
        }
      }
    }
    out.emplace_back(i, i + len);
    i += len;
  }
}

}  // namespace

size_t utf8_len(uint8_t lead) {
  static constexpr uint8_t kLen[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLen[lead >> 4];
}

uint32_t decode_utf8(std::string_view s, size_t i, size_t* len) {
  const uint8_t b0 = uint8_t(s[i]);
  *len = 1;
  if (b0 < 0x80) return b0;
  size_t n = 0;
  uint32_t cp = 0;
  if ((b0 & 0xE0) == 0xC0) {
    n = 2;
    cp = b0 & 0x1F;
  } else if ((b0 & 0xF0) == 0xE0) {
    n = 3;
    cp = b0 & 0x0F;
  } else if ((b0 & 0xF8) == 0xF0) {
    n = 4;
    cp = b0 & 0x07;
  } else {
    return kInvalid;
  }
  if (i + n > s.size()) return kInvalid;
  for (size_t k = 1; k < n; ++k) {
    const uint8_t b = uint8_t(s[i + k]);
    if ((b & 0xC0) != 0x80) return kInvalid;
    cp = (cp << 6) | (b & 0x3F);
  }
  *len = n;
  return cp;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

bool is_letter(uint32_t cp) { return in_ranges(kLetterRanges, cp); }
bool is_number(uint32_t cp) { return in_ranges(kNumberRanges, cp); }

bool is_space(uint32_t cp) {
  switch (cp) {
    case 0x09: case 0x0A: case 0x0B: case 0x0C: case 0x0D: case 0x20: case 0x85: case 0xA0:
    case 0x1680: case 0x2028: case 0x2029: case 0x202F: case 0x205F: case 0x3000:
      return true;
    default:
      return cp >= 0x2000 && cp <= 0x200A;
  }
}

namespace {

struct ByteTables {
  std::array<std::string, 256> to_unicode;
  std::array<int16_t, 512> from_unicode;  // every mapped code point is below 0x144
  ByteTables() {
    from_unicode.fill(-1);
    // Printable Latin-1 bytes stand for themselves; the rest are moved to 256, 257, ... in byte
    // order, so that every byte has a visible, non-space character (GPT-2's encoder.py).
    int next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      const uint32_t cp = printable ? uint32_t(b) : uint32_t(next++);
      append_utf8(to_unicode[b], cp);
      from_unicode[cp] = int16_t(b);
    }
  }
};

const ByteTables& byte_tables() {
  static const ByteTables tables;
  return tables;
}

}  // namespace

const std::string& byte_to_unicode(uint8_t b) { return byte_tables().to_unicode[b]; }

int unicode_to_byte(uint32_t cp) {
  if (cp >= byte_tables().from_unicode.size()) return -1;
  return byte_tables().from_unicode[cp];
}

std::vector<Span> pre_tokenize(PreTokenizer kind, std::string_view text) {
  const Decoded d = decode_all(text);
  const size_t n = d.cp.size();
  Ranges ranges;
  switch (kind) {
    case PreTokenizer::gpt2:
      scan_gpt2(d, 0, n, ranges);
      break;
    case PreTokenizer::llama3:
      scan_llama3(d, 0, n, ranges);
      break;
    case PreTokenizer::smollm: {
      // Digits(individual_digits=true) isolates every numeric character first; the GPT-2 regex
      // then runs on each piece on its own, so a space before a digit stays a separate piece.
      size_t start = 0;
      for (size_t i = 0; i <= n; ++i) {
        if (i == n || d.cls[i] == kNumber) {
          if (i > start) scan_gpt2(d, start, i, ranges);
          if (i < n) ranges.emplace_back(i, i + 1);
          start = i + 1;
        }
      }
      break;
    }
  }
  std::vector<Span> spans;
  spans.reserve(ranges.size());
  for (auto [b, e] : ranges) spans.push_back({d.off[b], d.off[e] - d.off[b]});
  return spans;
}

}  // namespace latte::unicode
