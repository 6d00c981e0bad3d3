// The ModelInfo answer: what a client (or a coordinator placing requests on shards) needs to know
// about the served model, from its configuration, its tokenizer and the engine's cache.
#pragma once
#include <string>

#include "core/model/config.h"
#include "core/tokenizer/tokenizer.h"
#include "inference/engine/engine.h"
#include "latte/v1/inference.pb.h"

namespace latte::server {

// KV cache bytes one token takes over all layers and all `tp_size` ranks, in the cache's dtype
// (MLA's latent is replicated on every rank, so it counts tp_size times).
int64_t kv_bytes_per_token(const ModelConfig& config, DType cache_dtype, int tp_size);

// tokenizer may be null (then bos/eos come from the configuration). tp_size: ranks of the group.
v1::ModelInfoResponse describe_model(const std::string& name, const ModelConfig& config, const Tokenizer* tokenizer,
                                     const Engine& engine, int tp_size);

}  // namespace latte::server
