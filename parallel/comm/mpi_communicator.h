// Communicator over an MPI communicator, for host f32 tensors.
//
// The constructor duplicates the MPI_Comm it is given (so its traffic never matches another
// user's messages on the same group) and sets MPI_ERRORS_RETURN on the duplicate, so every
// failure reaches LATTE_MPI_CHECK and becomes a latte::Error naming the call and the rank.
// Collectives are checked across ranks first unless CommContext::verify is off (call_check.h),
// and every call is recorded in the watchdog slot (watchdog.h).
//
// Device tensors are refused: Debian's OpenMPI 4.1.4 is not CUDA-aware
// (shared/notes/env-feasibility.md), so they go through NcclCommunicator; factory.h picks.
// MPI counts are int: a tensor of more than 2^31-1 elements is refused with a message.
// A communicator serves one thread at a time (its watchdog slot records one call); use one
// communicator per thread for concurrent collectives.
#pragma once
#include <mpi.h>

#include <string>

#include "core/comm/communicator.h"
#include "parallel/comm/call_check.h"
#include "parallel/comm/watchdog.h"

namespace latte {

class MpiCommunicator final : public Communicator {
 public:
  // Collective over comm. name is the group's name ("tp[dp=0]"); name() adds "mpi ".
  MpiCommunicator(MPI_Comm comm, const std::string& name, const CommContext& ctx);
  ~MpiCommunicator() override;
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override { return name_; }
  MPI_Comm mpi_comm() const { return comm_; }

  void all_reduce(Tensor& t, ReduceOp op) override;
  void all_gather(Tensor& out, const Tensor& in) override;
  void reduce_scatter(Tensor& out, const Tensor& in) override;
  void broadcast(Tensor& t, int root) override;
  void broadcast_ints(std::span<int32_t> values, int root) override;
  void barrier() override;
  // Blocking, matched by (source, tag). recv checks that the message has exactly t's size.
  void send(const Tensor& t, int dest, int tag) override;
  void recv(Tensor& t, int src, int tag) override;

 private:
  std::string where(const char* op) const { return std::string(op) + " on " + name_; }
  std::string peer_problem(int peer, int tag, const char* role) const;

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
  std::string name_;
  CommContext ctx_;
  Watchdog::Slot* slot_ = nullptr;
};

}  // namespace latte
