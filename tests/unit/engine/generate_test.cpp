// Generation on the shipped stories260K model against llama2.c's own expected output, and
// determinism across runs and OpenMP/OpenBLAS thread counts.
#include <cblas.h>
#include <gtest/gtest.h>
#include <omp.h>

#include "core/base/file_io.h"
#include "inference/engine/generate.h"
#include "inference/engine/loaded_model.h"

namespace latte {
namespace {

const std::string kModel = std::string(LATTE_MODELS_DIR) + "/stories260K/stories260K.bin";
const std::string kTokenizer = std::string(LATTE_MODELS_DIR) + "/stories260K/tok512.bin";

std::string run_greedy(const std::string& prompt, int64_t steps, std::vector<int32_t>* tokens = nullptr) {
  LoadedModel m = load_model({kModel, kTokenizer, nullptr, true});
  GenerateParams p;
  p.prompt = prompt;
  p.steps = steps;
  p.sampling.temperature = 0;
  p.stop_at_eos = false;  // run.c semantics: only BOS stops
  std::string out;
  GenerateResult r = generate(*m.model, *m.tokenizer, p, [&](const std::string& s) { out += s; });
  if (tokens) *tokens = r.tokens;
  return out;
}

TEST(GenerateTest, GreedyMatchesLlama2cRunC) {
  // tests/data/stories260K_greedy200.txt is run.c's stdout for `-t 0.0 -n 200` (see its README).
  std::string expected = read_text_file(std::string(LATTE_TEST_DATA_DIR) + "/stories260K_greedy200.txt");
  EXPECT_EQ(run_greedy("", 200), expected);
}

TEST(GenerateTest, GreedyIsBitIdenticalAcrossThreadCounts) {
  std::vector<int32_t> one, two;
  omp_set_num_threads(1);
  openblas_set_num_threads(1);
  std::string a = run_greedy("Once upon a time", 256, &one);
  omp_set_num_threads(2);
  openblas_set_num_threads(2);
  std::string b = run_greedy("Once upon a time", 256, &two);
  std::string c = run_greedy("Once upon a time", 256);
  EXPECT_EQ(one, two);
  EXPECT_EQ(a, b);
  EXPECT_EQ(b, c);
  EXPECT_EQ(a.rfind("Once upon a time", 0), 0u) << a;  // the prompt is echoed first
}

TEST(GenerateTest, LogitsBitIdenticalAcrossThreadCounts) {
  LoadedModel m = load_model({kModel, kTokenizer, nullptr, true});
  std::vector<int32_t> tokens = m.tokenizer->encode("Lily saw a big red ball in the park.", true);
  auto logits_with = [&](int threads) {
    omp_set_num_threads(threads);
    openblas_set_num_threads(threads);
    KvCache cache = KvCache::create(m.model->config(), 1, 64);
    return m.model->forward(tokens, 1, cache, LogitsFor::all_positions).to_vector();
  };
  std::vector<float> a = logits_with(1), b = logits_with(2);
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));
}

TEST(GenerateTest, SeededSamplingIsReproducible) {
  LoadedModel m = load_model({kModel, kTokenizer, nullptr, true});
  GenerateParams p;
  p.prompt = "Tim had a dog";
  p.steps = 80;
  p.sampling = {0.9f, 0.9f, 0, 42};
  std::string a, b, c;
  generate(*m.model, *m.tokenizer, p, [&](const std::string& s) { a += s; });
  generate(*m.model, *m.tokenizer, p, [&](const std::string& s) { b += s; });
  p.sampling.seed = 43;
  generate(*m.model, *m.tokenizer, p, [&](const std::string& s) { c += s; });
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
}

TEST(GenerateTest, PromptLongerThanStepsIsRefused) {
  LoadedModel m = load_model({kModel, kTokenizer, nullptr, true});
  GenerateParams p;
  p.prompt = std::string(400, 'x') + " a long prompt";
  p.steps = 20;
  EXPECT_THROW(generate(*m.model, *m.tokenizer, p, [](const std::string&) {}), Error);
}

}  // namespace
}  // namespace latte
