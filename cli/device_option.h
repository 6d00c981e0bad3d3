// --device auto|cpu|cuda: the one way every subcommand that runs a model picks its backend.
#pragma once
#include <CLI/CLI.hpp>
#include <string>

#include "core/backend/backend.h"

namespace latte::cli {

// Adds --device to cmd (default cpu); CLI11 refuses any other value naming the flag.
void add_device_option(CLI::App& cmd, std::string& device);

// The backend for a --device value (core/backend/registry.h backend_for): an explicit cuda that
// cannot be served throws unsupported with the registry's one-line reason; auto falls back to the
// CPU and, when announce, says why on stderr (once per process, however many models load).
Backend& resolve_device(const std::string& device, bool announce = true);

}  // namespace latte::cli
