#include "cli/device_option.h"

#include <cstdio>

#include "core/backend/registry.h"

namespace latte::cli {

void add_device_option(CLI::App& cmd, std::string& device) {
  cmd.add_option("--device", device,
                 "where the model runs: cpu (default), cuda (fails when there is no usable GPU) or auto "
                 "(cuda when available, else cpu, saying why)")
      ->check(CLI::IsMember({"cpu", "cuda", "auto"}));
}

Backend& resolve_device(const std::string& device, bool announce) {
  std::string why;
  Backend& backend = backend_for(device, &why);
  static bool announced = false;
  if (announce && !announced && device == "auto" && !why.empty()) {
    std::fprintf(stderr, "latte: --device auto: %s\n", why.c_str());
    announced = true;
  }
  return backend;
}

}  // namespace latte::cli
