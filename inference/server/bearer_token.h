// Bearer-token authentication of the serving API: a server started with a token answers only
// calls whose metadata carry `authorization: Bearer <token>`; others get UNAUTHENTICATED.
//
// The token is a shared secret, so it is compared in constant time (the time taken does not
// depend on how many leading bytes matched, which would let a client guess it byte by byte). Over a
// network it should travel inside TLS: without it anyone on the path can read it.
#pragma once
#include <grpcpp/grpcpp.h>

#include <string>
#include <string_view>

namespace latte::server {

// a == b, reading every byte of both whatever they hold (their lengths may still be learnt).
bool constant_time_equal(std::string_view a, std::string_view b);

// The token from the text of a token file: surrounding whitespace (a trailing newline) removed.
// Throws latte::Error naming `source` when nothing is left, or when the token holds whitespace
// or control characters (it could not be sent as one metadata value).
std::string token_from_file_text(const std::string& text, const std::string& source);

// OK when `expected` is empty (authentication off) or the call's metadata carry exactly
// "Bearer <expected>"; otherwise UNAUTHENTICATED with a message that says what is missing, never
// what the token is.
grpc::Status check_bearer_token(const grpc::ServerContext& context, const std::string& expected);

}  // namespace latte::server
