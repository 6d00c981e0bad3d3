// Loading a model for inference from what a user types: a llama2.c .bin, a safetensors folder or
// a GGUF file, plus a tokenizer (the --tokenizer flag, else the one the checkpoint carries, else
// a tokenizer.bin / tok<vocab>.bin beside a llama2.c file).
#pragma once
#include <memory>
#include <string>

#include "core/checkpoint/checkpoint.h"
#include "core/model/transformer.h"

namespace latte {

struct LoadedModel {
  Checkpoint checkpoint;
  std::unique_ptr<Tokenizer> tokenizer;  // null when none was found and none was required
  std::unique_ptr<Transformer> model;
};

struct ModelLoadRequest {
  std::string model_path;
  std::string tokenizer_path;  // empty: look for one
  // Where the model runs (cli/device_option.h resolves --device to it); null: the CPU backend.
  Backend* backend = nullptr;
  bool require_tokenizer = true;
  // Tensor parallelism: when set, every rank reads the checkpoint and keeps its shard
  // (model_tensors.h), and the model runs its collectives over this group.
  Communicator* tp = nullptr;
};

LoadedModel load_model(const ModelLoadRequest& req);

// A tokenizer.json / tokenizer.bin / tok<vocab>.bin beside a model file or inside a model folder;
// "" when there is none.
std::string find_tokenizer_beside(const std::string& model_path, int64_t vocab);

}  // namespace latte
