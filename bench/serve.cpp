// Serving throughput and latency of the engine (inference/engine/engine.h) on a synthetic
// workload, for a GQA source model and its MHA2MLA conversions at several latent ranks, each run
// with the same workload and the same KV-cache byte budget in one process: the latent cache holds
// more tokens per byte, so more sequences fit at once. Per model it prints
//   output tokens/s (all generated tokens over the run's wall time, first arrival to last finish),
//   time to first token and inter-token latency p50 / p99 (per request, from its arrival),
//   decode-only tokens/s (steps after the last admission with no prefill tokens: steady decoding),
//   peak cache blocks used, max concurrent sequences, preemptions,
// plus one JSON line ({"bench":"serve",...}) per model.
//
//   build/bench/serve [--model PATH] [--requests 32] [--prompt 128] [--output 64] [--rate 0]
//                     [--cache-gib 0.25] [--dtype f32|bf16|i8] [--block-size 16] [--threads 2]
//                     [--max-tokens-per-step 512] [--max-running 64] [--rope-pairs 4] [--d-kv 8,16,32]
//                     [--weights f32|bf16] [--no-source] [--duration S] [--report-every 10] [--seed 1]
//                     [--profile]
//
// --rate R: Poisson arrivals at R requests/s (0: all at once). The model defaults to
// models/smollm2-135m-hf when present, else stories260K (with --rope-pairs 1 --d-kv 2,4 defaults:
// head_dim is 8 there). MLA conversions use the "high" RoPE strategy (no calibration text; serving
// cost does not depend on which pairs are kept). --dtype i8 quantizes the MLA latent and RoPE
// keys; the GQA source cannot hold an i8 cache and runs bf16 then (its JSON line says so).
//
// --profile runs each model on bench::ProfilingBackend and prints the per-op table of its
// decode-only steps (after the first) once its workload ends.
//
// --duration S (soak test): instead of the fixed workload, keep --requests requests in flight
// (or Poisson arrivals at --rate) for S seconds per model, and print a JSON line with resident
// memory (/proc/self/statm) and the engine's counters every --report-every seconds: resident
// memory that keeps growing over a steady load is a leak. The last line gives the growth: the
// peak after warm-up (the first fifth of the run) over the resident memory at warm-up.
#include <cblas.h>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench/profiling_backend.h"
#include "core/backend/registry.h"
#include "core/base/file_io.h"
#include "inference/engine/engine.h"
#include "inference/engine/loaded_model.h"
#include "trainer/mha2mla/convert.h"
#include "latte_build_config.h"
#include "core/backend/cpu/openblas_kernels.h"

using namespace latte;

