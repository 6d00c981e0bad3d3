// What a Generate request will cost a shard group, in tokens: the load measure routing balances.
#pragma once
#include <cstdint>

#include "latte/v1/inference.pb.h"

namespace latte::coordinator {

// Prompt tokens + the most tokens it may generate. A text prompt is counted as one token per 4
// bytes (the coordinator has no tokenizer; 4 is the usual English BPE ratio); a request without
// max_new_tokens is counted at default_max_new_tokens.
int64_t request_cost(const latte::v1::GenerateRequest& request, int default_max_new_tokens);

}  // namespace latte::coordinator
