// The main of every unit-test binary: gtest's, after OpenBLAS has been given this CPU's kernels
// (core/backend/cpu/openblas_kernels.h), so that the tests run the GEMMs that users run.
#include <gtest/gtest.h>

#include "core/backend/cpu/openblas_kernels.h"

int main(int argc, char** argv) {
  latte::cpu::use_openblas_kernels_for_this_cpu(argv);
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
