// Inputs that broke the checkpoint readers (tests/data/fuzz/<target>), replayed
// (tests/unit/fuzz_regressions.h).
#include "core/checkpoint/checkpoint.h"
#include "tests/unit/fuzz_regressions.h"

namespace latte {
namespace {

// block_count_beyond_tensors.gguf: llama.block_count 83,886,081 in a file holding one layer;
// check_model_tensors listed every claimed layer's tensors before naming a missing one.
TEST(FuzzRegression, Gguf) {
  testing::expect_fuzz_regressions_rejected("gguf_fuzz", [](const std::string& path) { load_gguf(path); });
}

}  // namespace
}  // namespace latte
