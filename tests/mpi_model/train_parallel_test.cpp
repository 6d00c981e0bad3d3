// The trainer under MPI, on stories260K with tiny settings (seq 32, micro-batch 2, 3 steps):
//  - train() with tp = world, dp = 1 against the same run computed alone on every rank
//    (SoloCommunicator for world, tp and dp; each rank its own out dir): the same batches, so the
//    per-step losses, the final held-out loss and the final weights must agree up to float32
//    reordering (TP sums in another order, model_test_util.h);
//  - ZeRO-1 with dp = world (tp 1) against the unsharded dp = world run: the same batches and the
//    same update; ZeRO-1 reduce-scatters the gradients and sums the norm over disjoint chunks
//    instead of all-reducing, again a float32 reordering.
// The token shard is written once by rank 0 (write_token_shard) and read by all after a barrier.
//
// What is compared: metrics.jsonl's per-step losses (written with 7 significant digits, so the
// file itself rounds by up to 3.4e-7 relative at these losses), TrainResult's final loss and
// held-out loss, and the final exported weights (final/model.safetensors), normwise per tensor.
// Each comparison runs twice:
//  - AdamW eps = 1e-3 (the "rounding" check). Losses within 2e-6 relative, weights within 1e-5
//    normwise. With this eps the update of an element with a tiny gradient is linear in it, so a
//    gradient that differs by rounding gives an update that differs by rounding. Measured TP vs
//    solo: losses 6.9e-7 (the file's rounding), weights 4.6e-7 (TP 2) and 5.5e-7 (TP 4).
//  - AdamW's default eps = 1e-8. Losses within 1e-4 relative, weights not compared. Adam's first
//    steps divide every gradient element by its own magnitude (m / sqrt(v)), so an element whose
//    gradient is within rounding noise of zero moves by up to +-lr whichever sign the rounding gave
//    it: measured at TP 2, a few dozen of the 11,008 elements of a matrix differ by 1e-5 to 1.2e-3
//    after 3 steps, and the losses by up to 2.5e-5 relative (3.4e-5 at TP 4) at steps 2, 3 and
//    held-out; step 1, before any update, by 6.9e-7. With eps = 1e-3 the same runs agree to
//    rounding, which is what shows that the larger figure is this amplification, not a TP error.
// ZeRO-1 vs unsharded, measured: bit-identical at dp 2 (a sum of two terms does not depend on the
// order); at dp 4 losses 7.2e-8 (eps 1e-3) and 5.8e-7 (default eps) relative, weights 1.6e-7.
// A wrong update (a missing DP mean, a skipped shard, wrong clipping) changes weights by up to
// lr = 2e-3 per step on weights of magnitude ~0.3-1, i.e. ~1e-3 to 1e-2 normwise, 100x or more above
// the 1e-5 weight tolerance (an estimate; no such bug was planted in the trainer).
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/base/file_io.h"
#include "core/tokenizer/tokenizer.h"
#include "tests/mpi_model/model_test_util.h"
#include "trainer/data/token_shard.h"
#include "trainer/loop/trainer.h"

