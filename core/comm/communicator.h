// The collective-communication interface the model and the trainer program against. It lives in
// core as a pure interface so that core/model can place its collectives (Megatron-style tensor
// parallelism) without linking MPI or NCCL; the implementations are in parallel/comm
// (MPI for host tensors, NCCL for device tensors, NCCL bootstrapped over MPI).
//
// Every call is collective over the communicator's ranks and must be made by all of them in the
// same order with matching shapes; implementations check what they can (dtype, element count)
// and end the job with a message naming the rank and the call instead of hanging.
#pragma once
#include <cstdint>
#include <span>
#include <string>

#include "core/tensor/tensor.h"

namespace latte {

enum class ReduceOp { sum, max };

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string name() const = 0;  // e.g. "mpi tp[dp=0]" for messages

  // In place: t = reduce over ranks of t. f32 tensors, contiguous.
  virtual void all_reduce(Tensor& t, ReduceOp op) = 0;
  // out[size * n] = concatenation over ranks of in[n] (rank order), along dim 0 of out.
  virtual void all_gather(Tensor& out, const Tensor& in) = 0;
  // out[n] = sum over ranks of in[size * n]'s rank-th block (dim 0).
  virtual void reduce_scatter(Tensor& out, const Tensor& in) = 0;
  virtual void broadcast(Tensor& t, int root) = 0;
  // Control data in host memory (a step's plan, a configuration): every rank passes the same
  // count. Kept apart from the tensor collectives so integers never travel as floats and a
  // device communicator need not stage them through device memory.
  virtual void broadcast_ints(std::span<int32_t> values, int root) = 0;
  virtual void barrier() = 0;
  virtual void send(const Tensor& t, int dest, int tag) = 0;
  virtual void recv(Tensor& t, int src, int tag) = 0;
};

// A single-rank communicator: every collective is the identity. The default of every model, so a
// TP=1 run takes exactly the code path of a TP=N run with no communication.
class SoloCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string name() const override { return "solo"; }
  void all_reduce(Tensor&, ReduceOp) override {}
  void all_gather(Tensor& out, const Tensor& in) override { out.copy_from(in.reshape(out.shape())); }
  void reduce_scatter(Tensor& out, const Tensor& in) override { out.copy_from(in.reshape(out.shape())); }
  void broadcast(Tensor&, int) override {}
  void broadcast_ints(std::span<int32_t>, int) override {}
  void barrier() override {}
  void send(const Tensor&, int, int) override { fail(ErrorCode::invalid_argument, "send on a single-rank communicator"); }
  void recv(Tensor&, int, int) override { fail(ErrorCode::invalid_argument, "recv on a single-rank communicator"); }
};

}  // namespace latte
