// Communicator over NCCL, for f32 tensors on one CUDA device. Compiled only in CUDA builds where
// NCCL was found; factory.h is the way in.
//
// Bootstrap (FasterTransformer's ftNcclInitialize recipe, shared/notes/systems-anchors.md 5.4):
// rank 0 of the MPI group calls ncclGetUniqueId, MPI_Bcast sends the 128-byte id over that
// group, every rank calls ncclCommInitRank on its device. Sub-groups (tp, dp) get their own
// NCCL communicator the same way, from their own MPI communicator.
//
// Every call is synchronous, like the interface: it enqueues on `stream` (default: the legacy
// default stream, which orders it after the kernels that produced the tensors), then waits,
// polling cudaStreamQuery and ncclCommGetAsyncError, so a peer's failure surfaces as an error and
// a peer that never arrives is caught by the watchdog. The MPI duplicate of the group carries the
// cross-rank call check (call_check.h) and the barrier.
//
// NCCL point-to-point has no tags: send/recv match in call order per peer; the tag is checked to
// be non-negative and otherwise ignored, and recv cannot detect a size mismatch.
#pragma once
#include <cuda_runtime.h>
#include <mpi.h>
#include <nccl.h>

#include <string>

#include "core/comm/communicator.h"
#include "parallel/comm/call_check.h"
#include "parallel/comm/watchdog.h"

namespace latte {

class NcclCommunicator final : public Communicator {
 public:
  // Collective over bootstrap. device.kind must be cuda.
  NcclCommunicator(MPI_Comm bootstrap, Device device, const std::string& name, const CommContext& ctx,
                   cudaStream_t stream = nullptr);
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override { return name_; }
  Device device() const { return device_; }
  cudaStream_t stream() const { return stream_; }

  void all_reduce(Tensor& t, ReduceOp op) override;
  void all_gather(Tensor& out, const Tensor& in) override;
  void reduce_scatter(Tensor& out, const Tensor& in) override;
  void broadcast(Tensor& t, int root) override;
  void broadcast_ints(std::span<int32_t> values, int root) override;
  void barrier() override;
  void send(const Tensor& t, int dest, int tag) override;
  void recv(Tensor& t, int src, int tag) override;

 private:
  std::string where(const char* op) const { return std::string(op) + " on " + name_; }
  std::string peer_problem(int peer, int tag, const char* role) const;
  // Waits for the work just enqueued; throws if NCCL reports an asynchronous error.
  void wait(WatchedCall& call);

  MPI_Comm mpi_ = MPI_COMM_NULL;  // duplicate of the bootstrap group
  ncclComm_t nccl_ = nullptr;
  cudaStream_t stream_ = nullptr;
  Device device_;
  int rank_ = 0, size_ = 1;
  std::string name_;
  CommContext ctx_;
  Watchdog::Slot* slot_ = nullptr;
};

}  // namespace latte
