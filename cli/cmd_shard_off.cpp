// latte shard in a build without gRPC: the subcommand exists so that `latte shard` says why it
// cannot run instead of "unknown subcommand".
#include "cli/commands.h"
#include "core/base/error.h"

namespace latte::cli {

void add_shard(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("shard", "Serve a model over gRPC (not in this build)");
  cmd->allow_extras();
  cmd->callback([] {
    fail(ErrorCode::unsupported, "latte shard needs a build with gRPC; this one has none: ", LATTE_GRPC_OFF_REASON);
  });
}

}  // namespace latte::cli
