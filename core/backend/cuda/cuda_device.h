// Whether a usable CUDA device exists, asked without throwing: on a machine with no driver,
// cudaGetDeviceCount returns cudaErrorInsufficientDriver and leaves the count untouched
// (shared/notes/env-feasibility.md), so the error code is checked, not only the count.
#pragma once
#include <string>

namespace latte {

// Number of usable devices; 0 with *why set to the runtime's reason when there are none.
int cuda_device_count(std::string* why);
// "NVIDIA H100 80GB HBM3, sm_90, 79.1 GiB" for device i.
std::string cuda_device_description(int index);

}  // namespace latte
