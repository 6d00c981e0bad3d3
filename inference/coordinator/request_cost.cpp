#include "inference/coordinator/request_cost.h"

#include <algorithm>

namespace latte::coordinator {

int64_t request_cost(const latte::v1::GenerateRequest& request, int default_max_new_tokens) {
  int64_t prompt = 0;
  if (request.has_token_ids())
    prompt = request.token_ids().ids_size();
  else
    prompt = (int64_t(request.text().size()) + 3) / 4;
  // 0 or less is the shard's INVALID_ARGUMENT; it still holds a slot until refused.
  const int64_t new_tokens =
      request.has_max_new_tokens() ? std::max<int64_t>(request.max_new_tokens(), 0) : default_max_new_tokens;
  return std::max<int64_t>(prompt, 1) + new_tokens;
}

}  // namespace latte::coordinator
