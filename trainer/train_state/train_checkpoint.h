// Training checkpoints: everything a run needs to continue exactly where it stopped.
//
//   OUT/checkpoints/step-00000100/
//     model-tp0.safetensors ...      this TP rank's f32 master weights (written by DP rank 0)
//     optim-tp0-dp0.safetensors ...  AdamW moments of the rank's range (every DP rank with ZeRO-1,
//                                    DP rank 0 otherwise)
//     state.json                     step, seed, layout, model config, data shard, optimizer meta
//   OUT/checkpoints/latest           the name of the newest complete checkpoint
//
// Atomicity: every rank writes into step-N.partial/ (each file itself temp + rename), all ranks
// meet at a barrier, then rank 0 writes state.json and renames the folder to step-N and rewrites
// `latest`. A run killed at any moment leaves either the previous complete checkpoint or the new
// one; a stale .partial folder is ignored and replaced.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include "core/comm/communicator.h"
#include "core/model/config.h"
#include "core/tensor/tensor_store.h"
#include "trainer/optim/adamw.h"

namespace latte {

struct TrainLayout {
  int64_t tp_rank = 0, tp_size = 1, dp_rank = 0, dp_size = 1;
  bool zero1 = false;
};

struct CheckpointState {
  int64_t step = 0;  // steps completed
  uint64_t seed = 0;
  TrainLayout layout;
  ModelConfig config;
  std::string data_path;
  int64_t data_tokens = 0;
  AdamW::Meta optim;
  std::string metrics_json;  // last logged metrics line, for the record
};

// Writes the checkpoint of `state.step` (collective over world: every rank calls it).
void save_train_checkpoint(const std::string& out_dir, const CheckpointState& state, const TensorStore& model_shard,
                           const TensorStore& optim_state, Communicator& world);

// The newest complete checkpoint under out_dir, if any.
std::optional<std::string> latest_checkpoint(const std::string& out_dir);

// Reads state.json as save_train_checkpoint writes it (layout ranks are left at 0; data_path is the
// shard the checkpoint trained on). Invalid JSON, a missing field or one of the wrong type is a
// bad_file error naming `source`.
CheckpointState parse_train_state_json(const std::string& text, const std::string& source);

struct LoadedTrainState {
  CheckpointState state;
  TensorStore model_shard, optim_state;
};
// Loads this rank's part; refuses (bad_file, one line) a checkpoint of another model, layout or
// data shard, naming what differs.
LoadedTrainState load_train_checkpoint(const std::string& dir, const TrainLayout& layout, const ModelConfig& config,
                                       const std::string& data_path, int64_t data_tokens);

}  // namespace latte
