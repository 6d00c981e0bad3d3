// The watchdog in one process, with a callback in place of MPI_Abort: the message it would end
// the job with, and that calls which complete in time are left alone. (Ending a real job is
// tested by the mpi_watchdog_* ctest entries, which run tests/mpi/fault_main.cpp.)
#include "parallel/comm/watchdog.h"

#include <gtest/gtest.h>

#include <chrono>
#include <mutex>
#include <thread>
#include <vector>

namespace latte {
namespace {

struct Captured {
  std::mutex mutex;
  std::vector<std::string> messages;
  Watchdog::Expired callback() {
    return [this](const std::string& m) {
      std::lock_guard<std::mutex> lock(mutex);
      messages.push_back(m);
    };
  }
  std::vector<std::string> get() {
    std::lock_guard<std::mutex> lock(mutex);
    return messages;
  }
};

TEST(Watchdog, ExpiredCallIsReportedOnceNamingRankCallCountAndGroup) {
  Captured captured;
  Watchdog dog(0.2, 3, captured.callback());
  Watchdog::Slot* slot = dog.open_slot("mpi tp[dp=0]");
  {
    WatchedCall call(slot, "all_reduce", 1536);
    call.enter("MPI_Allreduce");
    std::this_thread::sleep_for(std::chrono::milliseconds(600));
  }
  auto messages = captured.get();
  ASSERT_EQ(messages.size(), 1u);
  EXPECT_EQ(messages[0],
            "latte: rank 3: MPI_Allreduce (all_reduce of 1536 floats on mpi tp[dp=0]) did not complete in 0.2 s; "
            "another rank may have died");
  dog.close_slot(slot);
}

TEST(Watchdog, StageOfTheCallIsNamed) {
  Captured captured;
  Watchdog dog(0.1, 0, captured.callback());
  Watchdog::Slot* slot = dog.open_slot("mpi world");
  {
    WatchedCall call(slot, "all_gather", 1);
    call.enter("MPI_Allreduce", "call check of ");
    std::this_thread::sleep_for(std::chrono::milliseconds(400));
  }
  auto messages = captured.get();
  ASSERT_EQ(messages.size(), 1u);
  EXPECT_EQ(messages[0], "latte: rank 0: MPI_Allreduce (call check of all_gather of 1 float on mpi world) did not "
                         "complete in 0.1 s; another rank may have died");
}

TEST(Watchdog, CallsThatCompleteInTimeAreLeftAlone) {
  Captured captured;
  Watchdog dog(0.2, 0, captured.callback());
  Watchdog::Slot* a = dog.open_slot("a");
  Watchdog::Slot* b = dog.open_slot("b");
  auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(700);
  while (std::chrono::steady_clock::now() < until) {  // 3.5 timeouts of back-to-back short calls
    WatchedCall call(a, "all_reduce", 8);
    call.enter("MPI_Allreduce");
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  dog.close_slot(b);
  EXPECT_TRUE(captured.get().empty()) << captured.get().front();
  dog.close_slot(a);
}

TEST(Watchdog, ZeroTimeoutWatchesNothing) {
  Captured captured;
  Watchdog dog(0, 0, captured.callback());
  Watchdog::Slot* slot = dog.open_slot("x");
  {
    WatchedCall call(slot, "barrier", 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(captured.get().empty());
  WatchedCall unwatched(nullptr, "barrier", 0);  // a null slot is allowed
}

}  // namespace
}  // namespace latte
