// Prompt-processing (prefill) throughput: windows of --window tokens of English text, each fed as
// [BOS] + text on a fresh KV cache with logits at every position, --batch windows per forward, as
// `latte perplexity` runs them (inference/engine/evaluate.cpp). Prints tokens/s and the GFLOP/s
// achieved on the CPU backend at each --threads count, and the ratio against the naive
// single-loop backend (bench/naive_backend.cpp) on one short window in the same run. --profile
// re-runs the last measurement through bench::ProfilingBackend and prints the per-op table.
//
// Counted FLOPs per window of T tokens (multiply-add = 2): 2*P*T for the decoder's matrices (P =
// the parameters of every layer's projection and MLP matrices, norms excluded), 2*D*V*T for the
// logits, and 2*Hq*(Dk+Dv)*T(T+1)/2 per layer for causal attention (QK^T and PV over the causal
// pairs only). Embedding lookup, norms, RoPE and SwiGLU are not counted.
//
// --logits last computes the logits of each window's last position only (the 2*D*V term counts
// once per window): the work llama-bench's prompt processing (-p) does, where the default (all)
// is the work of `latte perplexity`.
//
//   build/bench/prefill [--model PATH] [--text FILE] [--window 512] [--batch 1] [--threads 1,2]
//                       [--tokens 2048] [--naive-tokens 64] [--logits all|last] [--profile]
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bench/naive_backend.h"
#include "bench/profiling_backend.h"
#include "core/backend/registry.h"
#include "core/base/file_io.h"
#include "inference/engine/loaded_model.h"
#include "latte_build_config.h"
#include "core/backend/cpu/openblas_kernels.h"

using namespace latte;

