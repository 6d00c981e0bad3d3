#include "parallel/comm/nccl_communicator.h"

#include <climits>
#include <exception>
#include <thread>

#include "parallel/comm/mpi_check.h"
#include "parallel/comm/nccl_check.h"

namespace latte {

NcclCommunicator::NcclCommunicator(MPI_Comm bootstrap, Device device, const std::string& name,
                                   const CommContext& ctx, cudaStream_t stream)
    : stream_(stream), device_(device), name_("nccl " + name), ctx_(ctx) {
  LATTE_REQUIRE(device.kind == DeviceKind::cuda, ErrorCode::invalid_argument, "rank ", ctx.world_rank,
                ": NcclCommunicator for ", name, " on ", device_name(device), ": NCCL needs a CUDA device");
  LATTE_MPI_CHECK(MPI_Comm_dup(bootstrap, &mpi_));
  LATTE_MPI_CHECK(MPI_Comm_set_errhandler(mpi_, MPI_ERRORS_RETURN));
  LATTE_MPI_CHECK(MPI_Comm_rank(mpi_, &rank_));
  LATTE_MPI_CHECK(MPI_Comm_size(mpi_, &size_));
  LATTE_CUDA_RANK_CHECK(cudaSetDevice(device.index));
  ncclUniqueId id;
  if (rank_ == 0) LATTE_NCCL_CHECK(ncclGetUniqueId(&id));
  LATTE_MPI_CHECK(MPI_Bcast(&id, int(sizeof(id)), MPI_BYTE, 0, mpi_));
  LATTE_NCCL_CHECK(ncclCommInitRank(&nccl_, size_, id, rank_));
  if (ctx_.watchdog) slot_ = ctx_.watchdog->open_slot(name_);
}

NcclCommunicator::~NcclCommunicator() {
  if (ctx_.watchdog) ctx_.watchdog->close_slot(slot_);
  if (nccl_) {
    // Destroy waits for outstanding work; while an exception unwinds a peer may be gone, so
    // abort instead of waiting for it.
    if (std::uncaught_exceptions() > 0)
      ncclCommAbort(nccl_);
    else
      ncclCommDestroy(nccl_);
  }
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && mpi_ != MPI_COMM_NULL) MPI_Comm_free(&mpi_);
}

void NcclCommunicator::wait(WatchedCall& call) {
  call.enter("cudaStreamQuery");
  for (;;) {
    cudaError_t state = cudaStreamQuery(stream_);
    if (state == cudaSuccess) return;
    if (state != cudaErrorNotReady) LATTE_CUDA_RANK_CHECK(state);
    ncclResult_t async = ncclSuccess;
    LATTE_NCCL_CHECK(ncclCommGetAsyncError(nccl_, &async));
    if (async != ncclSuccess && async != ncclInProgress) {
      ncclCommAbort(nccl_);
      nccl_ = nullptr;
      fail(ErrorCode::io, "rank ", ctx_.world_rank, ": ", name_, ": NCCL reported an asynchronous error: ",
           ncclGetErrorString(async), "; the communicator was aborted");
    }
    std::this_thread::yield();
  }
}

std::string NcclCommunicator::peer_problem(int peer, int tag, const char* role) const {
  if (peer < 0 || peer >= size_) return str_cat(role, " ", peer, " is not a rank of this ", size_, "-rank communicator");
  if (peer == rank_) return str_cat(role, " ", peer, " is this rank");
  if (tag < 0) return str_cat("tag ", tag, " is negative");
  return "";
}

void NcclCommunicator::all_reduce(Tensor& t, ReduceOp op) {
  WatchedCall call(slot_, "all_reduce", t.numel());
  call.enter("MPI_Iallreduce", "call check of ");
  agree_on_call(mpi_, ctx_, where("all_reduce"), {CallKind::all_reduce, t.numel(), int64_t(op)},
                tensor_problem(t, "t", device_));
  LATTE_REQUIRE(nccl_, ErrorCode::io, "rank ", ctx_.world_rank, ": ", name_, " was aborted after an error");
  call.enter("ncclAllReduce");
  LATTE_NCCL_CHECK(ncclAllReduce(t.raw(), t.raw(), size_t(t.numel()), ncclFloat32,
                                 op == ReduceOp::sum ? ncclSum : ncclMax, nccl_, stream_));
  wait(call);
}

void NcclCommunicator::all_gather(Tensor& out, const Tensor& in) {
  WatchedCall call(slot_, "all_gather", in.numel());
  std::string problem = first_problem({tensor_problem(in, "in", device_), tensor_problem(out, "out", device_)});
  if (problem.empty()) {
    if (out.numel() != int64_t(size_) * in.numel() || (out.ndim() > 0 && out.dim(0) % size_ != 0))
      problem = str_cat("out ", shape_str(out.shape()), " is not ", size_, " blocks along dim 0 of in ",
                        shape_str(in.shape()));
    else if (overlaps(in, out) &&
             in.raw() != static_cast<const char*>(out.raw()) + size_t(rank_) * in.nbytes())
      problem = "in overlaps out but is not this rank's block of it";
  }
  call.enter("MPI_Iallreduce", "call check of ");
  agree_on_call(mpi_, ctx_, where("all_gather"), {CallKind::all_gather, in.numel()}, problem);
  LATTE_REQUIRE(nccl_, ErrorCode::io, "rank ", ctx_.world_rank, ": ", name_, " was aborted after an error");
  call.enter("ncclAllGather");  // in place when in is this rank's block of out (NCCL allows it)
  LATTE_NCCL_CHECK(ncclAllGather(in.raw(), out.raw(), size_t(in.numel()), ncclFloat32, nccl_, stream_));
  wait(call);
}