namespace {

using Clock = std::chrono::steady_clock;

struct Args {
  std::string model;
  int64_t requests = 32, prompt = 128, output = 64;
  double rate = 0, cache_gib = 0.25;
  DType dtype = DType::f32;
  int32_t block_size = 16;
  int threads = 2;
  int64_t max_tokens_per_step = 512;
  int32_t max_running = 64;
  int64_t rope_pairs = -1;
  std::vector<int64_t> d_kv;
  bool weights_bf16 = false;
  bool source = true;
  double duration = 0, report_every = 10;
  uint64_t seed = 1;
  bool profile = false;
};

struct Variant {
  std::string label;
  ModelConfig config;
  std::unique_ptr<Transformer> model;
  int64_t d_kv = 0;  // 0: the GQA source
  std::unique_ptr<bench::ProfilingBackend> prof;  // --profile: the model runs on it
};

// The backend a variant's model runs on: the CPU backend, or (--profile) a profiling decorator.
Backend& variant_backend(const Args& a, Variant& v) {
  if (!a.profile) return cpu_backend();
  v.prof = std::make_unique<bench::ProfilingBackend>(cpu_backend());
  return *v.prof;
}

double seconds_since(Clock::time_point t0, Clock::time_point t = Clock::now()) {
  return std::chrono::duration<double>(t - t0).count();
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  // Nearest rank: the smallest value with at least p% of the values at or below it.
  const double rank = std::ceil(p / 100.0 * double(v.size()));
  return v[size_t(std::clamp(rank - 1, 0.0, double(v.size() - 1)))];
}

double resident_mib() {
  std::ifstream f("/proc/self/statm");
  long pages_total = 0, pages_resident = 0;
  f >> pages_total >> pages_resident;
  return double(pages_resident) * double(sysconf(_SC_PAGESIZE)) / (1024.0 * 1024.0);
}

ModelWeights cast_matrices(const ModelConfig& c, ModelWeights w, DType dtype) {
  for_each_weight(c, w, [&](const std::string&, const Shape& shape, Tensor& t) {
    if (shape.size() == 2 && t.dtype() != dtype) t = t.to(dtype);
  });
  if (c.tied_embeddings) w.lm_head = w.tok_embeddings;
  return w;
}

std::vector<Variant> make_variants(const Args& a) {
  Checkpoint src = load_checkpoint(a.model);
  const DType wdt = a.weights_bf16 ? DType::bf16 : DType::f32;
  std::vector<Variant> out;
  if (a.source) {
    Variant v{"gqa-source", src.config, nullptr, 0, nullptr};
    v.model = std::make_unique<Transformer>(
        src.config, cast_matrices(src.config, weights_to_f32(src.config, weights_from_store(src.config, src.tensors)), wdt),
        variant_backend(a, v));
    out.push_back(std::move(v));
  }
  for (int64_t d : a.d_kv) {
    ConvertOptions o;
    o.strategy = RopeStrategy::high;
    o.rope_pairs = a.rope_pairs;
    o.kv_rank_per_head = d;
    const auto t0 = Clock::now();
    Checkpoint mla = convert_to_mla(src, o, nullptr);
    std::fprintf(stderr, "serve: converted to MLA r=%lld d_kv=%lld in %.1f s\n", (long long)mla.config.rope_pairs,
                 (long long)d, seconds_since(t0));
    Variant v{"mla-r" + std::to_string(mla.config.rope_pairs) + "-dkv" + std::to_string(d), mla.config, nullptr, d,
              nullptr};
    v.model = std::make_unique<Transformer>(
        mla.config, cast_matrices(mla.config, weights_from_store(mla.config, mla.tensors), wdt), variant_backend(a, v));
    out.push_back(std::move(v));
  }
  return out;
}

// Random prompts: BOS (when the model has one), then ids above the special tokens.
std::vector<std::vector<int32_t>> make_prompts(const ModelConfig& c, int64_t n, int64_t len, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> id(3, int32_t(c.vocab_size - 1));
  std::vector<std::vector<int32_t>> out;
  for (int64_t i = 0; i < n; ++i) {
    std::vector<int32_t> p;
    if (c.bos_id >= 0) p.push_back(c.bos_id);
    while (int64_t(p.size()) < len) p.push_back(id(rng));
    out.push_back(std::move(p));
  }
  return out;
}

// Arrival times in seconds from the start: all 0, or a Poisson process at `rate` per second.
std::vector<double> arrivals(int64_t n, double rate, uint64_t seed) {
  std::vector<double> t(static_cast<size_t>(n), 0.0);
  if (rate <= 0) return t;
  std::mt19937_64 rng(seed ^ 0x5eedull);
  std::exponential_distribution<double> gap(rate);
  double now = 0;
  for (double& x : t) x = now += gap(rng);
  return t;
}

EngineConfig engine_config(const Args& a, const Variant& v, DType dtype) {
  EngineConfig c;
  c.cache_bytes = int64_t(a.cache_gib * double(1ll << 30));
  c.block_size = a.block_size;
  c.cache_dtype = dtype;
  c.max_tokens_per_step = a.max_tokens_per_step;
  c.max_running = a.max_running;
  c.prefix_caching = true;
  return c;
}

EngineRequest request_for(const std::vector<int32_t>& prompt, int64_t output) {
  EngineRequest r;
  r.prompt = prompt;
  r.max_new_tokens = output;
  r.sampling.temperature = 0;
  r.stop_at_eos = false;  // exactly `output` tokens each
  return r;
}

struct Tracked {
  double arrival = 0;
  double first = -1;
  double last = -1;
  int64_t tokens = 0;
};

void run_workload(const Args& a, Variant& v) {
  const DType dtype = (a.dtype == DType::i8 && !v.config.is_mla()) ? DType::bf16 : a.dtype;
  Engine e(*v.model, nullptr, engine_config(a, v, dtype));
  const auto prompts = make_prompts(v.config, a.requests, a.prompt, a.seed);
  const std::vector<double> when = arrivals(a.requests, a.rate, a.seed);
  std::map<uint64_t, Tracked> tracked;
  std::vector<double> itl;
  size_t next = 0;
  int64_t refused = 0, generated = 0;
  double decode_s = 0;
  int64_t decode_tokens = 0;
  // --profile: the per-op profile of the decode-only steps (reset when the first one is seen, so
  // it covers the later ones; prof_steps counts them).
  double prof_s = 0;
  int64_t prof_steps = 0, prof_tokens = 0;
  bool prof_on = false;
  const auto t0 = Clock::now();
  while (next < prompts.size() || e.has_work()) {
    double now = seconds_since(t0);
    if (!e.has_work() && next < prompts.size() && when[next] > now) {
      std::this_thread::sleep_for(std::chrono::duration<double>(when[next] - now));
      now = seconds_since(t0);
    }
    while (next < prompts.size() && when[next] <= now) {
      SubmitResult s = e.submit(request_for(prompts[next], a.output));
      if (s.ok()) {
        tracked[s.id].arrival = a.rate > 0 ? when[next] : now;
      } else {
        ++refused;
        std::fprintf(stderr, "serve: %s: %s\n", v.label.c_str(), s.error.c_str());
      }
      ++next;
    }
    const auto s0 = Clock::now();
    std::vector<EngineEvent> events = e.step();
    const double t = seconds_since(t0), dt = seconds_since(s0);
    const EngineStats st = e.stats();
    // Steady decoding: every request has arrived and been admitted, and the step ran no prefill.
    if (next == prompts.size() && st.waiting == 0 && st.last_step_prefill_tokens == 0 &&
        st.last_step_decode_tokens > 0) {
      decode_s += dt;
      decode_tokens += st.last_step_decode_tokens;
      if (v.prof && !prof_on) {
        v.prof->reset();
        prof_on = true;
      } else if (v.prof) {
        prof_s += dt, ++prof_steps, prof_tokens += st.last_step_decode_tokens;
      }
    } else if (prof_on) {
      prof_on = false;  // a step with prefill (a preempted sequence's recompute) ends the window
    }
    for (const EngineEvent& ev : events) {
      if (ev.token < 0) continue;
      Tracked& r = tracked[ev.id];
      if (r.first < 0) {
        r.first = t;
      } else {
        itl.push_back(t - r.last);
      }
      r.last = t;
      ++r.tokens;
      ++generated;
    }
  }
  const double wall = seconds_since(t0);
  std::vector<double> ttft;
  double first_arrival = 1e300;
  for (const auto& [id, r] : tracked) {
    first_arrival = std::min(first_arrival, r.arrival);
    if (r.first >= 0) ttft.push_back(r.first - r.arrival);
  }
  const EngineStats st = e.stats();
  const double span = wall - (tracked.empty() ? 0 : first_arrival);
  const double out_rate = span > 0 ? double(generated) / span : 0;
  const double dec_rate = decode_s > 0 ? double(decode_tokens) / decode_s : 0;
  const int64_t kv_per_token = PagedKvCache::bytes_per_block(v.config, 1, dtype, v.model->tp());
  std::printf("%-16s cache %s %6.1f MiB = %6lld blocks (%7lld tokens, %5lld B/token) | out %8.1f tok/s | "
              "TTFT p50 %7.1f p99 %7.1f ms | ITL p50 %6.1f p99 %6.1f ms | decode-only %8.1f tok/s | "
              "peak blocks %lld | max running %lld | preemptions %lld%s\n",
              v.label.c_str(), dtype_name(dtype), double(st.cache_bytes) / (1 << 20), (long long)st.blocks_total,
              (long long)(st.blocks_total * a.block_size), (long long)kv_per_token, out_rate,
              1e3 * percentile(ttft, 50), 1e3 * percentile(ttft, 99), 1e3 * percentile(itl, 50),
              1e3 * percentile(itl, 99), dec_rate, (long long)st.peak_blocks_used, (long long)st.max_running_seen,
              (long long)st.preemptions, refused ? (" | refused " + std::to_string(refused)).c_str() : "");
  std::printf("{\"bench\":\"serve\",\"model\":\"%s\",\"variant\":\"%s\",\"d_kv\":%lld,\"rope_pairs\":%lld,"
              "\"cache_dtype\":\"%s\",\"cache_bytes\":%lld,\"kv_bytes_per_token\":%lld,\"blocks\":%lld,"
              "\"block_size\":%d,\"requests\":%lld,\"prompt\":%lld,\"output\":%lld,\"rate\":%.3f,\"threads\":%d,"
              "\"refused\":%lld,\"generated\":%lld,\"wall_s\":%.3f,\"output_tokens_per_s\":%.2f,"
              "\"ttft_p50_ms\":%.2f,\"ttft_p99_ms\":%.2f,\"itl_p50_ms\":%.2f,\"itl_p99_ms\":%.2f,"
              "\"decode_only_tokens_per_s\":%.2f,\"peak_blocks_used\":%lld,\"max_running\":%lld,"
              "\"preemptions\":%lld,\"prefix_hits\":%lld,\"steps\":%lld}\n",
              a.model.c_str(), v.label.c_str(), (long long)v.d_kv, (long long)v.config.rope_pairs, dtype_name(dtype),
              (long long)st.cache_bytes, (long long)kv_per_token, (long long)st.blocks_total, a.block_size,
              (long long)a.requests, (long long)a.prompt, (long long)a.output, a.rate, a.threads, (long long)refused,
              (long long)generated, wall, out_rate, 1e3 * percentile(ttft, 50), 1e3 * percentile(ttft, 99),
              1e3 * percentile(itl, 50), 1e3 * percentile(itl, 99), dec_rate, (long long)st.peak_blocks_used,
              (long long)st.max_running_seen, (long long)st.preemptions, (long long)st.prefix_hits,
              (long long)st.steps);
  if (v.prof && prof_steps > 0) {
    std::printf("\nper-op profile: %s, %lld decode-only steps (%.1f sequences a step), %.2f s (%.1f tok/s)\n",
                v.label.c_str(), (long long)prof_steps, double(prof_tokens) / double(prof_steps), prof_s,
                double(prof_tokens) / prof_s);
    v.prof->report(stdout, prof_s);
    std::fputs(v.prof->json("\"source\":\"serve\",\"variant\":\"" + v.label + "\"").c_str(), stdout);
  }
  std::fflush(stdout);
}

void soak(const Args& a, Variant& v) {
  const DType dtype = (a.dtype == DType::i8 && !v.config.is_mla()) ? DType::bf16 : a.dtype;
  Engine e(*v.model, nullptr, engine_config(a, v, dtype));
  // A fixed pool of prompts reused round-robin: the workload itself allocates nothing as it runs,
  // so resident memory growth is the engine's.
  const auto prompts = make_prompts(v.config, 64, a.prompt, a.seed);
  std::mt19937_64 rng(a.seed ^ 0x50a4ull);
  std::exponential_distribution<double> gap(a.rate > 0 ? a.rate : 1.0);
  size_t k = 0;
  int64_t submitted = 0, finished = 0, generated = 0, last_generated = 0;
  const auto t0 = Clock::now();
  double next_arrival = a.rate > 0 ? gap(rng) : 0, next_report = 0, last_report_t = 0;
  // Resident memory once warmed up (the first report after a fifth of the run: the cache pool,
  // scratch buffers and prefix-cached blocks have all been touched by then), and its peak after.
  double rss_warm = -1, rss_peak = 0;
  auto report = [&](double t) {
    const EngineStats st = e.stats();
    const double rss = resident_mib();
    if (rss_warm < 0 && t >= 0.2 * a.duration) rss_warm = rss;
    if (rss_warm >= 0) rss_peak = std::max(rss_peak, rss);
    const double rate = t > last_report_t ? double(generated - last_generated) / (t - last_report_t) : 0;
    std::printf("{\"bench\":\"serve_soak\",\"variant\":\"%s\",\"t_s\":%.1f,\"rss_mib\":%.1f,\"running\":%lld,"
                "\"waiting\":%lld,\"submitted\":%lld,\"finished\":%lld,\"generated\":%lld,\"tokens_per_s\":%.1f,"
                "\"blocks_used\":%lld,\"blocks_cached\":%lld,\"preemptions\":%lld,\"prefix_hits\":%lld}\n",
                v.label.c_str(), t, rss, (long long)st.running, (long long)st.waiting,
                (long long)submitted, (long long)finished, (long long)generated, rate, (long long)st.blocks_used,
                (long long)st.blocks_cached, (long long)st.preemptions, (long long)st.prefix_hits);
    std::fflush(stdout);
    last_generated = generated;
    last_report_t = t;
  };
  for (;;) {
    const double t = seconds_since(t0);
    if (t >= next_report) {
      report(t);
      next_report += a.report_every;
    }
    if (t >= a.duration) break;
    if (a.rate > 0) {
      while (next_arrival <= t) {
        submitted += e.submit(request_for(prompts[k++ % prompts.size()], a.output)).ok();
        next_arrival += gap(rng);
      }
    } else {
      while (submitted - finished < a.requests) {
        submitted += e.submit(request_for(prompts[k++ % prompts.size()], a.output)).ok();
      }
    }
    if (!e.has_work()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      continue;
    }
    for (const EngineEvent& ev : e.step()) {
      generated += ev.token >= 0;
      finished += ev.finished;
    }
  }
  while (e.has_work())
    for (const EngineEvent& ev : e.step()) {
      generated += ev.token >= 0;
      finished += ev.finished;
    }
  report(seconds_since(t0));
  const double growth = rss_warm > 0 ? 100.0 * (rss_peak - rss_warm) / rss_warm : 0;
  std::printf("%s soak: %.0f s, %lld requests finished, %lld tokens; resident memory after warm-up %.1f MiB, "
              "peak after it %.1f MiB (%+.2f %%)\n",
              v.label.c_str(), a.duration, (long long)finished, (long long)generated, rss_warm, rss_peak, growth);
  std::printf("{\"bench\":\"serve_soak_summary\",\"variant\":\"%s\",\"duration_s\":%.0f,\"finished\":%lld,"
              "\"generated\":%lld,\"rss_warm_mib\":%.1f,\"rss_peak_mib\":%.1f,\"growth_pct\":%.3f}\n",
              v.label.c_str(), a.duration, (long long)finished, (long long)generated, rss_warm, rss_peak, growth);
  std::fflush(stdout);
}

std::vector<int64_t> parse_list(const std::string& s) {
  std::vector<int64_t> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(std::atoll(item.c_str()));
  return out;
}

std::string arrival_label(double rate) {
  if (rate <= 0) return "all at once";
  char buf[64];
  std::snprintf(buf, sizeof buf, "Poisson arrivals at %.2f req/s", rate);
  return buf;
}

int usage() {
  std::fprintf(stderr,
               "usage: serve [--model PATH] [--requests N] [--prompt P] [--output O] [--rate R] [--cache-gib G]\n"
               "             [--dtype f32|bf16|i8] [--block-size B] [--threads T] [--max-tokens-per-step K]\n"
               "             [--max-running M] [--rope-pairs r] [--d-kv 8,16,32] [--weights f32|bf16] [--no-source]\n"
               "             [--duration S] [--report-every S] [--seed N] [--profile]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  latte::cpu::use_openblas_kernels_for_this_cpu(argv);  // before anything else: it may re-execute
  Args a;
  std::string d_kv;
  for (int i = 1; i < argc; ++i) {
    const std::string f = argv[i];
    const bool has = i + 1 < argc;
    if (f == "--no-source") a.source = false;
    else if (f == "--profile") a.profile = true;
    else if (!has) return usage();
    else if (f == "--model") a.model = argv[++i];
    else if (f == "--requests") a.requests = std::atoll(argv[++i]);
    else if (f == "--prompt") a.prompt = std::atoll(argv[++i]);
    else if (f == "--output") a.output = std::atoll(argv[++i]);
    else if (f == "--rate") a.rate = std::atof(argv[++i]);
    else if (f == "--cache-gib") a.cache_gib = std::atof(argv[++i]);
    else if (f == "--dtype") {
      const std::string d = argv[++i];
      if (d == "f32") a.dtype = DType::f32;
      else if (d == "bf16") a.dtype = DType::bf16;
      else if (d == "i8") a.dtype = DType::i8;
      else return usage();
    } else if (f == "--block-size") a.block_size = std::atoi(argv[++i]);
    else if (f == "--threads") a.threads = std::atoi(argv[++i]);
    else if (f == "--max-tokens-per-step") a.max_tokens_per_step = std::atoll(argv[++i]);
    else if (f == "--max-running") a.max_running = std::atoi(argv[++i]);
    else if (f == "--rope-pairs") a.rope_pairs = std::atoll(argv[++i]);
    else if (f == "--d-kv") d_kv = argv[++i];
    else if (f == "--weights") a.weights_bf16 = std::string(argv[++i]) == "bf16";
    else if (f == "--duration") a.duration = std::atof(argv[++i]);
    else if (f == "--report-every") a.report_every = std::atof(argv[++i]);
    else if (f == "--seed") a.seed = std::strtoull(argv[++i], nullptr, 10);
    else return usage();
  }
  const std::string smollm = std::string(LATTE_SOURCE_DIR) + "/models/smollm2-135m-hf";
  const bool default_model = a.model.empty();
  if (default_model)
    a.model = file_exists(smollm) ? smollm : std::string(LATTE_SOURCE_DIR) + "/models/stories260K/stories260K.bin";
  const bool tiny = a.model.find("stories260K") != std::string::npos;
  if (a.rope_pairs < 0) a.rope_pairs = tiny ? 1 : 4;
  a.d_kv = d_kv.empty() ? (tiny ? std::vector<int64_t>{2, 4} : std::vector<int64_t>{8, 16, 32}) : parse_list(d_kv);
  if (a.requests < 1 || a.prompt < 1 || a.output < 1 || a.threads < 1 || a.cache_gib <= 0 || a.report_every <= 0)
    return usage();
  omp_set_num_threads(a.threads);
  openblas_set_num_threads(a.threads);
  try {
    std::vector<Variant> variants = make_variants(a);
    std::printf("serve: %s, %lld requests x (prompt %lld + output %lld), %s, cache %.3f GiB %s, block %d, "
                "%d thread%s, step budget %lld tokens\n",
                a.model.c_str(), (long long)a.requests, (long long)a.prompt, (long long)a.output,
                arrival_label(a.rate).c_str(), a.cache_gib,
                dtype_name(a.dtype), a.block_size, a.threads, a.threads > 1 ? "s" : "",
                (long long)a.max_tokens_per_step);
    for (Variant& v : variants) {
      if (a.duration > 0) {
        soak(a, v);
      } else {
        run_workload(a, v);
      }
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "serve: %s\n", e.what());
    return 1;
  }
  return 0;
}
