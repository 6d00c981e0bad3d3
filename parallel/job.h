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
  // Seconds the collective watchdog lets one collective run before it ends the job (0: no
  // watchdog, as in a one-rank job). A rank that may wait idle in a collective for longer (a
  // serving follower between requests) must be pinged more often than this.
  virtual double collective_timeout_s() const = 0;
};

// Starts (or joins) the job with TP groups of tp_size ranks (DP = world / tp_size); a tp_size that
// does not divide the world is a one-line error. Prints one line per rank and the plan on rank 0
// when verbose.
std::unique_ptr<ParallelJob> start_parallel_job(int64_t tp_size, bool verbose);

}  // namespace latte
