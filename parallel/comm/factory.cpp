#include "parallel/comm/factory.h"

#include "latte_build_config.h"
#include "parallel/comm/mpi_communicator.h"
#if LATTE_HAVE_CUDA && LATTE_PARALLEL_HAVE_NCCL
#include <cuda_runtime.h>

#include <cstdlib>

#include "parallel/comm/nccl_communicator.h"
#endif

namespace latte {

bool device_communicators_built(std::string* why) {
#if LATTE_HAVE_CUDA && LATTE_PARALLEL_HAVE_NCCL
  return true;
#elif LATTE_HAVE_CUDA
  if (why) *why = "this build found nvcc but not NCCL (nccl.h and libnccl under the CUDA toolkit)";
  return false;
#else
  if (why) *why = "this build has no CUDA (nvcc was not found at configure time)";
  return false;
#endif
}

std::string communicator_backends() {
  return device_communicators_built(nullptr) ? "mpi (host tensors) + nccl (cuda tensors)" : "mpi (host tensors)";
}

Device pick_device(DeviceKind kind, int local_rank, int local_size, int world_rank) {
  if (kind == DeviceKind::cpu) return Device::cpu();
#if LATTE_HAVE_CUDA && LATTE_PARALLEL_HAVE_NCCL
  int count = 0;
  cudaError_t rc = cudaGetDeviceCount(&count);  // leaves count alone without a driver: check rc
  if (rc != cudaSuccess || count == 0)
    fail(ErrorCode::unsupported, "rank ", world_rank, ": no CUDA device: ",
         rc != cudaSuccess ? str_cat(cudaGetErrorName(rc), " (", cudaGetErrorString(rc), ")")
                           : std::string("cudaGetDeviceCount found none"));
  if (count >= local_size) return Device::cuda(local_rank);
  // One visible device per rank is how SLURM's GPU binding (and a hand-set CUDA_VISIBLE_DEVICES)
  // hands them out; without CUDA_VISIBLE_DEVICES, one device would be shared, which NCCL refuses.
  if (count == 1 && std::getenv("CUDA_VISIBLE_DEVICES")) return Device::cuda(0);
  fail(ErrorCode::unsupported, "rank ", world_rank, ": ", local_size, " ranks on this host but ", count,
       " CUDA device(s) visible; NCCL needs one device per rank (start fewer ranks, or give each rank its own "
       "device with CUDA_VISIBLE_DEVICES)");
#else
  std::string why;
  device_communicators_built(&why);
  fail(ErrorCode::unsupported, "rank ", world_rank, ": --device cuda: ", why);
#endif
}

std::unique_ptr<Communicator> make_communicator(MPI_Comm comm, const std::string& name, Device device,
                                                const CommContext& ctx) {
  if (device.kind == DeviceKind::cpu) return std::make_unique<MpiCommunicator>(comm, name, ctx);
#if LATTE_HAVE_CUDA && LATTE_PARALLEL_HAVE_NCCL
  return std::make_unique<NcclCommunicator>(comm, device, name, ctx);
#else
  std::string why;
  device_communicators_built(&why);
  fail(ErrorCode::unsupported, "rank ", ctx.world_rank, ": no communicator for ", device_name(device),
       " tensors on ", name, ": ", why);
#endif
}

}  // namespace latte
