// The server's small parts on their own: UTF-8 repair, the bearer token, the throughput window.
#include <gtest/gtest.h>

#include "core/base/error.h"
#include "inference/server/bearer_token.h"
#include "inference/server/throughput_window.h"
#include "inference/server/utf8.h"

namespace latte::server {
namespace {

TEST(Utf8, ValidTextIsUnchangedAndBadBytesBecomeReplacementCharacters) {
  const std::string fffd = "\xEF\xBF\xBD";
  EXPECT_EQ(to_valid_utf8("plain ascii"), "plain ascii");
  EXPECT_EQ(to_valid_utf8("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80"), "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80");
  EXPECT_EQ(to_valid_utf8("a\x80" "b"), "a" + fffd + "b");             // stray continuation byte
  EXPECT_EQ(to_valid_utf8("a\xE2\x82"), "a" + fffd + fffd);            // truncated 3-byte character
  EXPECT_EQ(to_valid_utf8("\xC0\xAF"), fffd + fffd);                   // overlong '/'
  EXPECT_EQ(to_valid_utf8("\xED\xA0\x80"), fffd + fffd + fffd);        // a surrogate
  EXPECT_EQ(to_valid_utf8("\xF4\x90\x80\x80"), fffd + fffd + fffd + fffd);  // above U+10FFFF
  EXPECT_EQ(to_valid_utf8("\xF0"), fffd);
  EXPECT_EQ(to_valid_utf8(""), "");
}

TEST(BearerToken, ConstantTimeEqualIsEquality) {
  EXPECT_TRUE(constant_time_equal("abc", "abc"));
  EXPECT_TRUE(constant_time_equal("", ""));
  EXPECT_FALSE(constant_time_equal("abc", "abd"));
  EXPECT_FALSE(constant_time_equal("abc", "ab"));
  EXPECT_FALSE(constant_time_equal("ab", "abc"));
  EXPECT_FALSE(constant_time_equal("abc", ""));
  EXPECT_FALSE(constant_time_equal(std::string("a\0c", 3), "a"));
}

TEST(BearerToken, TokenFileText) {
  EXPECT_EQ(token_from_file_text("  s3cret\n", "t.txt"), "s3cret");
  EXPECT_EQ(token_from_file_text("s3cret", "t.txt"), "s3cret");
  try {
    token_from_file_text(" \n\t", "t.txt");
    ADD_FAILURE() << "an empty token file was accepted";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "auth token file t.txt is empty");
  }
  EXPECT_THROW(token_from_file_text("two words\n", "t.txt"), Error);
  EXPECT_THROW(token_from_file_text("line1\nline2", "t.txt"), Error);
}

TEST(ThroughputWindow, RatesOverTheLastSecondsAndDecayWhenIdle) {
  using std::chrono::milliseconds;
  const ThroughputClock::time_point t0{};
  ThroughputWindow w(std::chrono::seconds(5));
  EXPECT_EQ(w.rates(t0).generated_tokens_per_s, 0);
  w.record(t0, 0, 0);
  EXPECT_EQ(w.rates(t0 + milliseconds(500)).generated_tokens_per_s, 0);  // one record: no rate yet
  w.record(t0 + milliseconds(1000), 200, 50);
  w.record(t0 + milliseconds(2000), 200, 150);
  // 2 s since the first record, shorter than the window.
  TokenRates r = w.rates(t0 + milliseconds(2000));
  EXPECT_DOUBLE_EQ(r.prompt_tokens_per_s, 100);
  EXPECT_DOUBLE_EQ(r.generated_tokens_per_s, 75);
  // Idle until t = 6 s: the window (1, 6] holds the +100 generated of t = 2 s only.
  r = w.rates(t0 + milliseconds(6000));
  EXPECT_DOUBLE_EQ(r.prompt_tokens_per_s, 0);
  EXPECT_DOUBLE_EQ(r.generated_tokens_per_s, 100.0 / 5);
  // Long idle: nothing within the window.
  r = w.rates(t0 + milliseconds(60000));
  EXPECT_EQ(r.prompt_tokens_per_s, 0);
  EXPECT_EQ(r.generated_tokens_per_s, 0);
  // Busy again; old samples were trimmed but the base still gives the right difference.
  for (int i = 61; i <= 70; ++i) w.record(t0 + milliseconds(1000 * i), 200, 150 + 30 * (i - 60));
  r = w.rates(t0 + milliseconds(70000));
  EXPECT_DOUBLE_EQ(r.generated_tokens_per_s, 30);
}

}  // namespace
}  // namespace latte::server
