#include "trainer/loop/trainer.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/backend/registry.h"
#include "core/base/file_io.h"
#include "core/base/process_memory.h"
#include "core/checkpoint/checkpoint.h"
#include "core/checkpoint/safetensors_file.h"
#include "core/model/transformer.h"
#include "trainer/data/batch_sampler.h"
#include "trainer/optim/lr_schedule.h"
#include "trainer/planner/planner.h"
#include "trainer/train_state/train_checkpoint.h"

namespace latte {

namespace fs = std::filesystem;

namespace {

struct RankModel {
  Checkpoint checkpoint;
  std::unique_ptr<Transformer> model;
};

// Loads a checkpoint and keeps this TP rank's f32 shard of it (every rank reads the file; the
// split table slices it, model_tensors.h). Each rank checks only its own slices for NaN/Inf (the
// ranks together cover every weight): checking the whole file would read all of it into every
// rank's resident memory, a peak of one full model per rank that the run itself never needs.
RankModel load_rank_model(const std::string& path, Communicator& tp, Backend& backend) {
  RankModel m;
  LoadOptions lo;
  lo.check_finite = false;
  m.checkpoint = load_checkpoint(path, lo);
  const ModelConfig& c = m.checkpoint.config;
  const TpLayout layout = tp_layout(c, tp.rank(), tp.size());
  TensorStore local = shard_store(c, layout, m.checkpoint.tensors);
  local.check_all_finite();
  ModelWeights w = weights_to_f32(c, weights_from_store(c, local, layout));
  m.model = std::make_unique<Transformer>(c, std::move(w), backend, &tp);
  // The f32 master copy is all training needs: release the file's tensors (and their mapping).
  m.checkpoint.tensors = TensorStore{};
  return m;
}

// What can be checked from the checkpoints' configs alone, before a weight is read or a tensor
// allocated: the TP size divides the heads, MLP width and vocabulary (tp_layout); no KV head is
// shared between TP ranks (backward cannot train those); --seq fits the context; with
// --max-memory, the planner's per-rank total for exactly this layout (planner::train_request: f32
// weights, gradients, Adam and activations, as this trainer allocates them) is within it. The
// teacher of --teacher is checked for its TP split and vocabulary, but its memory is not planned.
// Every rank computes the same and fails alike, before any collective, so a refused run ends on
// every rank without a hang and leaves nothing in --out.
void check_run_layout(const TrainOptions& o, int64_t tp, int64_t dp) {
  const ModelConfig c = load_checkpoint_config(o.model_path);
  planner::Plan plan;
  try {
    plan = planner::make_plan(planner::train_request(c, tp, dp, o.micro_batch, o.seq, o.optim.zero1, o.recompute));
  } catch (const Error& e) {
    fail(e.code(), "cannot train ", o.model_path, ": ", e.what());
  }
  if (o.max_memory > 0) {
    const std::string problem = planner::memory_limit_problem(plan, o.max_memory);
    LATTE_REQUIRE(problem.empty(), ErrorCode::invalid_argument, "cannot train ", o.model_path, ": ", problem);
  }
  if (!o.teacher_path.empty()) {
    LATTE_REQUIRE(o.distill_weight > 0, ErrorCode::invalid_argument, "--teacher needs --distill-weight > 0");
    const ModelConfig t = load_checkpoint_config(o.teacher_path);
    try {
      tp_layout(t, 0, tp);
    } catch (const Error& e) {
      fail(e.code(), "cannot use teacher ", o.teacher_path, ": ", e.what());
    }
    LATTE_REQUIRE(t.vocab_size == c.vocab_size, ErrorCode::invalid_argument, "teacher ", o.teacher_path,
                  " has a vocabulary of ", t.vocab_size, ", the student ", c.vocab_size);
  }
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::string format_duration(double s) {
  char buf[32];
  if (s >= 3600) std::snprintf(buf, sizeof buf, "%dh%02dm", int(s / 3600), int(s / 60) % 60);
  else if (s >= 60) std::snprintf(buf, sizeof buf, "%dm%02ds", int(s / 60), int(s) % 60);
  else std::snprintf(buf, sizeof buf, "%.0fs", s);
  return buf;
}

// Mean over ranks of a scalar.
// Every rank's peak resident memory (VmHWM), MiB, in rank order: each rank fills its own slot
// and a sum over the group assembles them (host tensors, as mean_over).
std::vector<double> peak_rss_mib_per_rank(Communicator& comm) {
  std::vector<float> v(size_t(comm.size()), 0.0f);
  v[size_t(comm.rank())] = float(double(peak_resident_bytes()) / 1048576.0);
  Tensor t = Tensor::from_vector(v, {comm.size()});
  if (comm.size() > 1) comm.all_reduce(t, ReduceOp::sum);
  return std::vector<double>(t.f32(), t.f32() + comm.size());
}

double mean_over(Communicator& comm, double v) {
  Tensor t = Tensor::from_vector({float(v)}, {1});
  if (comm.size() > 1) comm.all_reduce(t, ReduceOp::sum);
  return double(t.f32()[0]) / double(comm.size());
}

// Distillation: KL(p_teacher || p_student) per token, averaged over the batch's counted targets,
// and its gradient with respect to this rank's slice of the student's logits,
// weight * (p_student - p_teacher) / n. teacher_logits are the full [N, V] logits (the teacher's
// forward gathers them); the student's are vocab-parallel, so the student's log-sum-exp comes from
// the cross-entropy (acts.logsumexp) when TP > 1.
// The logits are read on the host and the gradient is computed there, then handed to the
// student's backend (Backend::to_device; both are no-ops on the CPU).
double distillation(Backend& be, const Activations& acts, const Tensor& teacher_logits, const TpLayout& tp,
                    Communicator& comm, double weight, Tensor& dlogits) {
  const int64_t N = acts.logits.dim(0), Vl = tp.vocab, V = teacher_logits.dim(1);
  const Tensor student_host = be.to_host(acts.logits), teacher_host = be.to_host(teacher_logits);
  const Tensor lse_host = tp.size > 1 ? be.to_host(acts.logsumexp) : Tensor();
  const float* zs = student_host.f32();
  const float* zt = teacher_host.f32();
  std::vector<double> lse_s(static_cast<size_t>(N)), lse_t(static_cast<size_t>(N));
  for (int64_t n = 0; n < N; ++n) {
    double m = zt[n * V];
    for (int64_t v = 1; v < V; ++v) m = std::max(m, double(zt[n * V + v]));
    double s = 0;
    for (int64_t v = 0; v < V; ++v) s += std::exp(double(zt[n * V + v]) - m);
    lse_t[size_t(n)] = m + std::log(s);
    if (tp.size > 1) {
      lse_s[size_t(n)] = lse_host.f32()[n];
    } else {
      double ms = zs[n * Vl];
      for (int64_t v = 1; v < Vl; ++v) ms = std::max(ms, double(zs[n * Vl + v]));
      double ss = 0;
      for (int64_t v = 0; v < Vl; ++v) ss += std::exp(double(zs[n * Vl + v]) - ms);
      lse_s[size_t(n)] = ms + std::log(ss);
    }
  }
  const double inv_n = 1.0 / double(acts.n_targets);
  double kl_local = 0;
  Tensor d_host = Tensor::empty(acts.logits.shape());
  float* d = d_host.f32();
  for (int64_t n = 0; n < N; ++n) {
    const bool counted = acts.targets[size_t(n)] >= 0;
    for (int64_t v = 0; v < Vl; ++v) {
      const double lt = double(zt[n * V + tp.vocab0 + v]) - lse_t[size_t(n)];
      const double ls = double(zs[n * Vl + v]) - lse_s[size_t(n)];
      const double pt = std::exp(lt), ps = std::exp(ls);
      if (counted) kl_local += pt * (lt - ls);
      d[n * Vl + v] = counted ? float(weight * inv_n * (ps - pt)) : 0.0f;
    }
  }
  dlogits = be.to_device(d_host);
  Tensor kl = Tensor::from_vector({float(kl_local)}, {1});
  if (comm.size() > 1) comm.all_reduce(kl, ReduceOp::sum);  // the vocabulary is split over TP
  return double(kl.f32()[0]) * inv_n;
}

// Keeps the metrics lines of steps <= step (a resumed run rewrites what the killed run logged
// past its last checkpoint, so the file reads as one uninterrupted run).
void truncate_metrics(const std::string& path, int64_t step) {
  if (!file_exists(path)) return;
  std::istringstream in(read_text_file(path));
  std::string line, kept;
  while (std::getline(in, line)) {
    try {
      auto j = nlohmann::json::parse(line);
      if (j.value("step", int64_t(0)) <= step) kept += line + "\n";
    } catch (const nlohmann::json::exception&) {
      // a torn last line from a killed run
    }
  }
  atomic_write_string(path, kept);
}

}  // namespace

TrainResult train(const TrainOptions& o, Communicator& world, Communicator& tp, Communicator& dp) {
  LATTE_REQUIRE(o.steps >= 1 && o.micro_batch >= 1 && o.grad_accum >= 1 && o.seq >= 1, ErrorCode::invalid_argument,
                "train: --steps, --micro-batch, --grad-accum and --seq must be positive");
  const bool lead = world.rank() == 0;
  check_run_layout(o, tp.size(), dp.size());
  LATTE_REQUIRE(file_exists(o.data_path), ErrorCode::io, "token shard not found: ", o.data_path,
                " (make one with latte tokenize)");
  TokenShard shard(o.data_path);
  Backend& backend = o.backend ? *o.backend : cpu_backend();
  RankModel student = load_rank_model(o.model_path, tp, backend);
  const ModelConfig& c = student.model->config();
  const TpLayout layout = student.model->tp();
  student.model->set_recompute(o.recompute);
  LATTE_REQUIRE(int64_t(shard.header().vocab_size) <= c.vocab_size, ErrorCode::invalid_argument, "token shard ",
                o.data_path, " was made with a vocabulary of ", shard.header().vocab_size, " tokens (",
                shard.header().tokenizer_id, "), the model has ", c.vocab_size);
  if (student.checkpoint.tokenizer)
    LATTE_REQUIRE(student.checkpoint.tokenizer->id() == shard.header().tokenizer_id, ErrorCode::invalid_argument,
                  "token shard ", o.data_path, " was made with tokenizer ", shard.header().tokenizer_id, ", the model's is ",
                  student.checkpoint.tokenizer->id());

  const int64_t val_tokens = o.val_tokens > 0 ? o.val_tokens : std::min<int64_t>(shard.size() / 10, 32768);
  BatchSampler sampler(shard, o.seq, val_tokens, dp.rank(), dp.size(), o.seed);
  std::unique_ptr<RankModel> teacher;
  if (!o.teacher_path.empty()) {
    // check_run_layout has held its TP split and vocabulary against the student's.
    teacher = std::make_unique<RankModel>(load_rank_model(o.teacher_path, tp, backend));
  }

  // Parameters, their gradients, and the optimizer over them.
  ModelWeights& weights = student.model->weights();
  ModelWeights grads = weights_zeros_like(c, layout, backend);  // the model accumulates into them
  std::vector<OptimParam> params;
  std::vector<std::string> names;
  std::vector<Tensor*> grad_slots;
  for_each_weight(c, layout, grads, [&](const std::string&, const Shape&, Tensor& g) { grad_slots.push_back(&g); });
  size_t k = 0;
  for_each_weight(c, layout, weights, [&](const std::string& name, const Shape& global, Tensor& w) {
    const TensorSlice s = tensor_slice(c, layout, name, global);
    const bool attention = name.find("self_attn.") != std::string::npos;
    params.push_back({name, &w, grad_slots[k++], s.split == TpSplit::replicated,
                      !o.train_attention_only || attention, w.ndim() >= 2});
  });
  AdamWSettings settings = o.optim;
  AdamW optim(params, settings, dp, tp);
  LrSchedule schedule{o.lr, o.min_lr, o.warmup, o.steps};
  const TrainLayout tl{tp.rank(), tp.size(), dp.rank(), dp.size(), settings.zero1};

  fs::create_directories(o.out_dir);
  const std::string metrics_path = (fs::path(o.out_dir) / "metrics.jsonl").string();
  int64_t start = 0;
  if (o.resume) {
    auto dir = latest_checkpoint(o.out_dir);
    if (dir) {
      LoadedTrainState st = load_train_checkpoint(*dir, tl, c, o.data_path, shard.size());
      for_each_weight(c, layout, weights, [&](const std::string& name, const Shape&, Tensor& w) {
        backend.copy(w, backend.to_device(st.model_shard.get(name, w.shape())));
      });
      AdamW::Meta meta = optim.meta();
      meta.steps = st.state.optim.steps;
      optim.load_state(st.optim_state, meta);
      start = st.state.step;
      LATTE_REQUIRE(st.state.seed == o.seed, ErrorCode::invalid_argument, "cannot resume from ", *dir,
                    ": it used --seed ", st.state.seed, ", this run --seed ", o.seed);
      if (lead) {
        truncate_metrics(metrics_path, start);
        std::fprintf(stderr, "latte: resuming from %s (step %lld)\n", dir->c_str(), (long long)start);
      }
    } else if (lead) {
      std::fprintf(stderr, "latte: --resume: no complete checkpoint in %s, starting from step 0\n", o.out_dir.c_str());
    }
  } else if (lead && file_exists(metrics_path)) {
    atomic_write_string(metrics_path, "");
  }
  world.barrier();

  std::ofstream metrics;
  if (lead) metrics.open(metrics_path, std::ios::app);
  const bool tty = isatty(STDERR_FILENO);
  const int64_t tokens_per_step = o.micro_batch * o.grad_accum * o.seq * dp.size();
  auto t0 = std::chrono::steady_clock::now();
  TrainResult result;
  std::string last_metrics;

  auto evaluate = [&]() {
    const int64_t rows = o.micro_batch;
    int64_t batches = sampler.val_batches(rows);
    if (o.eval_batches > 0) batches = std::min(batches, o.eval_batches);
    double sum = 0, count = 0;
    for (int64_t b = dp.rank(); b < batches; b += dp.size()) {
      Batch vb = sampler.val_batch(b, rows);
      Activations acts;
      const float loss = student.model->forward_train(vb.tokens, vb.targets, vb.rows, acts);
      sum += double(loss) * double(acts.n_targets);
      count += double(acts.n_targets);
    }
    Tensor t = Tensor::from_vector({float(sum), float(count)}, {2});
    if (dp.size() > 1) dp.all_reduce(t, ReduceOp::sum);
    return double(t.f32()[0]) / double(t.f32()[1]);
  };

  auto save = [&](int64_t step_done) {
    CheckpointState st;
    st.step = step_done;
    st.seed = o.seed;
    st.layout = tl;
    st.config = c;
    st.data_path = o.data_path;
    st.data_tokens = shard.size();
    st.optim = optim.meta();
    st.metrics_json = last_metrics;
    save_train_checkpoint(o.out_dir, st, weights_to_store(c, weights, layout), optim.state(), world);
  };

  // The starting point on the held-out split, so the curve shows what training recovered.
  if (start == 0) {
    const double val = evaluate();
    if (lead) {
      std::ostringstream line;
      line.precision(7);
      line << "{\"step\":0,\"val_loss\":" << val << ",\"val_perplexity\":" << std::exp(val) << "}";
      metrics << line.str() << "\n";
      metrics.flush();
      if (o.progress) std::fprintf(stderr, "step 0: held-out loss %.4f, perplexity %.4f\n", val, std::exp(val));
    }
  }

  int64_t step = start;
  Activations acts;  // across steps, so that its logits buffers are reused (activations.h says why)
  for (; step < o.steps; ++step) {
    if (o.stop_after > 0 && step - start >= o.stop_after) break;
    const auto ts = std::chrono::steady_clock::now();
    double loss_sum = 0, kl_sum = 0;
    for (int64_t micro = 0; micro < o.grad_accum; ++micro) {
      Batch b = sampler.train_batch(step, micro, o.micro_batch);
      const float loss = student.model->forward_train(b.tokens, b.targets, b.rows, acts);
      LATTE_REQUIRE(std::isfinite(loss), ErrorCode::numerics, "loss is ", loss, " at step ", step,
                    "; stopping without an update (the last checkpoint in ", o.out_dir, "/checkpoints is intact)");
      loss_sum += loss;
      if (teacher) {
        KvCache cache = teacher->model->make_cache(b.rows, b.seq);
        Tensor tl_full = teacher->model->forward(b.tokens, b.rows, cache, LogitsFor::all_positions, MlaForm::expanded);
        Tensor dlogits;
        kl_sum += distillation(backend, acts, tl_full, layout, tp, o.distill_weight, dlogits);
        student.model->backward(acts, grads, &dlogits);
      } else {
        student.model->backward(acts, grads);
      }
      acts.drop_saved();
    }
    double gnorm = 0;
    try {
      gnorm = optim.reduce_and_clip(1.0 / double(o.grad_accum));
    } catch (const Error& e) {
      fail(ErrorCode::numerics, "step ", step, ": ", e.what(), "; the last checkpoint in ", o.out_dir,
           "/checkpoints is intact");
    }
    const double lr = schedule.at(step);
    optim.step(lr);
    optim.zero_grad();

    const double loss = mean_over(dp, loss_sum / double(o.grad_accum));
    const double kl = teacher ? mean_over(dp, kl_sum / double(o.grad_accum)) : 0.0;
    const std::vector<double> peak_rss = peak_rss_mib_per_rank(world);
    const int64_t done = step + 1;
    const double elapsed = seconds_since(t0), step_s = seconds_since(ts);
    const double tok_s = double(tokens_per_step * (done - start)) / elapsed;
    const double eta = elapsed / double(done - start) * double(o.steps - done);
    result.final_loss = loss;
    if (lead) {
      std::ostringstream line;
      line.precision(7);
      line << "{\"step\":" << done << ",\"loss\":" << loss << ",\"lr\":" << lr << ",\"grad_norm\":" << gnorm
           << ",\"tokens\":" << tokens_per_step * done << ",\"tokens_per_s\":" << tok_s << ",\"step_s\":" << step_s;
      if (teacher) line << ",\"distill_kl\":" << kl;
      line << ",\"peak_rss_mib\":[";
      for (size_t r = 0; r < peak_rss.size(); ++r) line << (r ? "," : "") << std::lround(peak_rss[r]);
      line << "]}";
      last_metrics = line.str();
      metrics << last_metrics << "\n";
      metrics.flush();
      if (o.progress) {
        std::fprintf(stderr, "%sstep %lld/%lld  loss %.4f  lr %.2e  gnorm %.3f  %.0f tok/s  ETA %s%s",
                     tty ? "\r" : "", (long long)done, (long long)o.steps, loss, lr, gnorm, tok_s,
                     format_duration(eta).c_str(), tty ? "   " : "\n");
      }
    }
    const bool last = done == o.steps;
    if ((o.eval_every > 0 && done % o.eval_every == 0) || last) {
      const double val = evaluate();
      result.final_val_loss = val;
      if (lead) {
        std::ostringstream line;
        line.precision(7);
        line << "{\"step\":" << done << ",\"val_loss\":" << val << ",\"val_perplexity\":" << std::exp(val) << "}";
        metrics << line.str() << "\n";
        metrics.flush();
        if (o.progress)
          std::fprintf(stderr, "%sstep %lld: held-out loss %.4f, perplexity %.4f\n", tty ? "\n" : "", (long long)done,
                       val, std::exp(val));
      }
    }
    if ((o.save_every > 0 && done % o.save_every == 0) || last) save(done);
  }
  result.steps_done = step;
  if (lead && o.progress && tty) std::fprintf(stderr, "\n");

  // The merged, standard model: rank 0 reads every TP rank's shard of the final checkpoint.
  if (step == o.steps) {
    if (lead) {
      auto dir = latest_checkpoint(o.out_dir);
      std::vector<TensorStore> shards;
      for (int64_t r = 0; r < tp.size(); ++r)
        shards.push_back(read_safetensors_file((fs::path(*dir) / str_cat("model-tp", r, ".safetensors")).string()));
      Checkpoint merged;
      merged.config = c;
      merged.tensors = merge_shards(c, shards);
      merged.tokenizer = std::move(student.checkpoint.tokenizer);
      merged.format = "safetensors";
      ExportOptions eo;
      eo.keep_rope_layout = true;  // the training checkpoint's rows are kept as they are
      eo.llama2c_tokenizer = o.tokenizer_path;
      const fs::path beside = fs::path(o.model_path) / "tokenizer.bin";
      if (eo.llama2c_tokenizer.empty() && is_directory(o.model_path) && file_exists(beside.string()))
        eo.llama2c_tokenizer = beside.string();
      export_checkpoint(merged, (fs::path(o.out_dir) / "final").string(), eo);
    }
    world.barrier();
  }
  return result;
}

}  // namespace latte
