// Damaged-file tests (issue 15): a file cut at every 4 KiB boundary, and the same file with one
// byte flipped at many seeded random offsets, must each either load or be refused with a one-line
// latte::Error; never a crash (which ends the test binary), an escaped foreign exception, or a
// hang (a load over kMaxLoadSeconds).
#pragma once
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "core/base/error.h"

namespace latte::testing {

// Loading stories260K takes milliseconds; seconds mean a loop that does not end.
constexpr double kMaxLoadSeconds = 10.0;

struct DamageCounts {
  int loaded = 0, refused = 0;
};

template <typename Load>
void expect_loads_or_one_line_error(const std::string& what, Load&& load, DamageCounts& counts) {
  const auto start = std::chrono::steady_clock::now();
  try {
    load();
    ++counts.loaded;
  } catch (const Error& e) {
    ++counts.refused;
    const std::string msg = e.what();
    EXPECT_NE(e.code(), ErrorCode::internal) << what << ": " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << what << ": message is not one line: " << msg;
  } catch (const std::exception& e) {
    ADD_FAILURE() << what << ": " << e.what() << " escaped instead of a latte::Error";
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(seconds, kMaxLoadSeconds) << what << " took " << seconds << " s";
}

// Cuts `path` (in place) at every multiple of 4096 below its size, longest first, and loads each.
template <typename Load>
DamageCounts check_truncations(const std::string& path, Load&& load) {
  DamageCounts counts;
  const uintmax_t size = std::filesystem::file_size(path);
  for (uintmax_t cut = (size - 1) / 4096 * 4096 + 4096; cut-- > 0;) {
    if (cut % 4096 != 0 || cut >= size) continue;
    std::filesystem::resize_file(path, cut);
    expect_loads_or_one_line_error(path + " cut at " + std::to_string(cut), load, counts);
  }
  return counts;
}

// Flips one byte (XOR with a random non-zero mask) at `n` offsets drawn with `seed`, loading the
// file after each flip and restoring the byte before the next.
template <typename Load>
DamageCounts check_byte_flips(const std::string& path, Load&& load, int n, uint32_t seed) {
  DamageCounts counts;
  const uintmax_t size = std::filesystem::file_size(path);
  std::mt19937_64 rng(seed);
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  for (int k = 0; k < n; ++k) {
    const uintmax_t at = rng() % size;
    const char mask = char(1 + rng() % 255);
    char byte;
    f.seekg(std::streamoff(at));
    f.get(byte);
    f.seekp(std::streamoff(at));
    f.put(char(byte ^ mask));
    f.flush();
    expect_loads_or_one_line_error(path + " with byte " + std::to_string(at) + " flipped", load, counts);
    f.seekp(std::streamoff(at));
    f.put(byte);
    f.flush();
  }
  return counts;
}

}  // namespace latte::testing
