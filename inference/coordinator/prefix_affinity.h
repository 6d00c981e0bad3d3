// Prefix affinity: requests that share a prompt prefix prefer the same shard group, whose prefix
// cache then already holds that prefix's KV blocks. Rendezvous hashing picks the group, so a group
// going down moves only its own prefixes and a group coming back gets them back.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include "latte/v1/inference.pb.h"

namespace latte::coordinator {

// A hash of the first prefix_tokens prompt tokens (text: the first 4 * prefix_tokens bytes) and of
// the chat_template flag, which changes the encoded prefix. Shorter prompts hash whole.
// nullopt when affinity is off (prefix_tokens 0) or the prompt is empty.
std::optional<uint64_t> affinity_key(const latte::v1::GenerateRequest& request, int prefix_tokens);

// The rendezvous weight of a group for a key: the group with the highest weight is preferred.
uint64_t affinity_weight(uint64_t key, const std::string& group_address);

}  // namespace latte::coordinator
