#include "parallel/comm/call_check.h"

#include "core/comm/communicator.h"
#include "parallel/comm/mpi_check.h"

namespace latte {

const char* call_kind_name(CallKind kind) {
  switch (kind) {
    case CallKind::all_reduce: return "all_reduce";
    case CallKind::all_gather: return "all_gather";
    case CallKind::reduce_scatter: return "reduce_scatter";
    case CallKind::broadcast: return "broadcast";
    case CallKind::barrier: return "barrier";
    case CallKind::broadcast_ints: return "broadcast_ints";
  }
  return "?";
}

namespace {

std::string param_text(CallKind kind, int64_t param) {
  if (kind == CallKind::all_reduce)
    return str_cat("reduces with ", param == int64_t(ReduceOp::sum) ? "sum" : "max");
  return str_cat("uses root ", param);
}

}  // namespace

void agree_on_call(MPI_Comm comm, const CommContext& ctx, const std::string& where,
                   const CallSignature& sig, const std::string& problem, Waiting waiting) {
  const std::string prefix = str_cat("rank ", ctx.world_rank, ": ", where, ": ");
  if (!ctx.verify) {
    if (!problem.empty()) fail(ErrorCode::invalid_argument, prefix, problem);
    return;
  }
  const int64_t kind = int64_t(sig.kind);
  const int64_t refused = problem.empty() ? 0 : 1;
  int64_t v[8] = {kind, -kind, sig.count, -sig.count, sig.param, -sig.param, refused, 0};
  MPI_Request request = MPI_REQUEST_NULL;
  LATTE_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, v, 8, MPI_INT64_T, MPI_MAX, comm, &request));
  wait_for(request, waiting);
  if (refused) fail(ErrorCode::invalid_argument, prefix, problem);
  if (v[6])
    fail(ErrorCode::invalid_argument, prefix,
         "another rank refused its arguments to this call (see that rank's message)");
  // This rank's value is the maximum or the minimum; report the other extreme.
  auto other = [](int64_t mine, int64_t max, int64_t neg_min) { return mine == max ? -neg_min : max; };
  if (v[0] != -v[1]) {
    auto theirs = CallKind(other(kind, v[0], v[1]));
    fail(ErrorCode::invalid_argument, prefix, "this rank is in ", call_kind_name(sig.kind),
         ", another rank is in ", call_kind_name(theirs), " (collectives out of order)");
  }
  if (v[2] != -v[3])
    fail(ErrorCode::shape_mismatch, prefix, "this rank has ", sig.count, " elements, another rank has ",
         other(sig.count, v[2], v[3]));
  if (v[4] != -v[5])
    fail(ErrorCode::invalid_argument, prefix, "this rank ", param_text(sig.kind, sig.param),
         ", another rank ", param_text(sig.kind, other(sig.param, v[4], v[5])));
}

std::string first_problem(std::initializer_list<std::string> problems) {
  for (const std::string& p : problems)
    if (!p.empty()) return p;
  return "";
}

bool overlaps(const Tensor& a, const Tensor& b) {
  auto pa = static_cast<const char*>(a.raw()), pb = static_cast<const char*>(b.raw());
  return pa < pb + b.nbytes() && pb < pa + a.nbytes();
}

std::string tensor_problem(const Tensor& t, const char* name, Device device) {
  if (!t.defined()) return str_cat(name, " is an undefined tensor");
  if (t.device() != device) {
    if (device.kind == DeviceKind::cpu)
      return str_cat(name, " is on ", device_name(t.device()),
                     "; this communicator takes host tensors only (Debian's OpenMPI is not "
                     "CUDA-aware), device tensors go through the NCCL communicator");
    return str_cat(name, " is on ", device_name(t.device()), ", this communicator's tensors are on ",
                   device_name(device));
  }
  if (t.dtype() != DType::f32) return str_cat(name, " is ", dtype_name(t.dtype()), ", expected f32");
  if (!t.is_contiguous()) return str_cat(name, " ", shape_str(t.shape()), " is not contiguous");
  return "";
}

}  // namespace latte
