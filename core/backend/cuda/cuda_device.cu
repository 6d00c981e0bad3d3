#include "core/backend/cuda/cuda_check.h"
#include "core/backend/cuda/cuda_device.h"

namespace latte {

int cuda_device_count(std::string* why) {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    if (why) *why = str_cat("cudaGetDeviceCount: ", cudaGetErrorName(err), " (", cudaGetErrorString(err), ")");
    cudaGetLastError();  // clear the sticky error so later runtime calls are not blamed for it
    return 0;
  }
  if (count == 0 && why) *why = "cudaGetDeviceCount: no CUDA device";
  return count;
}

std::string cuda_device_description(int index) {
  cudaDeviceProp prop{};
  LATTE_CUDA_CHECK(cudaGetDeviceProperties(&prop, index));
  return str_cat(prop.name, ", sm_", prop.major, prop.minor, ", ",
                 double(prop.totalGlobalMem) / double(1ull << 30), " GiB");
}

}  // namespace latte
