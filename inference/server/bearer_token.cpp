#include "inference/server/bearer_token.h"

#include <algorithm>

#include "core/base/error.h"

namespace latte::server {

bool constant_time_equal(std::string_view a, std::string_view b) {
  // Walk the longer of the two so that the loop's length does not depend on which one is shorter.
  const size_t n = std::max(a.size(), b.size());
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= static_cast<unsigned char>(x ^ y);
  }
  return diff == 0;
}

std::string token_from_file_text(const std::string& text, const std::string& source) {
  const auto is_space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
  size_t begin = 0, end = text.size();
  while (begin < end && is_space(text[begin])) ++begin;
  while (end > begin && is_space(text[end - 1])) --end;
  const std::string token = text.substr(begin, end - begin);
  LATTE_REQUIRE(!token.empty(), ErrorCode::invalid_argument, "auth token file ", source, " is empty");
  for (char c : token)
    LATTE_REQUIRE(static_cast<unsigned char>(c) > 0x20 && c != 0x7F, ErrorCode::invalid_argument,
                  "auth token file ", source, " holds whitespace or control characters inside the token ",
                  "(one line, printable characters only)");
  return token;
}

grpc::Status check_bearer_token(const grpc::ServerContext& context, const std::string& expected) {
  if (expected.empty()) return grpc::Status::OK;
  const auto& metadata = context.client_metadata();
  const auto it = metadata.find("authorization");
  if (it == metadata.end())
    return {grpc::StatusCode::UNAUTHENTICATED,
            "this server requires a bearer token: send metadata \"authorization: Bearer <token>\""};
  const std::string_view value(it->second.data(), it->second.size());
  constexpr std::string_view kScheme = "Bearer ";
  if (value.substr(0, kScheme.size()) != kScheme)
    return {grpc::StatusCode::UNAUTHENTICATED, "the authorization metadata is not of the form \"Bearer <token>\""};
  if (!constant_time_equal(value.substr(kScheme.size()), expected))
    return {grpc::StatusCode::UNAUTHENTICATED, "the bearer token is not valid"};
  return grpc::Status::OK;
}

}  // namespace latte::server
