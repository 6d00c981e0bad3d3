// The limits that keep one client from taking a server down, each enforced where it is cheapest:
// the message size by gRPC before the request is even parsed, prompt and output lengths on the
// handler's thread before the engine sees the request, the request count at admission.
#pragma once
#include <cstdint>

namespace latte::server {

struct ServerLimits {
  // Largest request message gRPC accepts (it answers RESOURCE_EXHAUSTED beyond).
  int64_t max_message_bytes = 4 << 20;
  // Most prompt tokens a request may have (after encoding); 0: the model's context length.
  int64_t max_prompt_tokens = 0;
  // Most tokens a request may ask to generate; 0: the model's context length.
  int64_t max_new_tokens = 0;
  // What a request that leaves max_new_tokens unset gets (capped by max_new_tokens).
  int64_t default_max_new_tokens = 256;
  // Requests held at once, waiting or running; one more gets RESOURCE_EXHAUSTED.
  int64_t max_queued_requests = 256;
};

}  // namespace latte::server
