// The fine-tuning loop `latte train` runs on every rank of a TP x DP job:
//   for each step: for each micro-batch: forward + backward (TP collectives inside the model);
//   AdamW.reduce_and_clip (DP mean, global norm over TP and DP, clip); AdamW.step (warm-up +
//   cosine learning rate); every eval_every steps the held-out loss; every save_every steps (and
//   at the end) an atomic checkpoint; rank 0 prints a progress line and appends JSONL metrics.
// A NaN/Inf loss or gradient norm stops the run before the update, leaving the last checkpoint.
#pragma once
#include <cstdint>
#include <string>

#include "core/comm/communicator.h"
#include "trainer/optim/adamw.h"

namespace latte {

class Backend;

struct TrainOptions {
  std::string model_path;      // llama2.c .bin, safetensors folder (e.g. a latte convert output) or .gguf
  std::string data_path;       // token shard from latte tokenize
  std::string out_dir;         // checkpoints/, metrics.jsonl, final/
  std::string tokenizer_path;  // only to copy beside the final model; the shard records its id
  Backend* backend = nullptr;  // where the student and teacher run (latte train --device); null: the CPU
  int64_t steps = 100;
  int64_t micro_batch = 4;     // sequences per micro-batch per DP rank
  int64_t grad_accum = 1;      // micro-batches per step
  int64_t seq = 256;           // tokens per sequence (<= the model's context)
  double lr = 3e-4, min_lr = 3e-5;
  int64_t warmup = 10;
  AdamWSettings optim;
  uint64_t seed = 1234;
  int64_t val_tokens = 0;      // held out at the end of the shard; 0: min(10 %, 32768)
  int64_t eval_every = 50;     // 0: only at the end
  int64_t eval_batches = 8;    // 0: the whole held-out split
  int64_t save_every = 50;     // 0: only at the end
  bool resume = false;
  bool train_attention_only = false;  // MHA2MLA's cheaper variant: only self_attn.* tensors learn
  bool recompute = false;      // activation recomputation per layer (Transformer::set_recompute)
  std::string teacher_path;    // optional: distil from the original model's logits
  double distill_weight = 0.0; // loss = CE + distill_weight * KL(teacher || student)
  bool progress = true;        // rank 0 progress line on stderr
  int64_t stop_after = 0;      // testing aid: return after this many steps of this run (0: off)
  int64_t max_memory = 0;      // bytes per rank (latte train --max-memory); 0: no limit. A run whose
                               // planned total (trainer/planner) exceeds it is refused before loading
};

struct TrainResult {
  int64_t steps_done = 0;
  double final_loss = 0, final_val_loss = 0;
};

// tp and dp are this rank's groups; world spans both (for checkpoint barriers).
TrainResult train(const TrainOptions& o, Communicator& world, Communicator& tp, Communicator& dp);

}  // namespace latte