namespace latte::test {
namespace {

struct Precision {
  const char* name;
  double adam_eps;
  double loss_rel_tol;
  double weight_rel_tol;  // 0: weights not compared
};
constexpr Precision kPrecisions[] = {
    {"adam eps 1e-3", 1e-3, 2e-6, 1e-5},
    {"adam eps 1e-8 (default)", 1e-8, 1e-4, 0},
};

std::vector<double> losses_of(const std::string& metrics) {
  std::vector<double> out;
  std::istringstream in(read_text_file(metrics));
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    if (j.contains("loss")) out.push_back(j["loss"].get<double>());
  }
  return out;
}

std::string write_shard(const std::string& dir) {
  const std::string path = dir + "/data.bin";
  if (world_rank() == 0) {
    auto tok = load_tokenizer(kStoriesTok);
    std::string text = read_text_file(kStoriesText).substr(0, 20000);
    write_token_shard(path, tok->encode(text, false), tok->vocab_size(), tok->id());
  }
  MPI_Barrier(MPI_COMM_WORLD);  // nobody reads the shard before rank 0 has renamed it into place
  return path;
}

TrainOptions tiny_run(const std::string& data, const std::string& out, const Precision& p) {
  TrainOptions o;
  o.model_path = kStoriesBin;
  o.data_path = data;
  o.out_dir = out;
  o.tokenizer_path = kStoriesTok;
  o.steps = 3;
  o.micro_batch = 2;
  o.grad_accum = 1;
  o.seq = 32;
  o.lr = 2e-3;
  o.warmup = 1;
  o.eval_every = 0;  // only at the end
  o.eval_batches = 2;
  o.save_every = 0;  // only at the end
  o.val_tokens = 1000;
  o.progress = false;
  o.optim.eps = p.adam_eps;
  return o;
}

// Compares run `got` (out dir a) with run `ref` (out dir b); returns the worst loss and weight
// deviations (relative; weights normwise) on this rank.
std::pair<double, double> compare_runs(const TrainResult& got, const std::string& a, const TrainResult& ref,
                                       const std::string& b, const Precision& p, const std::string& what) {
  double worst_loss = 0, worst_weight = 0;
  auto check = [&](double g, double e, const std::string& which) {
    const double rel = std::abs(g - e) / std::abs(e);
    worst_loss = std::max(worst_loss, rel);
    EXPECT_LE(rel, p.loss_rel_tol) << what << ", " << p.name << ": " << which << ": " << g << " vs " << e;
  };
  EXPECT_EQ(got.steps_done, 3);
  const std::vector<double> lg = losses_of(a + "/metrics.jsonl"), lr = losses_of(b + "/metrics.jsonl");
  EXPECT_EQ(lg.size(), 3u) << a;
  EXPECT_EQ(lr.size(), 3u) << b;
  for (size_t i = 0; i < std::min(lg.size(), lr.size()); ++i) check(lg[i], lr[i], "step " + std::to_string(i + 1) + " loss");
  check(got.final_loss, ref.final_loss, "final loss");
  check(got.final_val_loss, ref.final_val_loss, "final held-out loss");
  if (p.weight_rel_tol > 0) {
    const Checkpoint wa = load_checkpoint(a + "/final"), wb = load_checkpoint(b + "/final");
    EXPECT_EQ(wa.tensors.entries().size(), wb.tensors.entries().size());
    for (const auto& [name, entry] : wb.tensors.entries()) {
      if (!wa.tensors.has(name)) {
        ADD_FAILURE() << what << ": " << name << " is missing from " << a << "/final";
        continue;
      }
      worst_weight = std::max(worst_weight, expect_close(wa.tensors.get(name), entry.tensor,
                                                         what + ", " + p.name + ": final " + name, p.weight_rel_tol));
    }
  }
  return {world_max(worst_loss), world_max(worst_weight)};
}

std::string losses_text(const std::string& metrics) {
  std::string s;
  for (double l : losses_of(metrics)) {
    if (!s.empty()) s += ' ';
    s += std::to_string(l);
  }
  return s;
}

TEST(TrainParallelTest, TensorParallelRunMatchesSingleRankRun) {
  const std::string dir = shared_temp_dir("train_tp");
  const std::string data = write_shard(dir);
  for (const Precision& p : kPrecisions) {
    const std::string tag = p.adam_eps < 1e-6 ? "default" : "eps";
    SoloCommunicator solo;
    const std::string solo_dir = dir + "/solo-" + tag + "-rank" + std::to_string(world_rank());
    const TrainResult ref = train(tiny_run(data, solo_dir, p), solo, solo, solo);
    TrainResult got;
    {
      ParallelRuntime rt(quiet(world_size()));
      ASSERT_EQ(rt.dp_size(), 1);
      got = train(tiny_run(data, dir + "/tp-" + tag, p), rt.world(), rt.tp(), rt.dp());
    }
    const std::string what = "tp " + std::to_string(world_size()) + " vs solo";
    auto [loss_dev, weight_dev] = compare_runs(got, dir + "/tp-" + tag, ref, solo_dir, p, what);
    measured("train %s, %s: losses %s; worst loss rel diff %.2e, final weights rel %.2e%s", what.c_str(), p.name,
             losses_text(solo_dir + "/metrics.jsonl").c_str(), loss_dev, weight_dev,
             p.weight_rel_tol > 0 ? "" : " (not compared)");
  }
  remove_shared_temp_dir(dir);
}

TEST(TrainParallelTest, ZeroOneMatchesUnshardedDataParallelRun) {
  const std::string dir = shared_temp_dir("train_zero");
  const std::string data = write_shard(dir);
  ParallelRuntime rt(quiet(1));
  ASSERT_EQ(rt.dp_size(), world_size());
  for (const Precision& p : kPrecisions) {
    const std::string tag = p.adam_eps < 1e-6 ? "default" : "eps";
    TrainOptions plain = tiny_run(data, dir + "/plain-" + tag, p), zero = tiny_run(data, dir + "/zero1-" + tag, p);
    zero.optim.zero1 = true;
    const TrainResult a = train(plain, rt.world(), rt.tp(), rt.dp());
    const TrainResult b = train(zero, rt.world(), rt.tp(), rt.dp());
    const std::string what = "dp " + std::to_string(world_size()) + " zero1 vs plain";
    auto [loss_dev, weight_dev] = compare_runs(b, zero.out_dir, a, plain.out_dir, p, what);
    measured("train %s, %s: losses %s; worst loss rel diff %.2e, final weights rel %.2e%s", what.c_str(), p.name,
             losses_text(plain.out_dir + "/metrics.jsonl").c_str(), loss_dev, weight_dev,
             p.weight_rel_tol > 0 ? "" : " (not compared)");
  }
  remove_shared_temp_dir(dir);
}

}  // namespace
}  // namespace latte::test
