#include "parallel/comm/request_wait.h"

#include <algorithm>
#include <thread>

#include "parallel/comm/mpi_check.h"

namespace latte {

void wait_for(MPI_Request& request, Waiting waiting) {
  if (waiting == Waiting::busy) {
    LATTE_MPI_CHECK(MPI_Wait(&request, MPI_STATUS_IGNORE));
    return;
  }
  using Clock = std::chrono::steady_clock;
  const auto spin_until = Clock::now() + kPatientSpin;
  std::chrono::microseconds sleep{10};
  for (;;) {
    int done = 0;
    LATTE_MPI_CHECK(MPI_Test(&request, &done, MPI_STATUS_IGNORE));
    if (done) return;
    if (Clock::now() < spin_until) continue;
    std::this_thread::sleep_for(sleep);
    sleep = std::min(kPatientMaxSleep, sleep + sleep / 2);
  }
}

}  // namespace latte
