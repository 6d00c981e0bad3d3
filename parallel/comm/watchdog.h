// The collective watchdog. MPI has no timeout on a collective: if one rank dies outside MPI's
// view, or simply never makes the call its peers are waiting in, the others wait forever (and a
// rank that has reached MPI_Finalize waits there too; tests/mpi/fault_main.cpp shows both).
//
// Each communicator owns a Slot. A WatchedCall (RAII, one per communicator call) records in it,
// with atomics only, "in MPI_Allreduce (all_reduce of 1536 floats on mpi tp[dp=0]) since t". One
// thread, started by ParallelRuntime, looks at every slot a few times per timeout; a call older
// than the timeout ends the job through `on_expire`, by default:
//   latte: rank 1: MPI_Allreduce (all_reduce of 1536 floats on mpi tp[dp=0]) did not complete in
//   600 s; another rank may have died
// followed by MPI_Abort(MPI_COMM_WORLD, 124). A timeout of 0 disables the watchdog.
//
// The cost on the call path is a few relaxed atomic stores and one steady_clock read.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace latte {

class Watchdog {
 public:
  struct Slot {
    explicit Slot(std::string comm_name) : comm(std::move(comm_name)) {}
    const std::string comm;               // "mpi tp[dp=0]"; fixed for the slot's life
    std::atomic<uint64_t> serial{0};      // odd while a call is in flight; +1 at entry and exit
    std::atomic<int64_t> since_ns{0};     // steady_clock time of entry
    std::atomic<const char*> call{""};    // the foreign call now running: "MPI_Allreduce"
    std::atomic<const char*> stage{""};   // "" or "call check of " (see call_check.h)
    std::atomic<const char*> op{""};      // the communicator method: "all_reduce"
    std::atomic<int64_t> count{0};        // elements
  };

  // The exit code of a job the watchdog ends, as timeout(1) uses.
  static constexpr int exit_code = 124;

  using Expired = std::function<void(const std::string& message)>;
  // The default: print the message to stderr, then MPI_Abort(MPI_COMM_WORLD, exit_code).
  static void abort_job_on_expiry(const std::string& message);

  // timeout_s <= 0: no thread, slots are still handed out (calls are then unwatched).
  Watchdog(double timeout_s, int world_rank, Expired on_expire = abort_job_on_expiry);
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  double timeout_s() const { return timeout_s_; }
  Slot* open_slot(std::string comm_name);
  void close_slot(Slot* slot);

  // "latte: rank 1: MPI_Allreduce (all_reduce of 1536 floats on mpi tp[dp=0]) did not complete
  // in 600 s; another rank may have died"
  static std::string expiry_message(int world_rank, const char* call, const char* stage,
                                    const char* op, int64_t count, const std::string& comm,
                                    double timeout_s);

 private:
  void run();

  const double timeout_s_;
  const int world_rank_;
  const Expired on_expire_;
  std::mutex mutex_;  // guards slots_ and stop_
  std::condition_variable wake_;
  bool stop_ = false;
  std::vector<std::unique_ptr<Slot>> slots_;
  std::thread thread_;
};

// Marks one communicator call in its slot for as long as it lives. slot may be null (unwatched).
class WatchedCall {
 public:
  WatchedCall(Watchdog::Slot* slot, const char* op, int64_t count);
  ~WatchedCall();
  WatchedCall(const WatchedCall&) = delete;
  WatchedCall& operator=(const WatchedCall&) = delete;
  // The foreign call about to run, and an optional stage prefix ("call check of ").
  void enter(const char* call, const char* stage = "");

 private:
  Watchdog::Slot* slot_;
};

}  // namespace latte
