// One check macro per CUDA library, each naming the failed call, its file:line and the device.
#pragma once
#include <cuda_runtime.h>

#include "core/base/error.h"

#define LATTE_CUDA_CHECK(call)                                                                   \
  do {                                                                                           \
    cudaError_t latte_err_ = (call);                                                             \
    if (latte_err_ != cudaSuccess) {                                                             \
      int latte_dev_ = -1;                                                                       \
      cudaGetDevice(&latte_dev_);                                                                \
      ::latte::fail(::latte::ErrorCode::unsupported, #call, " failed at ", __FILE__, ":", __LINE__, \
                    " on cuda:", latte_dev_, ": ", cudaGetErrorName(latte_err_), " (",           \
                    cudaGetErrorString(latte_err_), ")");                                        \
    }                                                                                            \
  } while (0)
