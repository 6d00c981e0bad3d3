// Random-weight checkpoints with the exact shapes of a real model (Llama-2-7B, 13B, 70B, ...), so
// that the paths that matter at scale (streaming conversion, sharded loading, TP memory) can run
// without downloading anything. Written tensor by tensor (safetensors_stream_writer.h): memory is
// one tensor, whatever the model's size.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

#include "core/model/config.h"
#include "core/tensor/tensor.h"

namespace latte {

struct RandomModelOptions {
  uint64_t seed = 0;
  DType dtype = DType::bf16;
  size_t max_shard_bytes = 0;  // 0: one model.safetensors
  float init_std = 0.02f;      // matrices: uniform with this standard deviation; norms: 1
  // Called after each tensor: (tensors done, tensors in all, bytes done, bytes in all).
  std::function<void(size_t, size_t, uint64_t, uint64_t)> progress;
};

// The values of tensor `name` depend only on (seed, name, shape), not on the order tensors are
// made in or on the number of threads: a 2-layer slice of a model has the same first layers as the
// whole model.
Tensor random_model_tensor(const std::string& name, const Shape& shape, const RandomModelOptions& o);

// Writes config.json, the weights (sharded when max_shard_bytes > 0) and a tokenizer.bin with
// config.vocab_size pieces (synthetic_tokenizer below) into dir.
void write_random_model(const std::string& dir, const ModelConfig& config, const RandomModelOptions& o);

// A llama2.c tokenizer.bin of vocab_size pieces for models without a real vocabulary: <unk>,
// <s>, </s>, the 256 byte pieces <0x00>..<0xFF> (so any text encodes, byte by byte), then filler
// pieces " w<id>" that no merge produces.
void write_synthetic_llama2c_tokenizer(const std::string& path, int64_t vocab_size);

}  // namespace latte