void NcclCommunicator::reduce_scatter(Tensor& out, const Tensor& in) {
  WatchedCall call(slot_, "reduce_scatter", out.numel());
  std::string problem = first_problem({tensor_problem(in, "in", device_), tensor_problem(out, "out", device_)});
  if (problem.empty()) {
    if (in.numel() != int64_t(size_) * out.numel() || (in.ndim() > 0 && in.dim(0) % size_ != 0))
      problem = str_cat("in ", shape_str(in.shape()), " is not ", size_, " blocks along dim 0 of out ",
                        shape_str(out.shape()));
    else if (overlaps(in, out))
      problem = "in and out overlap";
  }
  call.enter("MPI_Iallreduce", "call check of ");
  agree_on_call(mpi_, ctx_, where("reduce_scatter"), {CallKind::reduce_scatter, out.numel()}, problem);
  LATTE_REQUIRE(nccl_, ErrorCode::io, "rank ", ctx_.world_rank, ": ", name_, " was aborted after an error");
  call.enter("ncclReduceScatter");
  LATTE_NCCL_CHECK(ncclReduceScatter(in.raw(), out.raw(), size_t(out.numel()), ncclFloat32, ncclSum, nccl_,
                                     stream_));
  wait(call);
}

void NcclCommunicator::broadcast(Tensor& t, int root) {
  WatchedCall call(slot_, "broadcast", t.numel());
  std::string problem = tensor_problem(t, "t", device_);
  if (problem.empty() && (root < 0 || root >= size_))
    problem = str_cat("root ", root, " is not a rank of this ", size_, "-rank communicator");
  call.enter("MPI_Iallreduce", "call check of ");
  agree_on_call(mpi_, ctx_, where("broadcast"), {CallKind::broadcast, t.numel(), root}, problem);
  LATTE_REQUIRE(nccl_, ErrorCode::io, "rank ", ctx_.world_rank, ": ", name_, " was aborted after an error");
  call.enter("ncclBroadcast");
  LATTE_NCCL_CHECK(ncclBroadcast(t.raw(), t.raw(), size_t(t.numel()), ncclFloat32, root, nccl_, stream_));
  wait(call);
}

void NcclCommunicator::broadcast_ints(std::span<int32_t> values, int root) {
  // Host control data goes over the MPI duplicate of the group: it is already on the host, and
  // NCCL takes device buffers only.
  const int64_t n = int64_t(values.size());
  WatchedCall call(slot_, "broadcast_ints", n);
  std::string problem;
  if (n > INT_MAX) problem = str_cat("values has ", n, " elements, more than MPI's int count limit of ", INT_MAX);
  if (problem.empty() && (root < 0 || root >= size_))
    problem = str_cat("root ", root, " is not a rank of this ", size_, "-rank communicator");
  call.enter("MPI_Iallreduce", "call check of ");
  // Patient: a serving follower waits here for the next engine step for as long as the server is
  // idle (request_wait.h).
  agree_on_call(mpi_, ctx_, where("broadcast_ints"), {CallKind::broadcast_ints, n, root}, problem, Waiting::patient);
  call.enter("MPI_Ibcast");
  MPI_Request request = MPI_REQUEST_NULL;
  LATTE_MPI_CHECK(MPI_Ibcast(values.data(), int(n), MPI_INT32_T, root, mpi_, &request));
  wait_for(request, Waiting::patient);
}

void NcclCommunicator::barrier() {
  // Every call is synchronous, so this rank's device work is already done: a host barrier on
  // the bootstrap group is a barrier for the group.
  WatchedCall call(slot_, "barrier", 0);
  call.enter("MPI_Iallreduce", "call check of ");
  agree_on_call(mpi_, ctx_, where("barrier"), {CallKind::barrier, 0}, "");
  call.enter("MPI_Barrier");
  LATTE_MPI_CHECK(MPI_Barrier(mpi_));
}

void NcclCommunicator::send(const Tensor& t, int dest, int tag) {
  WatchedCall call(slot_, "send", t.numel());
  std::string problem = first_problem({tensor_problem(t, "t", device_), peer_problem(dest, tag, "dest")});
  LATTE_REQUIRE(problem.empty(), ErrorCode::invalid_argument, "rank ", ctx_.world_rank, ": ", where("send"),
                ": ", problem);
  LATTE_REQUIRE(nccl_, ErrorCode::io, "rank ", ctx_.world_rank, ": ", name_, " was aborted after an error");
  call.enter("ncclSend");
  LATTE_NCCL_CHECK(ncclSend(t.raw(), size_t(t.numel()), ncclFloat32, dest, nccl_, stream_));
  wait(call);
}

void NcclCommunicator::recv(Tensor& t, int src, int tag) {
  WatchedCall call(slot_, "recv", t.numel());
  std::string problem = first_problem({tensor_problem(t, "t", device_), peer_problem(src, tag, "src")});
  LATTE_REQUIRE(problem.empty(), ErrorCode::invalid_argument, "rank ", ctx_.world_rank, ": ", where("recv"),
                ": ", problem);
  LATTE_REQUIRE(nccl_, ErrorCode::io, "rank ", ctx_.world_rank, ": ", name_, " was aborted after an error");
  call.enter("ncclRecv");
  LATTE_NCCL_CHECK(ncclRecv(t.raw(), size_t(t.numel()), ncclFloat32, src, nccl_, stream_));
  wait(call);
}

}  // namespace latte
