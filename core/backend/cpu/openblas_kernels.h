// OpenBLAS chooses its kernels by CPU model when it loads, and version 0.3.21 (Debian 12) does not
// know models newer than itself: on an Emerald Rapids Xeon (family 6, model 207, AVX-512 with
// BF16) it falls back to "Prescott", SSE3 kernels, and single-threaded sgemm 2048^3 runs at 33
// GFLOP/s where its SkylakeX kernels run at 165 on the same core. The only public way to choose is
// the OPENBLAS_CORETYPE environment variable, read when the library loads, so a program calls
// use_openblas_kernels_for_this_cpu(argv) first thing in main: if OpenBLAS fell back to a core
// without AVX2 kernels although this CPU has AVX-512 (or AVX2 + FMA), it sets OPENBLAS_CORETYPE
// and re-executes itself (same process id and arguments), so the new image loads OpenBLAS with the
// right kernels. It does nothing when OPENBLAS_CORETYPE is already set (a user's choice wins) or
// when OpenBLAS recognised the CPU. Safe before MPI_Init (mpirun sees the same process).
#pragma once
#include <string>

namespace latte::cpu {

void use_openblas_kernels_for_this_cpu(char** argv);

// OpenBLAS's kernel set in this process ("SkylakeX", "Haswell", ...), for benchmark headers.
std::string openblas_core_name();

}  // namespace latte::cpu
