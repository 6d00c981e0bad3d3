// Planner: KV cache (against the paper's MLA reductions and KvCache::create), FLOPs and tokens/s,
// the TP sizes offered, size strings, presets, and `latte plan` on the command line.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/model/transformer.h"
#include "trainer/planner/planner.h"

#include "tests/unit/latte_cli.h"

namespace latte::planner {
using namespace latte::test;

namespace {

// SmolLM-135M, r 4 (2r = 8), per token per layer (spec 3.5): original 2 * 3 KV heads * 64 = 384;
// MLA 3 * (8 + d_kv): d_kv 8 -> 48 (12.5 %, -87.5 %), 16 -> 72 (-81.25 %), 32 -> 120 (-68.75 %).
TEST(PlannerKvCache, SmolLmMlaReductionsMatchThePaper) {
  const ModelConfig c = preset("smollm-135m");
  const int64_t before = kv_cache_bytes_per_token(c, tp_layout(c, 0, 1), DType::bf16);
  EXPECT_EQ(before, 384 * 30 * 2);  // 23,040 B per token in bf16
  const std::pair<int64_t, double> cases[] = {{8, -87.5}, {16, -81.25}, {32, -68.75}};
  for (const auto& [d_kv, percent] : cases) {
    const ModelConfig m = mla_variant(c, d_kv, 4);
    const int64_t after = kv_cache_bytes_per_token(m, tp_layout(m, 0, 1), DType::bf16);
    EXPECT_EQ(after, 3 * (8 + d_kv) * 30 * 2) << d_kv;
    EXPECT_DOUBLE_EQ(100.0 * double(after - before) / double(before), percent) << d_kv;
  }
}

// Llama-2-7B d_kv 16, r 8 (spec 3.5): 32 * (16 + 16) = 1,024 elements per layer, bf16 over 32
// layers = 64 KiB per token against 512 KiB.
TEST(PlannerKvCache, Llama7bMla) {
  const ModelConfig c = preset("llama2-7b"), m = mla_variant(c, 16, 8);
  EXPECT_EQ(kv_cache_bytes_per_token(c, tp_layout(c, 0, 1), DType::bf16), 512 * 1024);
  EXPECT_EQ(kv_cache_bytes_per_token(m, tp_layout(m, 0, 1), DType::bf16), 64 * 1024);
  // TP 4: 8 KV heads' RoPE keys per rank (8 * 16 = 128) + the whole latent (512) = 640 per layer;
  // 640 * 32 * 2 B = 40,960 B: the latent's replication keeps it above 64 KiB / 4.
  EXPECT_EQ(kv_cache_bytes_per_token(m, tp_layout(m, 0, 4), DType::bf16), 40'960);
}

// The planner's per-token figure times context and batch is what KvCache::create allocates (f32).
TEST(PlannerKvCache, MatchesKvCacheCreate) {
  const ModelConfig s = preset("smollm-135m");
  for (const ModelConfig& c : {s, mla_variant(s, 8, 4)}) {
    for (int64_t tp : {1, 3}) {
      const TpLayout l = tp_layout(c, 0, tp);
      KvCache cache = KvCache::create(c, 2, 5, l);
      EXPECT_EQ(cache.bytes(), 2 * 5 * kv_cache_bytes_per_token(c, l, DType::f32)) << c.architecture << " tp " << tp;
    }
  }
  // And make_plan's cache: context x batch x per token.
  PlanRequest r;
  r.config = mla_variant(s, 8, 4);
  r.tp = 3, r.seq = 128, r.micro_batch = 2, r.kv_context = 2048, r.kv_batch = 16;
  Plan p = make_plan(r);
  // per rank per layer: 1 KV head * 8 + latent 24 = 32; * 30 layers * 2 B = 1,920 B per token.
  EXPECT_EQ(p.kv_bytes_per_token, 1'920);
  EXPECT_EQ(p.kv_cache, 1'920 * 2048 * 16);
}

// Llama-2-7B at T 4096:
//   N_matmul = 6,738,415,616 - norms (2*4096*32 + 4096 = 266,240) - the embedding lookup table
//              131,072,000 = 6,607,077,376 (the lm_head's 131,072,000 stays in)
//   model FLOPs/token = 6 * 6,607,077,376 + 12 * 32 * 32 * 128 * 4096
//                     = 39,642,464,256 + 6,442,450,944 = 46,084,915,200
//   8 GPUs at 989 TFLOP/s and 40 % MFU: 8 * 989e12 * 0.4 / 46,084,915,200 = 68,673.2 tokens/s
//   recomputation: + 2 * (6,607,077,376 - 131,072,000) + 4 * 32*32*128*4096
//                  = 12,952,010,752 + 2,147,483,648 -> 61,184,409,600 hardware FLOPs/token
TEST(PlannerFlops, Llama7bFormula) {
  const ModelConfig c = preset("llama2-7b");
  Flops f = flops_per_token(c, 4096, false);
  EXPECT_EQ(f.matmul_params, 6'607'077'376);
  EXPECT_DOUBLE_EQ(f.model_per_token, 46'084'915'200.0);
  EXPECT_DOUBLE_EQ(f.hardware_per_token, f.model_per_token);
  EXPECT_DOUBLE_EQ(flops_per_token(c, 4096, true).hardware_per_token, 61'184'409'600.0);
  PlanRequest r;
  r.config = c;
  r.tp = 2, r.dp = 4, r.seq = 4096, r.micro_batch = 1;
  Plan p = make_plan(r);
  EXPECT_NEAR(p.tokens_per_s, 68'673.2, 0.1);
  // One micro-batch step: 4 DP ranks * 4096 tokens / 68,673.2 tokens/s = 0.2386 s.
  EXPECT_NEAR(p.step_seconds, 4.0 * 4096 / 68'673.23, 1e-4);
}

TEST(PlannerInputs, TpOptionsNameWhatDoesNotDivide) {
  const ModelConfig c = preset("smollm-135m");  // 9 heads, 3 KV heads
  std::vector<TpOption> o = tp_options(c, 6);
  ASSERT_EQ(o.size(), 4u);  // 1, 2, 3, 6
  EXPECT_EQ(o[0].tp, 1);
  EXPECT_TRUE(o[0].skipped.empty());
  EXPECT_NE(o[1].skipped.find("n_heads (9)"), std::string::npos) << o[1].skipped;
  EXPECT_TRUE(o[2].skipped.empty());
  EXPECT_NE(o[3].skipped.find("n_heads"), std::string::npos) << o[3].skipped;
  std::vector<TpOption> seven = tp_options(preset("llama2-70b"), 16);  // TP 16 > 8 KV heads
  EXPECT_NE(seven.back().skipped.find("n_kv_heads"), std::string::npos) << seven.back().skipped;
  EXPECT_THROW(tp_options(c, 0), Error);
}

TEST(PlannerInputs, SizeStrings) {
  EXPECT_EQ(parse_size("80GiB"), 80LL << 30);
  EXPECT_EQ(parse_size("80GB"), 80'000'000'000);
  EXPECT_EQ(parse_size("81920MiB"), 80LL << 30);
  EXPECT_EQ(parse_size("1.5TiB"), 3LL << 39);
  EXPECT_EQ(parse_size("141 gb"), 141'000'000'000);
  for (const char* bad : {"", "GiB", "80", "80XB", "-1GiB", "0GiB", "1.2.3GB", "80GiBs"}) {
    try {
      parse_size(bad);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const Error& e) {
      const std::string m = e.what();
      EXPECT_EQ(m.find('\n'), std::string::npos);
      EXPECT_NE(m.find("bad size"), std::string::npos) << m;
    }
  }
}

TEST(PlannerInputs, PresetsAndBadRequests) {
  for (const std::string& n : preset_names()) EXPECT_NO_THROW(preset(n));
  try {
    preset("llama3-8b");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unknown preset 'llama3-8b'"), std::string::npos) << e.what();
  }
  EXPECT_THROW(mla_variant(preset("llama2-7b"), 16, 65), Error);  // r > head_dim / 2
  EXPECT_THROW(mla_variant(mla_variant(preset("llama2-7b"), 16, 8), 16, 8), Error);
  PlanRequest r;
  r.config = preset("llama2-7b");
  r.seq = 8192;  // beyond the 4096 context
  EXPECT_THROW(make_plan(r), Error);
  r.seq = 4096;
  r.tp = 3;  // 32 heads
  EXPECT_THROW(make_plan(r), Error);
}

// ---- the command line (skipped when bin/latte has not been built in this build folder) ----

const std::string kLatte = std::string(LATTE_BINARY_DIR) + "/bin/latte";


TEST(PlannerCli, TableJsonAndOneLineErrors) {
  if (!std::filesystem::exists(kLatte)) GTEST_SKIP() << kLatte << " not built";
  CliRun t = run_latte("plan --preset llama2-7b --gpus 8 --gpu-mem 80GiB --seq 4096 --micro-batch 1 --zero1");
  ASSERT_EQ(t.code, 0) << t.err;
  EXPECT_NE(t.out.find("FITS"), std::string::npos) << t.out;

  CliRun j = run_latte("plan --preset llama2-7b --gpus 8 --gpu-mem 80GiB --seq 4096 --micro-batch 1 --zero1 --json");
  ASSERT_EQ(j.code, 0) << j.err;
  nlohmann::json doc = nlohmann::json::parse(j.out);
  ASSERT_EQ(doc["plans"].size(), 4u);  // TP 1, 2, 4, 8
  EXPECT_EQ(doc["plans"][0]["tp"], 1);
  EXPECT_EQ(doc["plans"][0]["dp"], 8);
  EXPECT_EQ(doc["plans"][0]["bytes"]["weights"], 13'476'831'232);
  EXPECT_EQ(doc["plans"][0]["bytes"]["optimizer"], 13'476'831'232);
  EXPECT_EQ(doc["plans"][0]["bytes"]["optimizer_step"], 26'953'662'464);
  EXPECT_EQ(doc["plans"][2]["bytes"]["weights"], 3'369'607'168);

  CliRun mla = run_latte("plan --preset smollm-135m --gpus 1 --seq 2048 --mla-d-kv 8 --rope-pairs 4 --json");
  ASSERT_EQ(mla.code, 0) << mla.err;
  EXPECT_EQ(nlohmann::json::parse(mla.out)["plans"][0]["kv_cache"]["bytes_per_token"], 2'880);

  const std::pair<const char*, const char*> bad[] = {
      {"plan --preset llama2-7b --gpus 6 --tp 4", "not divisible by --tp 4"},
      {"plan --preset llama2-7b --gpus 6 --tp 3", "does not divide n_heads"},
      {"plan --preset nope --gpus 8", "unknown preset 'nope'"},
      {"plan --preset llama2-7b --gpus 8 --gpu-mem 80XB", "bad size '80XB'"},
      {"plan --preset llama2-7b --gpus 8 --gpu-mem 80", "no unit"},
      {"plan --preset llama2-7b --gpus 0", "--gpus 0"},
      {"plan --gpus 8", "exactly one of --config, --preset and --model"},
      {"plan --preset llama2-7b --gpus 8 --mla-d-kv 16", "go together"},
      {"plan --preset llama2-7b --gpus 8 --seq 5000", "exceeds the model context"},
      {"plan --config /nonexistent/config.json --gpus 8", "/nonexistent/config.json"},
  };
  for (const auto& [args, want] : bad) {
    CliRun r = run_latte(args);
    EXPECT_NE(r.code, 0) << args;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << args << "\n" << r.err;
    EXPECT_NE(r.err.find(want), std::string::npos) << args << "\n" << r.err;
  }
}

}  // namespace
}  // namespace latte::planner
