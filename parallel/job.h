// The process's place in a TP x DP job for the subcommands that run under mpirun (train,
// perplexity --tp). Without MPI in the build, or started without mpirun, it is a one-rank job.
#pragma once
#include <cstdint>
#include <memory>

#include "core/comm/communicator.h"

namespace latte {

class ParallelJob {
 public:
  virtual ~ParallelJob() = default;
  virtual Communicator& world() = 0;
  virtual Communicator& tp() = 0;
  virtual Communicator& dp() = 0;
};

// Starts (or joins) the job with TP groups of tp_size ranks (DP = world / tp_size); a tp_size that
// does not divide the world is a one-line error. Prints one line per rank and the plan on rank 0
// when verbose.
std::unique_ptr<ParallelJob> start_parallel_job(int64_t tp_size, bool verbose);

}  // namespace latte
