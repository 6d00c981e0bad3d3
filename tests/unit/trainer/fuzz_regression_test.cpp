// Inputs that broke the token shard and state.json readers (tests/data/fuzz/token_shard,
// train_state), replayed (tests/unit/fuzz_regressions.h).
#include <vector>

#include "core/base/file_io.h"
#include "tests/unit/fuzz_regressions.h"
#include "trainer/data/token_shard.h"
#include "trainer/train_state/train_checkpoint.h"

namespace latte {
namespace {

TEST(FuzzRegression, TokenShard) {
  testing::expect_fuzz_regressions_rejected("token_shard_fuzz", [](const std::string& path) {
    const TokenShard shard(path);
    std::vector<int32_t> tokens(size_t(shard.size()));
    shard.read(0, shard.size(), tokens.data());
  });
}

// step_is_a_string.json: a field of the wrong JSON type used to escape as nlohmann::json::type_error,
// without the path. tokens_2.6e20.json: data.tokens 2.6e20 (a float) was cast to int64 by
// nlohmann::json, undefined behaviour that UBSan caught.
TEST(FuzzRegression, TrainState) {
  testing::expect_fuzz_regressions_rejected("train_state_fuzz", [](const std::string& path) {
    (void)parse_train_state_json(read_text_file(path), path);
  });
}

}  // namespace
}  // namespace latte
