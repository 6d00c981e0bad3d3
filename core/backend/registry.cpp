#include "core/backend/registry.h"

#include "core/backend/cpu/cpu_backend.h"
#include "latte_build_config.h"
#if LATTE_HAVE_CUDA
#include "core/backend/cuda/cuda_device.h"
#endif

namespace latte {

const char* rope_layout_name(RopeLayout l) {
  return l == RopeLayout::interleaved ? "interleaved" : "rotate_half";
}

RopeLayout rope_layout_from_name(const std::string& name) {
  if (name == "interleaved") return RopeLayout::interleaved;
  if (name == "rotate_half") return RopeLayout::rotate_half;
  fail(ErrorCode::invalid_argument, "unknown RoPE layout '", name, "' (expected interleaved or rotate_half)");
}

Backend& cpu_backend() {
  static CpuBackend backend;  // stateless: one instance serves every caller
  return backend;
}

std::vector<std::string> compiled_backends() {
#if LATTE_HAVE_CUDA
  return {"cpu", "cuda"};
#else
  return {"cpu"};
#endif
}

Backend& backend_for(const std::string& device_flag, std::string* why) {
  if (device_flag == "cpu") return cpu_backend();
  if (device_flag == "auto") {
    if (why) {
#if LATTE_HAVE_CUDA
      std::string reason;
      *why = cuda_device_count(&reason) > 0
                 ? std::string("a CUDA device is present but the CUDA model backend is not built yet; using the CPU")
                 : "no usable CUDA device (" + reason + "); using the CPU";
#else
      *why = "this build has no CUDA backend (nvcc was not found at configure time); using the CPU";
#endif
    }
    return cpu_backend();
  }
  if (device_flag == "cuda") {
#if LATTE_HAVE_CUDA
    std::string reason;
    if (cuda_device_count(&reason) == 0) fail(ErrorCode::unsupported, "--device cuda: ", reason);
    fail(ErrorCode::unsupported, "--device cuda: the CUDA model backend is not built yet (",
         cuda_device_description(0), " found)");
#else
    fail(ErrorCode::unsupported, "--device cuda: this build has no CUDA backend (nvcc was not found at configure time)");
#endif
  }
  fail(ErrorCode::invalid_argument, "unknown device '", device_flag, "' (expected cpu, cuda or auto)");
}

}  // namespace latte
