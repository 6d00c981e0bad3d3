// --max-memory (latte train, latte plan): the size parse, the request latte train plans with, and
// the one-line refusal naming the planned bytes, the limit, the layout and what would shrink it.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "trainer/planner/planner.h"

namespace latte::planner {
namespace {

constexpr int64_t kMiB = int64_t(1) << 20, kGiB = int64_t(1) << 30;

// The shipped stories260K's shape (its llama2.c header: 64 172 5 8 4 512 512).
ModelConfig stories260k() {
  ModelConfig c;
  c.architecture = "llama";
  c.dim = 64, c.hidden_dim = 172, c.n_layers = 5, c.n_heads = 8, c.n_kv_heads = 4;
  c.vocab_size = 512, c.max_seq_len = 512, c.head_dim = 8, c.tied_embeddings = true;
  c.rope_layout = RopeLayout::interleaved;
  c.validate("stories260K");
  return c;
}

void expect_refused(const std::string& text) {
  try {
    parse_max_memory(text);
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument) << text;
    EXPECT_NE(std::string(e.what()).find(text.empty() ? "bad size" : "'" + text + "'"), std::string::npos) << e.what();
    return;
  }
  ADD_FAILURE() << "'" << text << "' was accepted";
}

TEST(PlannerMaxMemory, BareNumbersAreGibAndUnitsAreParseSize) {
  EXPECT_EQ(parse_max_memory("24"), 24 * kGiB);
  EXPECT_EQ(parse_max_memory("3.5"), 3 * kGiB + kGiB / 2);
  EXPECT_EQ(parse_max_memory("0.5"), kGiB / 2);
  EXPECT_EQ(parse_max_memory("512MiB"), 512 * kMiB);
  EXPECT_EQ(parse_max_memory("1MiB"), kMiB);
  EXPECT_EQ(parse_max_memory("4GiB"), 4 * kGiB);
  EXPECT_EQ(parse_max_memory("4gib"), 4 * kGiB);
  EXPECT_EQ(parse_max_memory("80GB"), int64_t(80'000'000'000));
  EXPECT_EQ(parse_max_memory("1.5TiB"), 3 * (int64_t(1) << 39));
  for (const char* bad : {"", "0", "0.0", ".", "1.2.3", "-1", "abc", "24X", "24 XB", "1e9", "GiB"}) expect_refused(bad);
}

TEST(PlannerMaxMemory, TrainRequestIsTheCpuTrainersF32Layout) {
  const PlanRequest r = train_request(stories260k(), 2, 3, 4, 64, true, false);
  EXPECT_EQ(r.tp, 2);
  EXPECT_EQ(r.dp, 3);
  EXPECT_EQ(r.micro_batch, 4);
  EXPECT_EQ(r.seq, 64);
  EXPECT_TRUE(r.zero1);
  EXPECT_FALSE(r.recompute);
  EXPECT_EQ(r.weight_dtype, DType::f32);
  EXPECT_EQ(r.compute_dtype, DType::f32);
  EXPECT_EQ(r.grad_dtype, DType::f32);
  // f32 weights are their own master copy: Adam is 8 B/param, sharded over DP by ZeRO-1, which
  // keeps the owned chunk's reduced f32 gradient as well (4 B/param) and, for the step, a flat f32
  // copy of every local gradient, then an all-gather buffer of the padded parameters plus its own
  // chunk (trainer/optim/adamw.cpp).
  const Plan p = make_plan(r);
  const int64_t chunk = (p.params_local + 2) / 3;
  EXPECT_EQ(p.weights, 4 * p.params_local);
  EXPECT_EQ(p.gradients, 4 * p.params_local);
  EXPECT_EQ(p.optimizer, (8 + 4) * chunk);
  EXPECT_EQ(p.optimizer_step, 4 * 3 * chunk + 4 * chunk);
  const Plan q = make_plan(train_request(stories260k(), 2, 3, 4, 64, false, false));
  EXPECT_EQ(q.optimizer, 8 * q.params_local);
  EXPECT_EQ(q.optimizer_step, 0);
}

TEST(PlannerMaxMemory, TpThatTheTrainerCannotUseIsRefused) {
  const ModelConfig c = stories260k();
  auto refusal = [&](int64_t tp) -> std::string {
    try {
      make_plan(train_request(c, tp, 1, 1, 64, false, false));
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_NE(refusal(3).find("--tp 3 does not divide n_heads (8)"), std::string::npos) << refusal(3);
  EXPECT_NE(refusal(8).find("--tp 8 does not divide hidden_dim (172)"), std::string::npos) << refusal(8);
  ModelConfig gqa = c;  // 8 query heads over 2 KV heads: TP 4 divides the model but shares KV heads
  gqa.n_kv_heads = 2;
  try {
    make_plan(train_request(gqa, 4, 1, 1, 64, false, false));
    ADD_FAILURE() << "TP 4 over 2 KV heads was planned";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--tp 4 exceeds n_kv_heads (2)"), std::string::npos) << e.what();
  }
  EXPECT_EQ(refusal(2), "");
  EXPECT_EQ(refusal(4), "");
}

TEST(PlannerMaxMemory, WithinTheLimitIsNoProblem) {
  const Plan p = make_plan(train_request(stories260k(), 1, 1, 2, 64, false, false));
  EXPECT_EQ(memory_limit_problem(p, p.total), "");
  EXPECT_EQ(memory_limit_problem(p, 80 * kGiB), "");
  EXPECT_NE(memory_limit_problem(p, p.total - 1), "");
}

std::string grouped(int64_t v) {
  std::string s = std::to_string(v), out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i > 0 && (s.size() - i) % 3 == 0) out += ',';
    out += s[i];
  }
  return out;
}

TEST(PlannerMaxMemory, RefusalNamesPlanLimitLayoutAndHints) {
  const Plan p = make_plan(train_request(stories260k(), 1, 2, 2, 64, false, false));
  const std::string m = memory_limit_problem(p, kMiB);
  EXPECT_EQ(m.find('\n'), std::string::npos) << m;
  for (const std::string& part :
       {"planned " + human_bytes(p.total) + " (" + grouped(p.total) + " bytes) per rank",
        std::string("exceeds --max-memory 1.00 MiB (1,048,576 bytes)"),
        std::string("for TP 1, DP 2, --zero1 off, --recompute off, --micro-batch 2, --seq 64"),
        "weights " + human_bytes(p.weights), "activations " + human_bytes(p.activations),
        // The model state (weights + grads + Adam of 260K f32 parameters, about 4 MiB) is already over
        // 1 MiB: recomputation or a smaller batch cannot help, TP can. ZeRO-1 cannot at DP 2: its
        // reduced chunk and step buffers (4 + 8/DP B/param) outweigh the 4 B of Adam it saves.
        std::string("; try a larger --tp")})
    EXPECT_NE(m.find(part), std::string::npos) << "missing \"" << part << "\" in\n" << m;
  EXPECT_EQ(m.find("--recompute,"), std::string::npos) << m;
  EXPECT_EQ(m.find("--zero1,"), std::string::npos) << m;
  EXPECT_EQ(m.find("ZeRO-1 step buffers"), std::string::npos) << m;

  // A limit the model state fits in, activations not: every remedy that applies, in order.
  const int64_t state = p.weights + p.gradients + p.optimizer;
  ASSERT_LT(state, p.total);
  const std::string n = memory_limit_problem(p, state);
  EXPECT_NE(n.find("; try --recompute, a larger --tp or a smaller --micro-batch/--seq"), std::string::npos) << n;
  // At DP 8 ZeRO-1 shrinks the plan (6 B/param against 8) and is suggested first.
  const Plan d8 = make_plan(train_request(stories260k(), 1, 8, 2, 64, false, false));
  const std::string e = memory_limit_problem(d8, d8.weights + d8.gradients + d8.optimizer);
  EXPECT_NE(e.find("; try --zero1, --recompute, a larger --tp or a smaller --micro-batch/--seq"), std::string::npos)
      << e;
  // With ZeRO-1 on, the refusal names its step buffers.
  const Plan z8 = make_plan(train_request(stories260k(), 1, 8, 2, 64, true, false));
  EXPECT_NE(memory_limit_problem(z8, kMiB).find(", ZeRO-1 step buffers " + human_bytes(z8.optimizer_step) + ")"),
            std::string::npos);
  // Already using them: ZeRO-1 and recomputation are not suggested again; the largest trainable
  // TP (4, the KV heads) leaves nothing but more memory.
  const Plan q = make_plan(train_request(stories260k(), 4, 2, 1, 1, true, true));
  const std::string r = memory_limit_problem(q, 1024);
  EXPECT_NE(r.find("--zero1 on, --recompute on, --micro-batch 1, --seq 1"), std::string::npos) << r;
  EXPECT_NE(r.find("; try more memory per rank"), std::string::npos) << r;
}

// Llama-2-7B, f32, TP 1 x DP 2: weights and grads 4 B and Adam 8 B per parameter are
// 16 * 6,738,415,616 = 107,814,649,856 B, over an 80 GiB limit before any activation.
TEST(PlannerMaxMemory, SevenBillionInF32NeedsShardingNotRecomputation) {
  const Plan p = make_plan(train_request(preset("llama2-7b"), 1, 2, 1, 4096, false, false));
  EXPECT_EQ(p.weights + p.gradients + p.optimizer, 107'814'649'856);
  const std::string m = memory_limit_problem(p, parse_max_memory("80"));
  EXPECT_NE(m.find("exceeds --max-memory 80.00 GiB (85,899,345,920 bytes) for TP 1, DP 2"), std::string::npos) << m;
  EXPECT_NE(m.find("; try a larger --tp"), std::string::npos) << m;  // ZeRO-1 at DP 2 would add, not save
  // ZeRO-1 over 8 and TP 8: 1/8 of the model state per rank fits.
  const Plan s = make_plan(train_request(preset("llama2-7b"), 8, 8, 1, 4096, true, false));
  EXPECT_EQ(memory_limit_problem(s, parse_max_memory("80")), "");
}

TEST(PlannerMaxMemory, HumanBytes) {
  EXPECT_EQ(human_bytes(812), "812 B");
  EXPECT_EQ(human_bytes(1536), "1.50 KiB");
  EXPECT_EQ(human_bytes(kMiB), "1.00 MiB");
  EXPECT_EQ(human_bytes(80 * kGiB), "80.00 GiB");
  EXPECT_EQ(human_bytes(3 * (int64_t(1) << 40)), "3.00 TiB");
}

TEST(PlannerMaxMemory, PlanReportMarksLayoutsOverTheLimit) {
  PlanReport r;
  r.model_name = "stories260K";
  r.gpus = 2;
  r.gpu_mem = 80 * kGiB;
  r.plans.push_back(make_plan(train_request(stories260k(), 1, 2, 2, 64, false, false)));
  r.plans.push_back(make_plan(train_request(stories260k(), 2, 1, 2, 64, false, false)));
  ASSERT_GT(r.plans[0].total, r.plans[1].total);
  r.max_memory = (r.plans[0].total + r.plans[1].total) / 2;  // TP 2 within, TP 1 over
  const std::string table = format_table(r);
  EXPECT_NE(table.find("OVER LIMIT"), std::string::npos) << table;
  EXPECT_NE(table.find("FITS"), std::string::npos) << table;
  EXPECT_NE(table.find("TP 1 refused: " + memory_limit_problem(r.plans[0], r.max_memory)), std::string::npos) << table;
  EXPECT_EQ(table.find("TP 2 refused"), std::string::npos) << table;
  const auto j = nlohmann::json::parse(format_json(r));
  EXPECT_EQ(j["max_memory_bytes"].get<int64_t>(), r.max_memory);
  EXPECT_FALSE(j["plans"][0]["within_max_memory"].get<bool>());
  EXPECT_EQ(j["plans"][0]["refused"].get<std::string>(), memory_limit_problem(r.plans[0], r.max_memory));
  EXPECT_TRUE(j["plans"][1]["within_max_memory"].get<bool>());
  EXPECT_FALSE(j["plans"][1].contains("refused"));
  // Without --max-memory nothing changes.
  r.max_memory = 0;
  EXPECT_EQ(format_table(r).find("OVER LIMIT"), std::string::npos);
  EXPECT_FALSE(nlohmann::json::parse(format_json(r)).contains("max_memory_bytes"));
}

}  // namespace
}  // namespace latte::planner
