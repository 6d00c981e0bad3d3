// The serving engine against single-sequence generation: whatever batch a request shares its
// steps with (chunked prefill, mixed prefill/decode steps, preemption and recomputation, prefix
// reuse, cancelled neighbours, refused neighbours), its tokens are the ones generate() produces
// for it alone, greedy or seeded. Models: the shipped stories260K (GQA), its MLA conversion
// (made here, MHA2MLA "high" strategy), and SmolLM2-135M when launch/get-smollm2 has fetched it.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <memory>
#include <set>

#include "core/backend/registry.h"
#include "core/base/error.h"
#include "core/base/file_io.h"
#include "core/checkpoint/checkpoint.h"
#include "inference/engine/engine.h"
#include "inference/engine/evaluate.h"
#include "inference/engine/generate.h"
#include "inference/engine/loaded_model.h"
#include "trainer/mha2mla/convert.h"

namespace latte {
namespace {

const std::string kModels = LATTE_MODELS_DIR;
const std::string kStories = kModels + "/stories260K/stories260K.bin";
const std::string kStoriesTok = kModels + "/stories260K/tok512.bin";
const std::string kStoriesText = kModels + "/stories260K/tinystories_valid_head.txt";
const std::string kSmolLM = kModels + "/smollm2-135m-hf";

struct TestModel {
  std::string name;
  std::unique_ptr<Transformer> model;
  std::unique_ptr<Tokenizer> tok;
};

TestModel& stories() {
  static TestModel m = [] {
    LoadedModel l = load_model({kStories, kStoriesTok, nullptr, true});
    return TestModel{"stories260K", std::move(l.model), std::move(l.tokenizer)};
  }();
  return m;
}

TestModel& stories_mla() {
  static TestModel m = [] {
    Checkpoint src = load_checkpoint(kStories);
    ConvertOptions o;
    o.strategy = RopeStrategy::high;  // no calibration text needed
    Checkpoint mla = convert_to_mla(src, o, nullptr);
    TestModel t{"stories260K-mla", nullptr, load_llama2c_tokenizer(kStoriesTok, mla.config.vocab_size)};
    t.model = std::make_unique<Transformer>(mla.config, weights_from_store(mla.config, mla.tensors), cpu_backend());
    EXPECT_TRUE(t.model->config().is_mla());
    return t;
  }();
  return m;
}

std::vector<TestModel*> stories_models() { return {&stories(), &stories_mla()}; }

// Prompts of mixed lengths cut from the validation text.
std::vector<std::string> prompts(int n, int max_chars) {
  static const std::string text = read_text_file(kStoriesText);
  const int lengths[] = {1, 3, 11, 26, 41, 63, 95, 130, 170, 210, 260, 300, 350, 7, 18, 80};
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) {
    const int len = std::min(lengths[i % 16], max_chars);
    out.push_back(text.substr(size_t(97 * i), size_t(len)));
  }
  return out;
}

std::vector<EngineRequest> requests(int n, int max_chars, int64_t max_new_base, bool seeded) {
  std::vector<EngineRequest> out;
  std::vector<std::string> texts = prompts(n, max_chars);
  for (int i = 0; i < n; ++i) {
    EngineRequest r;
    r.text = texts[size_t(i)];
    r.max_new_tokens = max_new_base + 5 * (i % 7);
    if (seeded) {
      r.sampling = {0.8f, 0.9f, 0, uint64_t(1000 + 17 * i)};
    } else {
      r.sampling.temperature = 0;
    }
    out.push_back(std::move(r));
  }
  return out;
}

struct Expected {
  std::vector<int32_t> tokens;  // generated
  std::string text;
};

// What generate() produces for the request alone, with the same stop rules (BOS always, EOS).
Expected expected_for(TestModel& m, const EngineRequest& r) {
  const std::vector<int32_t> prompt = m.tok->encode(r.text, m.tok->adds_bos_to_prompts());
  GenerateParams p;
  p.prompt = r.text;
  p.steps = int64_t(prompt.size()) + r.max_new_tokens - 1;  // its last step samples token max_new
  p.sampling = r.sampling;
  p.stop_at_eos = true;
  std::vector<std::string> pieces;
  GenerateResult g = generate(*m.model, *m.tok, p, [&](const std::string& s) { pieces.push_back(s); });
  Expected e;
  e.tokens.assign(g.tokens.begin() + g.prompt_tokens, g.tokens.end());
  const size_t echoed = prompt.size() - (prompt[0] == m.tok->bos_id() ? 1 : 0);
  for (size_t i = echoed; i < pieces.size(); ++i) e.text += pieces[i];
  return e;
}

EngineConfig small_config(const Transformer& model, int64_t blocks, int32_t block_size = 8, int64_t budget = 32) {
  EngineConfig c;
  c.block_size = block_size;
  c.cache_bytes = blocks * PagedKvCache::bytes_per_block(model.config(), block_size, DType::f32, model.tp());
  c.max_tokens_per_step = budget;
  c.max_running = 16;
  return c;
}

// Everything a run reports, gathered from the events, plus what the steps looked like.
struct Outcome {
  std::vector<uint64_t> ids;  // of the requests submitted, in order
  std::map<uint64_t, EngineResult> results;
  std::map<uint64_t, int> finish_events;
  bool mixed_step = false;  // a step with both prefill and decode tokens
  int64_t steps = 0;
};

void drive(Engine& e, Outcome& run, int max_steps = 100000) {
  while (e.has_work() && max_steps-- > 0) {
    for (EngineEvent& ev : e.step()) {
      EngineResult& r = run.results[ev.id];
      EXPECT_EQ(run.finish_events[ev.id], 0) << "request " << ev.id << " got an event after it finished";
      if (ev.token >= 0) r.tokens.push_back(ev.token);
      r.text += ev.text;
      if (ev.finished) {
        r.reason = ev.reason;
        r.message = ev.message;
        ++run.finish_events[ev.id];
      }
    }
    const EngineStats s = e.stats();
    run.mixed_step |= s.last_step_prefill_tokens > 0 && s.last_step_decode_tokens > 0;
    ++run.steps;
  }
  ASSERT_FALSE(e.has_work()) << "the engine did not drain";
}

// Submits every request, runs the engine dry and checks each output against generate() alone.
Outcome expect_same_as_alone(TestModel& m, Engine& e, const std::vector<EngineRequest>& reqs) {
  Outcome run;
  std::vector<uint64_t>& ids = run.ids;
  for (const EngineRequest& r : reqs) {
    SubmitResult s = e.submit(r);
    EXPECT_TRUE(s.ok()) << s.error;
    ids.push_back(s.id);
  }
  drive(e, run);
  for (size_t i = 0; i < reqs.size(); ++i) {
    SCOPED_TRACE(m.name + " request " + std::to_string(i) + " prompt \"" + reqs[i].text + "\"");
    const Expected want = expected_for(m, reqs[i]);
    const EngineResult& got = run.results[ids[i]];
    EXPECT_EQ(got.tokens, want.tokens);
    EXPECT_EQ(got.text, want.text);
    EXPECT_EQ(run.finish_events[ids[i]], 1);
    if (int64_t(want.tokens.size()) == reqs[i].max_new_tokens) {
      EXPECT_EQ(finish_reason_name(got.reason), std::string("length")) << got.message;
    } else {
      EXPECT_EQ(finish_reason_name(got.reason), std::string("stopped")) << got.message;
    }
  }
  return run;
}

TEST(EngineTest, GreedyBatchEqualsGenerateAlone) {
  for (TestModel* m : stories_models()) {
    SCOPED_TRACE(m->name);
    Engine e(*m->model, m->tok.get(), small_config(*m->model, 256));
    const int32_t free_before = e.scheduler().pool().free_count();
    Outcome run = expect_same_as_alone(*m, e, requests(16, 400, 20, false));
    EXPECT_TRUE(run.mixed_step) << "the token budget should have mixed prefill chunks with decodes";
    const EngineStats s = e.stats();
    EXPECT_EQ(s.running, 0);
    EXPECT_EQ(s.waiting, 0);
    EXPECT_GT(s.max_running_seen, 1);
    EXPECT_GT(s.tokens_per_s, 0);
    EXPECT_GT(s.prompt_tokens_computed, 16 * 32) << "prompts of up to ~150 tokens in chunks of 32";
    EXPECT_EQ(e.scheduler().pool().free_count(), free_before);
    std::printf("[measured] %s: 16 requests in %lld steps, %lld generated tokens, max %lld running, "
                "peak %lld of %lld blocks\n", m->name.c_str(), (long long)run.steps, (long long)s.generated_tokens,
                (long long)s.max_running_seen, (long long)s.peak_blocks_used, (long long)s.blocks_total);
  }
}

TEST(EngineTest, SeededSamplingBatchEqualsGenerateAlone) {
  for (TestModel* m : stories_models()) {
    SCOPED_TRACE(m->name);
    Engine e(*m->model, m->tok.get(), small_config(*m->model, 256));
    std::vector<EngineRequest> reqs = requests(16, 400, 20, true);
    // Two requests with the same prompt and different seeds must diverge, or the seed is unused.
    reqs[15].text = reqs[14].text;
    Outcome run = expect_same_as_alone(*m, e, reqs);
    EXPECT_NE(run.results[run.ids[14]].tokens, run.results[run.ids[15]].tokens);
  }
}

TEST(EngineTest, GreedyBatchEqualsGenerateAloneSmolLM2) {
  if (!std::filesystem::exists(kSmolLM))
    GTEST_SKIP() << kSmolLM << " is not here (bash launch/get-smollm2 fetches it)";
  static TestModel m = [] {
    LoadedModel l = load_model({kSmolLM, "", nullptr, true});
    return TestModel{"SmolLM2-135M", std::move(l.model), std::move(l.tokenizer)};
  }();
  Engine e(*m.model, m.tok.get(), small_config(*m.model, 128, 16, 48));
  const int32_t free_before = e.scheduler().pool().free_count();
  Outcome run = expect_same_as_alone(m, e, requests(16, 200, 6, false));
  EXPECT_TRUE(run.mixed_step);
  EXPECT_EQ(e.scheduler().pool().free_count(), free_before);
}

// Every row the engine samples from equals the logits of a plain forward over the same tokens on
// a contiguous KV cache (the sequence alone), at that position.
TEST(EngineTest, BatchedLogitsEqualSingleSequenceLogits) {
  for (TestModel* m : stories_models()) {
    SCOPED_TRACE(m->name);
    Engine e(*m->model, m->tok.get(), small_config(*m->model, 256));
    struct Row {
      uint64_t id;
      int64_t position;
      std::vector<float> logits;
    };
    std::vector<Row> rows;
    e.set_logits_observer([&](uint64_t id, int64_t pos, std::span<const float> l) {
      rows.push_back({id, pos, std::vector<float>(l.begin(), l.end())});
    });
    std::vector<EngineRequest> reqs = requests(8, 400, 12, false);
    std::map<uint64_t, std::vector<int32_t>> prompt_of;
    for (const EngineRequest& r : reqs) {
      SubmitResult s = e.submit(r);
      ASSERT_TRUE(s.ok()) << s.error;
      prompt_of[s.id] = m->tok->encode(r.text, m->tok->adds_bos_to_prompts());
    }
    Outcome run;
    drive(e, run);
    ASSERT_TRUE(run.mixed_step);
    const int64_t V = m->model->config().vocab_size;
    std::map<uint64_t, Tensor> ref;
    for (auto& [id, prompt] : prompt_of) {
      std::vector<int32_t> all = prompt;
      all.insert(all.end(), run.results[id].tokens.begin(), run.results[id].tokens.end());
      KvCache cache = m->model->make_cache(1, int64_t(all.size()));
      ref[id] = m->model->forward(all, 1, cache, LogitsFor::all_positions);
    }
    double worst = 0;
    for (const Row& r : rows) {
      const float* want = ref[r.id].f32() + r.position * V;
      double max_diff = 0, max_ref = 0;
      for (int64_t v = 0; v < V; ++v) {
        max_diff = std::max(max_diff, std::abs(double(r.logits[size_t(v)]) - double(want[v])));
        max_ref = std::max(max_ref, std::abs(double(want[v])));
      }
      ASSERT_GT(max_ref, 0);
      EXPECT_LE(max_diff / max_ref, 1e-5) << "request " << r.id << " position " << r.position;
      worst = std::max(worst, max_diff / max_ref);
    }
    EXPECT_GT(rows.size(), 8u * 12u);
    std::printf("[measured] %s: %zu sampled rows, worst normwise relative deviation %.2e\n", m->name.c_str(),
                rows.size(), worst);
  }
}

TEST(EngineTest, LongPromptInSmallChunksAlone) {
  // Steps that sample nothing (a prompt part-way through its prefill) ask the model for no logits.
  for (TestModel* m : stories_models()) {
    SCOPED_TRACE(m->name);
    Engine e(*m->model, m->tok.get(), small_config(*m->model, 64, 8, 16));
    std::vector<EngineRequest> one = requests(1, 400, 20, false);
    one[0].text = prompts(16, 400)[12];
    Outcome run = expect_same_as_alone(*m, e, one);
    EXPECT_GE(e.stats().prompt_tokens_computed, 100);
    EXPECT_GE(run.steps, 100 / 16 + 20);
  }
}

TEST(EngineTest, PreemptedSequencesStillEqualGenerateAlone) {
  for (TestModel* m : stories_models()) {
    SCOPED_TRACE(m->name);
    // 40 blocks of 8 tokens: each request fits alone (at most ~200 positions), 16 together do not.
    Engine e(*m->model, m->tok.get(), small_config(*m->model, 40));
    const int32_t free_before = e.scheduler().pool().free_count();
    expect_same_as_alone(*m, e, requests(16, 400, 30, false));
    const EngineStats s = e.stats();
    EXPECT_GT(s.preemptions, 0) << "the cache was meant to be too small for all requests at once";
    EXPECT_EQ(s.preempted, 0);
    EXPECT_EQ(e.scheduler().pool().free_count(), free_before);
    std::printf("[measured] %s: %lld preemptions, peak %lld of %lld blocks\n", m->name.c_str(),
                (long long)s.preemptions, (long long)s.peak_blocks_used, (long long)s.blocks_total);
  }
}

TEST(EngineTest, PreemptedCountShowsInStats) {
  TestModel& m = stories();
  Engine e(*m.model, m.tok.get(), small_config(*m.model, 40));
  for (EngineRequest& r : requests(16, 400, 30, false)) ASSERT_TRUE(e.submit(r).ok());
  int64_t most_preempted = 0;
  while (e.has_work()) {
    e.step();
    const EngineStats s = e.stats();
    most_preempted = std::max(most_preempted, s.preempted);
    EXPECT_LE(s.preempted, s.waiting);
    EXPECT_EQ(s.blocks_used + s.blocks_free, s.blocks_total);
  }
  EXPECT_GT(most_preempted, 0);
}

TEST(EngineTest, CancelFreesBlocksAtOnceAndLeavesOthersAlone) {
  TestModel& m = stories();
  Engine e(*m.model, m.tok.get(), small_config(*m.model, 256));
  const int32_t free_before = e.scheduler().pool().free_count();
  std::vector<EngineRequest> reqs = requests(8, 400, 30, false);
  std::vector<uint64_t> ids;
  for (const EngineRequest& r : reqs) ids.push_back(e.submit(r).id);
  Outcome run;
  for (int i = 0; i < 6; ++i) e.step();  // some running, some still waiting or prefilling
  ASSERT_GT(e.stats().running, 1);
  const std::set<size_t> cancelled = {0, 4, 7};  // 0 is surely running by now
  const int32_t free_before_cancel = e.scheduler().pool().free_count();
  for (size_t i : cancelled) {
    const int32_t free = e.scheduler().pool().free_count();
    EXPECT_TRUE(e.cancel(ids[i]));
    EXPECT_FALSE(e.cancel(ids[i])) << "a second cancel of the same request";
    EXPECT_GE(e.scheduler().pool().free_count(), free);
  }
  // The cancelled requests' blocks are free before the next step runs.
  EXPECT_GT(e.scheduler().pool().free_count(), free_before_cancel);
  EXPECT_FALSE(e.cancel(999999));
  drive(e, run);  // the first 6 steps' events were not collected: compare the tails
  for (size_t i = 0; i < reqs.size(); ++i) {
    SCOPED_TRACE("request " + std::to_string(i));
    const EngineResult& got = run.results[ids[i]];
    EXPECT_EQ(run.finish_events[ids[i]], 1);
    if (cancelled.count(i)) {
      EXPECT_EQ(finish_reason_name(got.reason), std::string("cancelled"));
    } else {
      const Expected want = expected_for(m, reqs[i]);
      // The tail of the tokens (the first steps' events were not collected) must match.
      ASSERT_LE(got.tokens.size(), want.tokens.size());
      EXPECT_TRUE(std::equal(got.tokens.rbegin(), got.tokens.rend(), want.tokens.rbegin()));
      EXPECT_NE(finish_reason_name(got.reason), std::string("cancelled"));
    }
  }
  EXPECT_EQ(e.scheduler().pool().free_count(), free_before);
}

TEST(EngineTest, CancelledBlocksReuseGivesTheSameOutputs) {
  // A cancelled request's blocks go straight to the next request, which must not see their old K/V.
  TestModel& m = stories_mla();
  Engine e(*m.model, m.tok.get(), small_config(*m.model, 48));
  std::vector<EngineRequest> reqs = requests(6, 400, 25, false);
  const uint64_t victim = e.submit(reqs[0]).id;
  for (int i = 0; i < 4; ++i) e.step();
  EXPECT_TRUE(e.cancel(victim));
  reqs.erase(reqs.begin());
  expect_same_as_alone(m, e, reqs);
}

TEST(EngineTest, PrefixReuseHitsAndKeepsOutputs) {
  for (TestModel* m : stories_models()) {
    SCOPED_TRACE(m->name);
    Engine e(*m->model, m->tok.get(), small_config(*m->model, 256));
    const int32_t free_before = e.scheduler().pool().free_count();
    std::vector<EngineRequest> first = requests(1, 400, 20, false);
    first[0].text = prompts(16, 400)[12];  // ~150 tokens: many full blocks
    expect_same_as_alone(*m, e, first);
    EXPECT_EQ(e.stats().prefix_hits, 0);
    // The same prompt again, and the same prompt with a different ending, and a seeded one.
    std::vector<EngineRequest> again = first;
    again.push_back(first[0]);
    again.back().text += " The end.";
    again.push_back(first[0]);
    again.back().sampling = {0.8f, 0.9f, 0, 7};
    expect_same_as_alone(*m, e, again);
    const EngineStats s = e.stats();
    EXPECT_GE(s.prefix_hits, 3 * 10) << "each of 3 requests should reuse >= 10 of the ~18 blocks of the prompt";
    EXPECT_EQ(e.scheduler().pool().free_count(), free_before);
    std::printf("[measured] %s: prefix hits %lld of %lld blocks looked up\n", m->name.c_str(),
                (long long)s.prefix_hits, (long long)s.prefix_queries);
  }
}

// Each finish event says how many prompt tokens the request reused from the prefix cache: none
// the first time, every full block but the one holding the last prompt token the second time
// (at least one token must run to give logits), and no stop string unless one ended it.
TEST(EngineTest, FinishEventsReportPrefixCachedTokens) {
  TestModel& m = stories();
  const int32_t block_size = 8;
  Engine e(*m.model, m.tok.get(), small_config(*m.model, 128, block_size));
  EngineRequest r = requests(1, 400, 6, false)[0];
  r.text = prompts(16, 400)[9];
  const int64_t n = int64_t(m.tok->encode(r.text, true).size());
  std::vector<int64_t> cached;
  for (int round = 0; round < 2; ++round) {
    ASSERT_TRUE(e.submit(r).ok());
    while (e.has_work())
      for (EngineEvent& ev : e.step())
        if (ev.finished) {
          cached.push_back(ev.prefix_cached_tokens);
          EXPECT_EQ(ev.matched_stop, "") << ev.message;
        }
  }
  ASSERT_EQ(cached.size(), 2u);
  EXPECT_EQ(cached[0], 0);
  EXPECT_EQ(cached[1], (n - 1) / block_size * block_size) << "prompt of " << n << " tokens";
  EXPECT_GT(cached[1], 0);
}

TEST(EngineTest, BadRequestsAreRefusedAndOthersGoOn) {
  TestModel& m = stories();
  const int64_t ctx = m.model->config().max_seq_len, vocab = m.model->config().vocab_size;
  Engine e(*m.model, m.tok.get(), small_config(*m.model, 24));  // 24 blocks of 8: 192 positions
  std::vector<EngineRequest> good = requests(4, 100, 10, false);
  std::vector<uint64_t> ids;
  ids.push_back(e.submit(good[0]).id);
  ids.push_back(e.submit(good[1]).id);
  e.step();  // requests in flight while the bad ones arrive

  auto refused = [&](EngineRequest r, const std::string& part) {
    SubmitResult s = e.submit(std::move(r));
    EXPECT_FALSE(s.ok()) << "expected a refusal containing: " << part;
    EXPECT_EQ(s.id, 0u);
    EXPECT_NE(s.error.find(part), std::string::npos) << s.error;
  };
  EngineRequest base;
  base.prompt = {1, 20, 30};
  base.max_new_tokens = 5;
  base.sampling.temperature = 0;
  {
    EngineRequest r = base;
    r.prompt.clear();
    refused(r, "empty prompt");
  }
  {
    EngineRequest r = base;
    r.prompt = std::vector<int32_t>(size_t(ctx - 3), 40);
    refused(r, "exceeds the context length");
  }
  {
    EngineRequest r = base;
    r.prompt.push_back(int32_t(vocab));
    refused(r, "outside the model's vocabulary");
  }
  {
    EngineRequest r = base;
    r.prompt.push_back(-3);
    refused(r, "outside the model's vocabulary");
  }
  {
    EngineRequest r = base;
    r.sampling = {0.8f, 1.5f, 0, 1};
    refused(r, "top-p must be in [0, 1]");
  }
  {
    EngineRequest r = base;
    r.sampling.temperature = -0.5f;
    refused(r, "temperature must be >= 0");
  }
  {
    EngineRequest r = base;
    r.sampling.temperature = NAN;
    refused(r, "temperature");
  }
  {
    EngineRequest r = base;
    r.max_new_tokens = 0;
    refused(r, "max_new_tokens must be at least 1");
  }
  {
    EngineRequest r = base;
    r.stop_strings = {"ok", ""};
    refused(r, "stop string 1 is empty");
  }
  {
    EngineRequest r = base;  // 3 + 200 positions: more than the 24 blocks of 8 the cache has
    r.max_new_tokens = 200;
    refused(r, "cache blocks");
  }
  ids.push_back(e.submit(good[2]).id);
  ids.push_back(e.submit(good[3]).id);
  for (uint64_t id : ids) ASSERT_NE(id, 0u);
  Outcome run;
  drive(e, run);
  for (size_t i = 2; i < 4; ++i) {
    EXPECT_EQ(run.results[ids[i]].tokens, expected_for(m, good[i]).tokens);
  }
  for (size_t i = 0; i < 2; ++i) {  // one step's tokens were not collected
    const std::vector<int32_t> want = expected_for(m, good[i]).tokens;
    const std::vector<int32_t>& got = run.results[ids[i]].tokens;
    ASSERT_LE(got.size(), want.size());
    EXPECT_TRUE(std::equal(got.rbegin(), got.rend(), want.rbegin()));
  }
}

TEST(EngineTest, ACacheBudgetBelowOneBlockIsAConfigError) {
  TestModel& m = stories();
  EngineConfig c = small_config(*m.model, 1);
  c.cache_bytes -= 1;
  try {
    Engine e(*m.model, m.tok.get(), c);
    ADD_FAILURE() << "no error";
  } catch (const Error& err) {
    EXPECT_NE(std::string(err.what()).find("smaller than one block"), std::string::npos) << err.what();
  }
  c = small_config(*m.model, 8);
  c.cache_dtype = DType::i8;  // i8 quantizes the MLA latent; stories260K is GQA
  EXPECT_THROW(Engine(*m.model, m.tok.get(), c), Error);
}

TEST(EngineTest, StopStringEndsTheRequestAndCutsTheText) {
  TestModel& m = stories();
  EngineRequest r = requests(1, 400, 60, false)[0];
  r.text = "Once upon a time";
  const Expected full = expected_for(m, r);
  ASSERT_GT(full.text.size(), 40u) << full.text;
  // A stop string from the middle of the greedy text; the output ends right before its first use.
  const std::string stop = full.text.substr(30, 6);
  const size_t at = full.text.find(stop);
  r.stop_strings = {"never appears", stop};
  Engine e(*m.model, m.tok.get(), small_config(*m.model, 64));
  const uint64_t id = e.submit(r).id;
  ASSERT_NE(id, 0u);
  Outcome run;
  std::vector<std::string> pieces;
  std::string matched = "(no finish event)";
  while (e.has_work())
    for (EngineEvent& ev : e.step()) {
      run.results[ev.id].text += ev.text;
      if (ev.token >= 0) run.results[ev.id].tokens.push_back(ev.token);
      pieces.push_back(ev.text);
      // Streamed text never shows a prefix of the stop string that later turns out to be it.
      EXPECT_EQ(run.results[ev.id].text.find(stop), std::string::npos);
      if (ev.finished) {
        run.results[ev.id].reason = ev.reason;
        run.results[ev.id].message = ev.message;
        matched = ev.matched_stop;
      }
    }
  const EngineResult& got = run.results[id];
  EXPECT_EQ(got.text, full.text.substr(0, at));
  EXPECT_EQ(finish_reason_name(got.reason), std::string("stopped"));
  EXPECT_NE(got.message.find(stop), std::string::npos) << got.message;
  EXPECT_EQ(matched, stop);
  EXPECT_LT(got.tokens.size(), full.tokens.size());
  EXPECT_TRUE(std::equal(got.tokens.begin(), got.tokens.end(), full.tokens.begin()));
}

TEST(EngineTest, PastDeadlineEndsOnlyThatRequest) {
  TestModel& m = stories();
  Engine e(*m.model, m.tok.get(), small_config(*m.model, 64));
  std::vector<EngineRequest> reqs = requests(3, 100, 10, false);
  reqs[1].deadline = EngineClock::now() - std::chrono::seconds(1);
  std::vector<uint64_t> ids;
  for (const EngineRequest& r : reqs) ids.push_back(e.submit(r).id);
  Outcome run;
  drive(e, run);
  EXPECT_EQ(finish_reason_name(run.results[ids[1]].reason), std::string("deadline"));
  EXPECT_TRUE(run.results[ids[1]].tokens.empty());
  EXPECT_EQ(run.results[ids[0]].tokens, expected_for(m, reqs[0]).tokens);
  EXPECT_EQ(run.results[ids[2]].tokens, expected_for(m, reqs[2]).tokens);
}

TEST(EngineTest, TokenIdRequestsWithoutTokenizer) {
  TestModel& m = stories();
  Engine e(*m.model, nullptr, small_config(*m.model, 64));
  EngineRequest r;
  r.text = "Once";
  EXPECT_NE(e.submit(r).error.find("needs a tokenizer"), std::string::npos);
  r.text.clear();
  r.prompt = m.tok->encode("Once upon a time", true);
  r.max_new_tokens = 12;
  r.sampling.temperature = 0;
  const uint64_t id = e.submit(r).id;
  ASSERT_NE(id, 0u);
  auto results = e.run_to_completion();
  r.text = "Once upon a time";
  EXPECT_EQ(results[id].tokens, expected_for(m, r).tokens);
  EXPECT_TRUE(results[id].text.empty());
}

// Perplexity through the paged cache (`latte perplexity --paged-cache`): an f32 paged cache is the
// contiguous computation in another layout; bf16 and an i8 MLA latent are what a lossy cache
// costs, held to the bound of 1 % in perplexity on the shipped validation text.
TEST(PagedCachePerplexity, F32IsExactAndLossyCachesStayWithinOnePercent) {
  std::string text = read_text_file(kStoriesText);
  text.resize(20000);
  for (TestModel* m : stories_models()) {
    SCOPED_TRACE(m->name);
    const std::vector<int32_t> tokens = m->tok->encode(text, false);
    PerplexityParams p;
    p.window = 255;
    p.batch = 2;
    const int32_t bos = m->model->config().bos_id;
    const double base = perplexity(*m->model, tokens, bos, p).perplexity;
    p.paged_cache = DType::f32;
    EXPECT_NEAR(perplexity(*m->model, tokens, bos, p).perplexity, base, 1e-5 * base);
    std::vector<DType> lossy{DType::bf16};
    if (m->model->config().is_mla()) lossy.push_back(DType::i8);
    for (DType dt : lossy) {
      p.paged_cache = dt;
      const double got = perplexity(*m->model, tokens, bos, p).perplexity;
      EXPECT_NEAR(got, base, 0.01 * base) << dtype_name(dt);
      EXPECT_NE(got, base) << dtype_name(dt) << ": a lossy cache that changes nothing was not used";
      std::printf("%s: perplexity %.5f contiguous f32, %.5f paged %s\n", m->name.c_str(), base, got, dtype_name(dt));
    }
  }
}

}  // namespace
}  // namespace latte
