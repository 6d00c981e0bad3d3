#include "core/backend/cpu/openblas_kernels.h"

#include <cblas.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <iostream>

namespace latte::cpu {
namespace {

// Kernel sets of OpenBLAS's x86-64 dynamic build with AVX2 or AVX-512 code; any other name is a
// fallback that leaves this CPU's vector units half or more idle.
bool has_modern_kernels(const char* core) {
  for (const char* name : {"Haswell", "SkylakeX", "Cooperlake", "SapphireRapids", "Zen", "Excavator"})
    if (std::strcmp(core, name) == 0) return true;
  return false;
}

// The best OpenBLAS kernel set this CPU can run, or nullptr where none beats the fallback.
const char* wanted_core() {
  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  if (avx512) return __builtin_cpu_supports("avx512bf16") ? "Cooperlake" : "SkylakeX";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
  return nullptr;
}

}  // namespace

std::string openblas_core_name() {
  const char* name = openblas_get_corename();
  return name ? name : "unknown";
}

void use_openblas_kernels_for_this_cpu(char** argv) {
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr) return;
  const char* current = openblas_get_corename();
  if (current == nullptr || has_modern_kernels(current)) return;
  const char* wanted = wanted_core();
  if (wanted == nullptr) return;
  // Set even if the exec below fails, so no child process tries again.
  setenv("OPENBLAS_CORETYPE", wanted, 1);
  execv("/proc/self/exe", argv);
  std::cerr << "latte: warning: OpenBLAS runs its " << current << " kernels on this CPU and re-executing with "
            << "OPENBLAS_CORETYPE=" << wanted << " failed (" << std::strerror(errno)
            << "); GEMMs will be several times slower. Set OPENBLAS_CORETYPE=" << wanted << " yourself.\n";
}

}  // namespace latte::cpu
