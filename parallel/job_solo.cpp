// The one-rank job, used when this build has no MPI (LATTE_WITH_MPI=OFF).
#include "parallel/job.h"
#include "latte_build_config.h"

#if !LATTE_HAVE_MPI
namespace latte {

namespace {
class SoloJob final : public ParallelJob {
 public:
  Communicator& world() override { return solo_; }
  Communicator& tp() override { return solo_; }
  Communicator& dp() override { return solo_; }
  double collective_timeout_s() const override { return 0; }

 private:
  SoloCommunicator solo_;
};
}  // namespace

std::unique_ptr<ParallelJob> start_parallel_job(int64_t tp_size, bool) {
  LATTE_REQUIRE(tp_size == 1, ErrorCode::unsupported, "--tp ", tp_size, " needs a build with MPI (LATTE_WITH_MPI=ON)");
  return std::make_unique<SoloJob>();
}

}  // namespace latte
#endif
