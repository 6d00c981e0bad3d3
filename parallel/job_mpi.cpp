// The job on MPI: ParallelRuntime owns the MPI state; the job hands its groups' communicators to
// the subcommand. Started without mpirun, MPI runs as a one-rank singleton.
#include "parallel/job.h"
#include "latte_build_config.h"

#if LATTE_HAVE_MPI
#include "parallel/runtime.h"

namespace latte {

namespace {
class MpiJob final : public ParallelJob {
 public:
  explicit MpiJob(const ParallelOptions& o) : rt_(o) {}
  Communicator& world() override { return rt_.world(); }
  Communicator& tp() override { return rt_.tp(); }
  Communicator& dp() override { return rt_.dp(); }
  double collective_timeout_s() const override { return rt_.collective_timeout_s(); }

 private:
  ParallelRuntime rt_;
};
}  // namespace

std::unique_ptr<ParallelJob> start_parallel_job(int64_t tp_size, bool verbose) {
  ParallelOptions o;
  o.tp_size = int(tp_size);
  o.announce = verbose;
  return std::make_unique<MpiJob>(o);
}

}  // namespace latte
#endif
