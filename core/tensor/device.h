// Where a tensor's bytes live. The kind travels with every tensor so that a CPU kernel never
// dereferences device memory and the communicator can pick MPI (host) or NCCL (device).
#pragma once
#include <string>

namespace latte {

enum class DeviceKind { cpu, cuda };

struct Device {
  DeviceKind kind = DeviceKind::cpu;
  int index = 0;
  bool operator==(const Device&) const = default;
  static Device cpu() { return {}; }
  static Device cuda(int i) { return {DeviceKind::cuda, i}; }
};

std::string device_name(const Device& d);  // "cpu", "cuda:0"

}  // namespace latte
