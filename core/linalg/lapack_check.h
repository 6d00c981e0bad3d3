// LATTE_LAPACK_CHECK(call): the one check for LAPACK(E) calls (aesthetics-anchors.md 8.4).
// LAPACK reports through its return value `info`: < 0 means argument -info was illegal (a Latte
// bug), > 0 means the algorithm did not converge (the input's fault, e.g. extreme values).
#pragma once
#include "core/base/error.h"

#define LATTE_LAPACK_CHECK(call)                                                                    \
  do {                                                                                              \
    const auto latte_info_ = (call);                                                                \
    if (latte_info_ != 0)                                                                           \
      ::latte::fail(latte_info_ < 0 ? ::latte::ErrorCode::internal : ::latte::ErrorCode::numerics, \
                    #call, " failed with info ", latte_info_,                                       \
                    latte_info_ < 0 ? " (illegal argument)" : " (did not converge)", " at ",        \
                    __FILE__, ":", __LINE__);                                                       \
  } while (0)
