// Protocol Buffers string fields must hold valid UTF-8 (a proto3 parser rejects the whole message
// otherwise), while a model can emit any bytes: a byte-fallback token on its own, a character cut
// by a stop string. Everything the server puts into a string field goes through here first.
#pragma once
#include <string>
#include <string_view>

namespace latte::server {

// s with every byte that does not belong to a well-formed UTF-8 character (stray continuation
// bytes, truncated or overlong sequences, surrogates, code points above U+10FFFF) replaced by
// U+FFFD, the Unicode replacement character. Valid input comes back unchanged.
std::string to_valid_utf8(std::string_view s);

}  // namespace latte::server
