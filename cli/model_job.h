// The model a scoring subcommand (perplexity, eval) runs: loaded on this rank's --device, and
// under `mpirun -np N ... --tp N` split over an N-rank tensor-parallel job (no data parallelism:
// every rank scores the same text).
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "inference/engine/loaded_model.h"
#include "parallel/job.h"

namespace latte::cli {

struct ModelJob {
  std::unique_ptr<ParallelJob> job;  // tp > 1 only; declared first: the model points into it
  LoadedModel model;
  bool lead = true;  // rank 0: the rank that prints
};

// `command` names the subcommand in the message refusing a world that is not exactly tp ranks.
ModelJob load_model_job(const std::string& command, int64_t tp, const std::string& device, ModelLoadRequest load);

}  // namespace latte::cli
