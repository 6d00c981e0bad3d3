// This process's resident memory as the kernel counts it (/proc/self/status), for the figures
// that the planner is held to: peak per rank of a training run, peak of a streaming conversion.
#pragma once
#include <cstdint>

namespace latte {

// VmRSS and VmHWM (the high-water mark since the process started), bytes; 0 where /proc is
// not there to ask.
int64_t resident_bytes();
int64_t peak_resident_bytes();

}  // namespace latte