namespace {

struct Args {
  std::string model, text;
  int64_t window = 512, batch = 1, tokens = 2048, naive_tokens = 64;
  std::vector<int> threads = {1, 2};
  bool profile = false;
  LogitsFor logits = LogitsFor::all_positions;
};

// Inputs [rows * T] for forward number `f`: each row is [BOS] + the next T-1 tokens of the text
// (wrapping around when the text runs out).
std::vector<int32_t> window_inputs(const std::vector<int32_t>& text, int32_t bos, int64_t rows, int64_t T, int64_t f) {
  std::vector<int32_t> in(static_cast<size_t>(rows * T));
  const size_t n = text.size();
  for (int64_t r = 0; r < rows; ++r) {
    const size_t start = size_t((f * rows + r) * (T - 1));
    in[size_t(r * T)] = bos;
    for (int64_t i = 1; i < T; ++i) in[size_t(r * T + i)] = text[(start + size_t(i - 1)) % n];
  }
  return in;
}

// Parameters of every layer's projection and MLP matrices (norms excluded).
double decoder_params(const Transformer& model) {
  double P = 0;
  for (const LayerWeights& L : model.weights().layers)
    for (const Tensor* w : {&L.wq, &L.wk, &L.wv, &L.w_dkv, &L.w_kr, &L.w_uk, &L.w_uv, &L.wo, &L.w_gate, &L.w_up,
                            &L.w_down})
      if (w->defined()) P += double(w->numel());
  return P;
}

// FLOPs of one forward of `rows` windows of T tokens (see the header comment).
double forward_flops(const Transformer& model, int64_t rows, int64_t T, LogitsFor which) {
  const ModelConfig& c = model.config();
  const double P = decoder_params(model);
  const double t = double(T);
  const double attention = double(c.n_layers) * 2.0 * double(c.n_heads) * 2.0 * double(c.head_dim) * t * (t + 1) / 2;
  const double logit_rows = which == LogitsFor::all_positions ? t : 1.0;
  return double(rows) * (2.0 * P * t + 2.0 * double(c.dim) * double(c.vocab_size) * logit_rows + attention);
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Runs `forwards` forwards of `rows` windows of T tokens; returns the seconds they took. With a
// profiler, each forward is also timed as a region.
double run_prefill(Transformer& model, const std::vector<int32_t>& text, int32_t bos, int64_t rows, int64_t T,
                   int64_t forwards, LogitsFor which, bench::ProfilingBackend* prof = nullptr) {
  double total = 0;
  for (int64_t f = 0; f < forwards; ++f) {
    const std::vector<int32_t> in = window_inputs(text, bos, rows, T, f);
    const auto t0 = std::chrono::steady_clock::now();
    if (prof) {
      bench::ScopedRegion r(*prof, "forward (whole)");
      KvCache cache = model.make_cache(rows, T);
      Tensor logits = model.forward(in, rows, cache, which, MlaForm::expanded);
      model.backend().to_host(logits);
    } else {
      KvCache cache = model.make_cache(rows, T);
      Tensor logits = model.forward(in, rows, cache, which, MlaForm::expanded);
      model.backend().to_host(logits);
    }
    total += seconds_since(t0);
  }
  return total;
}

void set_threads(int n) {
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

bool parse(int argc, char** argv, Args& a) {
  for (int i = 1; i < argc; ++i) {
    auto next = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    const char* v = nullptr;
    if (!std::strcmp(argv[i], "--profile")) a.profile = true;
    else if (!std::strcmp(argv[i], "--model") && (v = next())) a.model = v;
    else if (!std::strcmp(argv[i], "--text") && (v = next())) a.text = v;
    else if (!std::strcmp(argv[i], "--window") && (v = next())) a.window = std::atoll(v);
    else if (!std::strcmp(argv[i], "--batch") && (v = next())) a.batch = std::atoll(v);
    else if (!std::strcmp(argv[i], "--tokens") && (v = next())) a.tokens = std::atoll(v);
    else if (!std::strcmp(argv[i], "--naive-tokens") && (v = next())) a.naive_tokens = std::atoll(v);
    else if (!std::strcmp(argv[i], "--logits") && (v = next())) {
      if (!std::strcmp(v, "all")) a.logits = LogitsFor::all_positions;
      else if (!std::strcmp(v, "last")) a.logits = LogitsFor::last_position;
      else return false;
    }
    else if (!std::strcmp(argv[i], "--threads") && (v = next())) {
      a.threads.clear();
      for (const char* p = v; *p;) {
        char* end = nullptr;
        const long t = std::strtol(p, &end, 10);
        if (end == p || t < 1) return false;
        a.threads.push_back(int(t));
        p = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return false;
      }
    } else return false;
  }
  return !a.threads.empty() && a.window >= 2 && a.batch >= 1 && a.tokens >= 1 && a.naive_tokens >= 2;
}

}  // namespace

int main(int argc, char** argv) {
  latte::cpu::use_openblas_kernels_for_this_cpu(argv);  // before anything else: it may re-execute
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // lines appear as measured when piped to a file
  Args a;
  if (!parse(argc, argv, a)) {
    std::fprintf(stderr,
                 "usage: prefill [--model PATH] [--text FILE] [--window 512] [--batch 1] [--threads 1,2]\n"
                 "               [--tokens 2048] [--naive-tokens 64] [--logits all|last] [--profile]\n");
    return 2;
  }
  const std::string root = LATTE_SOURCE_DIR;
  if (a.model.empty()) {
    a.model = root + "/models/smollm2-135m-hf";
    if (!file_exists(a.model)) a.model = root + "/models/stories260K/stories260K.bin";
  }
  if (a.text.empty()) a.text = root + "/tests/data/corpus/tinyshakespeare.txt";
  try {
    LoadedModel m = load_model({a.model, "", &cpu_backend(), true});
    Transformer& model = *m.model;
    const ModelConfig& c = model.config();
    const std::string label = a.model.substr(a.model.find_last_of('/') + 1);
    const int32_t bos = m.tokenizer->bos_id() >= 0 ? m.tokenizer->bos_id() : 0;
    if (a.window + 1 > c.max_seq_len) {
      std::printf("note: --window %lld exceeds the context; using %lld\n", (long long)a.window,
                  (long long)(c.max_seq_len - 1));
      a.window = c.max_seq_len - 1;
    }
    const int64_t T = a.window, B = a.batch;
    const int64_t forwards = std::max<int64_t>(1, (a.tokens + T * B - 1) / (T * B));
    // Enough text for every window without wrapping (about 4 characters per token), not the whole file.
    std::string text = read_text_file(a.text);
    const size_t want_chars = size_t(forwards * B * T * 6 + 4096);
    if (text.size() > want_chars) text.resize(want_chars);
    const std::vector<int32_t> tokens = m.tokenizer->encode(text, false);
    LATTE_REQUIRE(tokens.size() >= 2, ErrorCode::invalid_argument, "text ", a.text, " has too few tokens");

    std::printf("prefill: %s (%lld layers, D=%lld, V=%lld, %s weights), %lld text tokens from %s\n", label.c_str(),
                (long long)c.n_layers, (long long)c.dim, (long long)c.vocab_size,
                dtype_name(model.weights().layers[0].wq.dtype()), (long long)tokens.size(), a.text.c_str());
    std::printf("FLOPs counted per window of T tokens: 2*P*T decoder matrices (P = %.1fM), 2*D*V*T logits, "
                "2*Hq*(Dk+Dv)*T(T+1)/2 per layer causal attention; norms/RoPE/SwiGLU/embedding not counted; logits at %s\n",
                decoder_params(model) * 1e-6, a.logits == LogitsFor::all_positions ? "every position" : "the last position only (x1, not xT)");

    // Baseline: the naive backend, one thread, one short window.
    set_threads(1);
    const int64_t Tn = std::min(a.naive_tokens, T);
    bench::NaiveBackend naive;
    Transformer naive_model(c, model.weights(), naive);
    const double naive_s = run_prefill(naive_model, tokens, bos, 1, Tn, 1, a.logits);
    const double naive_rate = double(Tn) / naive_s, naive_gflops = forward_flops(model, 1, Tn, a.logits) / naive_s * 1e-9;
    std::printf("%-20s naive (1 thread, baseline) window %4lld x1   %9.1f tok/s %8.2f GFLOP/s\n", label.c_str(),
                (long long)Tn, naive_rate, naive_gflops);
    std::printf("{\"bench\":\"prefill\",\"model\":\"%s\",\"backend\":\"naive\",\"threads\":1,\"window\":%lld,"
                "\"batch\":1,\"tokens\":%lld,\"seconds\":%.3f,\"tokens_per_s\":%.2f,\"gflop_per_s\":%.3f}\n",
                label.c_str(), (long long)Tn, (long long)Tn, naive_s, naive_rate, naive_gflops);

    const double flops = double(forwards) * forward_flops(model, B, T, a.logits);
    for (int threads : a.threads) {
      set_threads(threads);
      run_prefill(model, tokens, bos, B, T, 1, a.logits);  // warm-up (allocator, BLAS thread pool)
      const double s = run_prefill(model, tokens, bos, B, T, forwards, a.logits);
      const double rate = double(forwards * B * T) / s, gflops = flops / s * 1e-9;
      std::printf("%-20s cpu   (%d thread%s)          window %4lld x%-3lld %9.1f tok/s %8.2f GFLOP/s  "
                  "x%.1f tok/s, x%.1f GFLOP/s vs naive\n",
                  label.c_str(), threads, threads > 1 ? "s" : " ", (long long)T, (long long)B, rate, gflops,
                  rate / naive_rate, gflops / naive_gflops);
      std::printf("{\"bench\":\"prefill\",\"model\":\"%s\",\"backend\":\"cpu\",\"logits\":\"%s\",\"threads\":%d,\"window\":%lld,"
                  "\"batch\":%lld,\"tokens\":%lld,\"seconds\":%.3f,\"tokens_per_s\":%.2f,\"gflop_per_s\":%.3f,"
                  "\"ratio_vs_naive\":%.2f,\"gflop_ratio_vs_naive\":%.2f}\n",
                  label.c_str(), a.logits == LogitsFor::all_positions ? "all" : "last", threads, (long long)T,
                  (long long)B, (long long)(forwards * B * T), s, rate, gflops,
                  rate / naive_rate, gflops / naive_gflops);
    }

    if (a.profile) {
      const int threads = a.threads.back();
      set_threads(threads);
      bench::ProfilingBackend prof(cpu_backend());
      Transformer pm(c, model.weights(), prof);
      prof.reset();  // drop the weights' to_device calls
      const auto t0 = std::chrono::steady_clock::now();
      run_prefill(pm, tokens, bos, B, T, forwards, a.logits, &prof);
      const double wall = seconds_since(t0);
      std::printf("\nper-op profile: %s, %d thread%s, %lld forward%s of %lld x %lld tokens, %.2f s wall "
                  "(%.1f tok/s); formula FLOPs %.1f G, profiler-counted %.1f G\n",
                  label.c_str(), threads, threads > 1 ? "s" : "", (long long)forwards, forwards > 1 ? "s" : "",
                  (long long)B, (long long)T, wall, double(forwards * B * T) / wall, flops * 1e-9,
                  [&] {
                    double f = 0;
                    for (const auto& [name, st] : prof.ops()) f += st.flops;
                    return f * 1e-9;
                  }());
      prof.report(stdout, wall);
      char tag[256];
      std::snprintf(tag, sizeof tag, "\"source\":\"prefill\",\"model\":\"%s\",\"threads\":%d,\"window\":%lld,\"batch\":%lld",
                    label.c_str(), threads, (long long)T, (long long)B);
      std::fputs(prof.json(tag).c_str(), stdout);
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "prefill: %s\n", e.what());
    return 1;
  }
  return 0;
}
