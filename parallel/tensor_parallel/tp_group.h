// What every tensor-parallel layer needs: the kernels (a Backend) and the group of ranks it
// splits over (a Communicator, from core/comm: MPI, NCCL or the single-rank one). With a group of
// one rank no collective runs and every layer takes the single-device path, bit-identical to a
// model built without tensor parallelism.
#pragma once
#include "core/backend/backend.h"
#include "core/comm/communicator.h"

namespace latte::tensor_parallel {

struct TpGroup {
  Backend& be;
  Communicator& comm;

  bool split() const { return comm.size() > 1; }
  // t = sum (or max) over the group; nothing to do on one rank.
  void all_reduce(Tensor& t, ReduceOp op = ReduceOp::sum) const {
    if (split()) comm.all_reduce(t, op);
  }
};

}  // namespace latte::tensor_parallel
