// ParallelRuntime: the MPI job as the rest of Latte sees it. It owns every piece of MPI state
// in the process (there are no globals beyond it): the MPI session, the world / host-local /
// tensor-parallel / data-parallel groups, their communicators, and the collective watchdog.
//
// The grid is TP x DP with TP innermost: world rank w has tp_rank = w % tp and dp_rank = w / tp,
// so a TP group is tp consecutive ranks, which mpirun's default by-slot placement puts on one
// host (the plan line says when it does not). Megatron orders its groups the same way.
//
// Start-up, collective over MPI_COMM_WORLD:
//   latte: rank 1/4 tp 1/2 dp 0/2 host gpu-a device cpu          (every rank, stderr)
//   latte: plan: 4 ranks on 1 host = dp 2 x tp 2, tp innermost ... (rank 0, stderr)
//
// Ending. If this object called MPI_Init, the destructor does a watched barrier over the world
// (so a rank that never arrives is reported by the watchdog, not waited for inside
// MPI_Finalize), frees the communicators and calls MPI_Finalize. It does neither while an
// exception unwinds: MPI_Finalize waits for every rank, so a rank finalizing on its way out of
// an error would wait forever for peers blocked in a collective (tests/mpi/fault_main.cpp).
// Instead the process exits unfinalized with main's non-zero code, and mpirun tears the job
// down within about two seconds, naming the rank.
// The pattern for a main():
//   int main(int argc, char** argv) {
//     try {
//       latte::ParallelRuntime rt({.tp_size = tp});
//       ...
//       return 0;
//     } catch (const latte::Error& e) {
//       std::fprintf(stderr, "latte: rank %d: error: %s\n", latte::mpi_world_rank(), e.what());
//       return 1;
//     }
//   }
#pragma once
#include <memory>
#include <string>

#include "core/comm/communicator.h"

namespace latte {

struct ParallelOptions {
  int tp_size = 1;                  // --tp; dp = world size / tp
  Device device = Device::cpu();    // cuda: one GPU per rank, chosen from the local rank
  // Seconds before the watchdog ends a collective that has not completed. < 0: the environment
  // variable LATTE_COLLECTIVE_TIMEOUT_S, else 600. 0: no watchdog.
  double collective_timeout_s = -1;
  bool verify_collectives = true;   // check kind/count/root across ranks before each collective
  bool announce = true;             // print the start-up line (each rank) and the plan (rank 0)
};

enum class Group { world, tp, dp };
const char* group_name(Group g);  // "world", "tp", "dp"

class ParallelRuntime {
 public:
  // Collective over MPI_COMM_WORLD. Initialises MPI (MPI_THREAD_MULTIPLE, so the watchdog thread
  // may call MPI_Abort) unless it already is, in which case it attaches and leaves MPI_Finalize
  // to whoever initialised it. Throws latte::Error, on every rank alike, for a --tp that does not
  // divide the world or a bad LATTE_COLLECTIVE_TIMEOUT_S.
  explicit ParallelRuntime(const ParallelOptions& options = {});
  ~ParallelRuntime();
  ParallelRuntime(const ParallelRuntime&) = delete;
  ParallelRuntime& operator=(const ParallelRuntime&) = delete;

  int world_rank() const;
  int world_size() const;
  int local_rank() const;  // among the ranks on this host (MPI_Comm_split_type SHARED)
  int local_size() const;
  int n_hosts() const;
  int tp_rank() const;
  int tp_size() const;
  int dp_rank() const;
  int dp_size() const;
  const std::string& host() const;
  Device device() const;  // cpu, or cuda:<index> picked for this rank
  double collective_timeout_s() const;  // 0: no watchdog

  // The communicator of a group for tensors on `where`: MPI for host tensors, NCCL for CUDA
  // tensors (present only when the runtime was started on a CUDA device).
  Communicator& comm(Group g, DeviceKind where);
  // The groups for tensors on this runtime's device.
  Communicator& world() { return comm(Group::world, device().kind); }
  Communicator& tp() { return comm(Group::tp, device().kind); }
  Communicator& dp() { return comm(Group::dp, device().kind); }

  // "latte: rank 1/4 tp 1/2 dp 0/2 host NAME device cpu"
  std::string startup_line() const;
  // "latte: plan: 4 ranks on 1 host = dp 2 x tp 2, tp innermost (tp groups within a host); ..."
  std::string plan_line() const;

 private:
  struct State;
  std::unique_ptr<State> s_;
};

// This process's rank in MPI_COMM_WORLD, or -1 outside MPI_Init .. MPI_Finalize.
int mpi_world_rank();

// Prints "latte: rank R: <message>" to stderr and ends the whole job: MPI_Abort(MPI_COMM_WORLD,
// exit_code) when MPI is running, else exit(exit_code). For errors other ranks cannot know of.
[[noreturn]] void abort_job(int exit_code, const std::string& message);

}  // namespace latte
