// The registry is the only place that knows which backends this build contains.
#pragma once
#include <string>
#include <vector>

#include "core/backend/backend.h"

namespace latte {

Backend& cpu_backend();

// "cpu", "cuda" or "auto". auto picks CUDA only when the build has it and a device answers;
// otherwise it picks the CPU and, through *why (when non-null), says why. An explicit "cuda"
// that cannot be served throws unsupported naming the cause.
Backend& backend_for(const std::string& device_flag, std::string* why = nullptr);

std::vector<std::string> compiled_backends();  // e.g. {"cpu", "cuda"}

}  // namespace latte
