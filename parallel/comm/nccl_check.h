// LATTE_NCCL_CHECK(call): every NCCL call in parallel/ goes through it; the message names the
// call, its file:line, the world rank, the CUDA device and NCCL's explanation (with
// ncclGetLastError's detail when there is one). Compiled only in CUDA builds with NCCL.
#pragma once
#include <cuda_runtime.h>
#include <nccl.h>

#include "core/base/error.h"
#include "parallel/comm/mpi_check.h"

#define LATTE_NCCL_CHECK(call)                                                                  \
  do {                                                                                          \
    ncclResult_t latte_nccl_rc_ = (call);                                                       \
    if (latte_nccl_rc_ != ncclSuccess) {                                                        \
      int latte_dev_ = -1;                                                                      \
      cudaGetDevice(&latte_dev_);                                                               \
      const char* latte_last_ = ncclGetLastError(nullptr);                                      \
      ::latte::fail(::latte::ErrorCode::io, "rank ", ::latte::mpi_world_rank(), ": ", #call,    \
                    " failed at ", __FILE__, ":", __LINE__, " on cuda:", latte_dev_, ": ",      \
                    ncclGetErrorString(latte_nccl_rc_),                                         \
                    (latte_last_ && *latte_last_) ? " (" : "", latte_last_ ? latte_last_ : "", \
                    (latte_last_ && *latte_last_) ? ")" : "");                                  \
    }                                                                                           \
  } while (0)

// The CUDA runtime calls this folder makes, with the rank added to the message.
#define LATTE_CUDA_RANK_CHECK(call)                                                             \
  do {                                                                                          \
    cudaError_t latte_cuda_rc_ = (call);                                                        \
    if (latte_cuda_rc_ != cudaSuccess) {                                                        \
      int latte_dev_ = -1;                                                                      \
      cudaGetDevice(&latte_dev_);                                                               \
      ::latte::fail(::latte::ErrorCode::unsupported, "rank ", ::latte::mpi_world_rank(), ": ",  \
                    #call, " failed at ", __FILE__, ":", __LINE__, " on cuda:", latte_dev_, ": ", \
                    cudaGetErrorName(latte_cuda_rc_), " (", cudaGetErrorString(latte_cuda_rc_), ")"); \
    }                                                                                           \
  } while (0)
