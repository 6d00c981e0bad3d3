#include "inference/coordinator/prefix_affinity.h"

#include <algorithm>

namespace latte::coordinator {
namespace {

constexpr uint64_t kFnvOffset = 1469598103934665603ull;
constexpr uint64_t kFnvPrime = 1099511628211ull;

uint64_t fnv1a(const void* data, size_t n, uint64_t h = kFnvOffset) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * kFnvPrime;
  return h;
}

// FNV alone mixes its last bytes poorly; the finalizer of splitmix64 spreads every input bit.
uint64_t mix(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace

std::optional<uint64_t> affinity_key(const latte::v1::GenerateRequest& request, int prefix_tokens) {
  if (prefix_tokens <= 0) return std::nullopt;
  const unsigned char chat = request.chat_template() ? 1 : 0;
  uint64_t h = fnv1a(&chat, 1);
  if (request.has_token_ids()) {
    const auto& ids = request.token_ids().ids();
    if (ids.empty()) return std::nullopt;
    const size_t n = std::min<size_t>(size_t(ids.size()), size_t(prefix_tokens));
    h = fnv1a(ids.data(), n * sizeof(int32_t), h ^ 't');
  } else {
    const std::string& text = request.text();
    if (text.empty()) return std::nullopt;
    h = fnv1a(text.data(), std::min<size_t>(text.size(), size_t(prefix_tokens) * 4), h ^ 's');
  }
  return mix(h);
}

uint64_t affinity_weight(uint64_t key, const std::string& group_address) {
  return mix(key ^ fnv1a(group_address.data(), group_address.size()));
}

}  // namespace latte::coordinator
