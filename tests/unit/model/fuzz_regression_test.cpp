// Inputs that broke the config.json reader (tests/data/fuzz/config_json_fuzz), replayed
// (tests/unit/fuzz_regressions.h).
#include "core/base/file_io.h"
#include "core/model/config.h"
#include "tests/unit/fuzz_regressions.h"

namespace latte {
namespace {

// rope_freq_1e19.json: an mla_rope_freqs entry of 18446744073709551616 (2^64, a float to the JSON
// parser) was cast to int32 by nlohmann::json, undefined behaviour that UBSan caught.
TEST(FuzzRegression, ConfigJson) {
  testing::expect_fuzz_regressions_rejected("config_json_fuzz", [](const std::string& path) {
    (void)config_from_json_text(read_text_file(path), path);
  });
}

}  // namespace
}  // namespace latte
