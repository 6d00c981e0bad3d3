#include "trainer/planner/planner.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <iterator>
#include <limits>
#include <nlohmann/json.hpp>

#include "core/base/error.h"

namespace latte::planner {

int64_t total_bytes(const std::vector<TensorBytes>& ts) {
  int64_t n = 0;
  for (const TensorBytes& t : ts) n += t.bytes();
  return n;
}

int64_t local_parameter_count(const ModelConfig& c, const TpLayout& tp) {
  int64_t n = 0;
  for (const auto& [name, shape] : model_tensor_shapes(c, tp)) n += shape_numel(shape);
  return n;
}

int64_t replicated_parameter_count(const ModelConfig& c, const TpLayout& tp) {
  int64_t n = 0;
  for (const auto& [name, shape] : model_tensor_shapes(c))
    if (tensor_slice(c, tp, name, shape).split == TpSplit::replicated) n += shape_numel(shape);
  return n;
}

std::vector<TensorBytes> activation_tensors(const ModelConfig& c, const TpLayout& tp, int64_t B, int64_t T,
                                            DType compute, bool recompute) {
  const int64_t BT = B * T, D = c.dim, hd = c.head_dim, Hq = tp.heads, Hkv = tp.kv_heads, F = tp.hidden;
  const int64_t cb = int64_t(dtype_size(compute)), f32 = 4;
  const int64_t n = c.n_layers, kept = recompute ? 1 : n;  // layers whose full set is alive at once
  std::vector<TensorBytes> out = {
      {"layer.x_in", {BT, D}, cb, n},  // kept for every layer in both modes
      {"layer.rstd_attn", {BT}, f32, kept},
      {"layer.xn_attn", {BT, D}, cb, kept},
      {"layer.q", {B, T, Hq, c.qk_head_dim()}, cb, kept},
      {"layer.k", {B, T, Hkv, c.qk_head_dim()}, cb, kept},
      {"layer.v", {B, T, Hkv, hd}, cb, kept},
  };
  if (c.is_mla()) out.push_back({"layer.latent", {BT, c.kv_lora_rank()}, cb, kept});
  std::vector<TensorBytes> rest = {
      {"layer.attn_out", {B, T, Hq, hd}, cb, kept},
      {"layer.lse", {B, Hq, T}, f32, kept},
      {"layer.x_mid", {BT, D}, cb, kept},
      {"layer.rstd_ffn", {BT}, f32, kept},
      {"layer.xn_ffn", {BT, D}, cb, kept},
      {"layer.gate", {BT, F}, cb, kept},
      {"layer.up", {BT, F}, cb, kept},
      {"layer.h", {BT, F}, cb, kept},
      {"final.x_final", {BT, D}, cb, 1},
      {"final.rstd_final", {BT}, f32, 1},
      {"final.xn_final", {BT, D}, cb, 1},
      {"final.logits", {BT, tp.vocab}, cb, 1},
      {"final.losses", {BT}, f32, 1},
  };
  out.insert(out.end(), rest.begin(), rest.end());
  if (tp.size > 1) out.push_back({"final.logsumexp", {BT}, f32, 1});
  for (const char* v : {"index.tokens", "index.targets", "index.positions"}) out.push_back({v, {BT}, 4, 1});
  return out;
}

std::vector<TensorBytes> workspace_tensors(const ModelConfig& c, const TpLayout& tp, int64_t B, int64_t T,
                                           DType compute, DType grad) {
  const int64_t BT = B * T, D = c.dim, hd = c.head_dim, Hq = tp.heads, Hkv = tp.kv_heads, F = tp.hidden;
  const int64_t cb = int64_t(dtype_size(compute));
  std::vector<TensorBytes> out = {
      {"workspace.dlogits", {BT, tp.vocab}, cb, 1},
      {"workspace.dxn", {BT, D}, cb, 1},
      {"workspace.dx", {BT, D}, cb, 1},
      {"workspace.dh", {BT, F}, cb, 1},
      {"workspace.dgate", {BT, F}, cb, 1},
      {"workspace.dup", {BT, F}, cb, 1},
      {"workspace.dxn_l", {BT, D}, cb, 1},
      {"workspace.datt", {B, T, Hq, hd}, cb, 1},
  };
  std::vector<TensorBytes> attn = {
      {"workspace.attn.dq", {B, T, Hq, c.qk_head_dim()}, cb, 1},
      {"workspace.attn.dk", {B, T, Hkv, c.qk_head_dim()}, cb, 1},
      {"workspace.attn.dv", {B, T, Hkv, hd}, cb, 1},
      {"workspace.attn.delta", {B, Hq, T}, 4, 1},
  };
  if (c.is_mla()) {
    attn.push_back({"workspace.attn.dk_rope", {BT, c.rope_key_heads(Hkv), c.rope_dim()}, cb, 1});
    attn.push_back({"workspace.attn.dk_nope", {BT, Hkv * c.nope_dim()}, cb, 1});
    attn.push_back({"workspace.attn.dlatent", {BT, c.kv_lora_rank()}, cb, 1});
    if (tp.size > 1) attn.push_back({"workspace.attn.dw_dkv", {c.kv_lora_rank(), D}, int64_t(dtype_size(grad)), 1});
    if (tp.size > 1 && c.shared_rope())  // the shared RoPE key's W_kr is replicated too
      attn.push_back({"workspace.attn.dw_kr", {c.rope_dim(), D}, int64_t(dtype_size(grad)), 1});
  }
  std::vector<TensorBytes> embed;
  if (tp.size > 1) embed.push_back({"workspace.embed.masked_dx", {BT, D}, cb, 1});
  const auto& peak = total_bytes(attn) >= total_bytes(embed) ? attn : embed;
  out.insert(out.end(), peak.begin(), peak.end());
  return out;
}

int64_t kv_cache_bytes_per_token(const ModelConfig& c, const TpLayout& tp, DType dtype) {
  const int64_t per_layer =
      c.is_mla() ? c.rope_key_heads(tp.kv_heads) * c.rope_dim() + c.kv_lora_rank() : 2 * tp.kv_heads * c.head_dim;
  return c.n_layers * per_layer * int64_t(dtype_size(dtype));
}

Flops flops_per_token(const ModelConfig& c, int64_t T, bool recompute) {
  Flops f;
  const int64_t VD = c.vocab_size * c.dim;
  // parameter_count = embedding + layers (norms included) + final norm (+ untied lm_head).
  f.matmul_params = c.parameter_count() - 2 * c.dim * c.n_layers - c.dim - (c.tied_embeddings ? 0 : VD);
  const double attn = double(c.n_layers) * double(c.n_heads) * double(c.head_dim) * double(T);
  f.model_per_token = 6.0 * double(f.matmul_params) + 12.0 * attn;
  f.hardware_per_token = f.model_per_token + (recompute ? 2.0 * double(f.matmul_params - VD) + 4.0 * attn : 0.0);
  return f;
}

Plan make_plan(const PlanRequest& r) {
  const ModelConfig& c = r.config;
  c.validate("plan");
  auto need = [](bool ok, auto&&... parts) {
    if (!ok) fail(ErrorCode::invalid_argument, parts...);
  };
  need(r.tp >= 1, "tensor-parallel size ", r.tp, " must be at least 1");
  need(r.dp >= 1, "data-parallel size ", r.dp, " must be at least 1");
  need(r.micro_batch >= 1, "--micro-batch ", r.micro_batch, " must be at least 1");
  need(r.seq >= 1, "--seq ", r.seq, " must be at least 1");
  need(r.seq <= c.max_seq_len, "--seq ", r.seq, " exceeds the model context of ", c.max_seq_len, " tokens");
  need(r.kv_context >= 0 && r.kv_batch >= 0, "KV-cache context and batch must not be negative");
  need(std::isfinite(r.peak_tflops) && r.peak_tflops > 0, "--gpu-tflops ", r.peak_tflops, " must be positive");
  need(std::isfinite(r.mfu) && r.mfu > 0 && r.mfu <= 1, "--mfu ", r.mfu, " must be in (0, 1]");

  Plan p;
  p.req = r;
  p.layout = tp_layout(c, 0, r.tp);  // one-line error for a TP that does not divide the model
  need(!p.layout.kv_replicated, "--tp ", r.tp, " exceeds n_kv_heads (", c.n_kv_heads,
       "): the trainer cannot train shared KV heads");
  const int64_t B = r.micro_batch, T = r.seq;
  p.params_total = c.parameter_count();
  p.params_local = local_parameter_count(c, p.layout);
  p.params_replicated = replicated_parameter_count(c, p.layout);
  p.weights = p.params_local * int64_t(dtype_size(r.weight_dtype));
  p.gradients = p.params_local * int64_t(dtype_size(r.grad_dtype));
  const int64_t opt_bytes_per_param = r.weight_dtype == DType::f32 ? 8 : 12;
  const int64_t opt_params = r.zero1 ? (p.params_local + r.dp - 1) / r.dp : p.params_local;
  const int64_t grad_bytes = int64_t(dtype_size(r.grad_dtype)), weight_bytes = int64_t(dtype_size(r.weight_dtype));
  p.optimizer = opt_params * opt_bytes_per_param;
  if (r.zero1) {
    // AdamW (trainer/optim/adamw.cpp) with ZeRO-1: the owned chunk's reduced gradient, kept; the
    // flat gradient buffer of reduce_and_clip, then step()'s all-gather buffer and its own chunk.
    const int64_t padded = opt_params * r.dp;
    p.optimizer += opt_params * grad_bytes;
    const int64_t gathered = padded * weight_bytes + (r.dp > 1 ? opt_params * weight_bytes : 0);
    p.optimizer_step = std::max(padded * grad_bytes, gathered);
  }
  p.activation_list = activation_tensors(c, p.layout, B, T, r.compute_dtype, r.recompute);
  p.workspace_list = workspace_tensors(c, p.layout, B, T, r.compute_dtype, r.grad_dtype);
  p.activations = total_bytes(p.activation_list);
  p.workspace = total_bytes(p.workspace_list);
  p.total = p.weights + p.gradients + p.optimizer + p.activations + p.workspace + p.optimizer_step;

  p.req.kv_context = r.kv_context > 0 ? r.kv_context : T;
  p.req.kv_batch = r.kv_batch > 0 ? r.kv_batch : B;
  p.kv_bytes_per_token = kv_cache_bytes_per_token(c, p.layout, r.compute_dtype);
  p.kv_cache = p.kv_bytes_per_token * p.req.kv_context * p.req.kv_batch;

  p.flops = flops_per_token(c, T, r.recompute);
  p.tokens_per_s = double(r.tp * r.dp) * r.peak_tflops * 1e12 * r.mfu / p.flops.model_per_token;
  p.step_seconds = double(r.dp * B * T) / p.tokens_per_s;
  return p;
}

std::vector<std::string> preset_names() { return {"llama2-7b", "llama2-13b", "llama2-70b", "smollm-135m"}; }

ModelConfig preset(const std::string& name) {
  ModelConfig c;
  c.architecture = "llama";
  c.rope_theta = 10000.0f;
  c.norm_eps = 1e-5f;
  c.rope_layout = RopeLayout::rotate_half;
  auto set = [&](int64_t dim, int64_t layers, int64_t heads, int64_t kv, int64_t ffn, int64_t vocab, int64_t ctx,
                 bool tied) {
    c.dim = dim, c.n_layers = layers, c.n_heads = heads, c.n_kv_heads = kv, c.hidden_dim = ffn;
    c.vocab_size = vocab, c.max_seq_len = ctx, c.tied_embeddings = tied, c.head_dim = dim / heads;
  };
  if (name == "llama2-7b") {
    set(4096, 32, 32, 32, 11008, 32000, 4096, false);
  } else if (name == "llama2-13b") {
    set(5120, 40, 40, 40, 13824, 32000, 4096, false);
  } else if (name == "llama2-70b") {
    set(8192, 80, 64, 8, 28672, 32000, 4096, false);
  } else if (name == "smollm-135m") {
    set(576, 30, 9, 3, 1536, 49152, 2048, true);
    c.bos_id = 0, c.eos_id = 0;
  } else {
    std::string known;
    for (const std::string& n : preset_names()) known += (known.empty() ? "" : ", ") + n;
    fail(ErrorCode::invalid_argument, "unknown preset '", name, "' (known: ", known, ")");
  }
  c.validate("preset " + name);
  return c;
}

ModelConfig mla_variant(const ModelConfig& llama, int64_t d_kv, int64_t r) {
  LATTE_REQUIRE(!llama.is_mla(), ErrorCode::invalid_argument,
                "--mla-d-kv/--rope-pairs plan an MLA conversion of a llama model; this model is already MLA");
  LATTE_REQUIRE(d_kv >= 1, ErrorCode::invalid_argument, "--mla-d-kv ", d_kv, " must be at least 1");
  LATTE_REQUIRE(r >= 0 && 2 * r <= llama.head_dim, ErrorCode::invalid_argument, "--rope-pairs ", r,
                " must be in [0, head_dim/2 = ", llama.head_dim / 2, "]");
  ModelConfig c = llama;
  c.architecture = "mla";
  c.rope_layout = RopeLayout::interleaved;  // every MLA checkpoint's layout (config.h)
  c.kv_rank_per_head = d_kv;
  c.rope_pairs = r;
  std::vector<int32_t> freqs;
  for (int64_t i = 0; i < r; ++i) freqs.push_back(int32_t(i));
  c.rope_freqs.assign(size_t(c.n_layers), std::vector<std::vector<int32_t>>(size_t(c.n_kv_heads), freqs));
  c.validate("MLA plan");
  return c;
}

int64_t parse_size(const std::string& text) {
  auto bad = [&](auto&&... why) {
    fail(ErrorCode::invalid_argument, "bad size '", text, "': ", why...,
         " (write e.g. 80GiB, 80GB or 81920MiB)");
  };
  size_t i = 0;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.')) ++i;
  const std::string number = text.substr(0, i);
  std::string unit = text.substr(i);
  if (number.empty()) bad("no number");
  if (std::count(number.begin(), number.end(), '.') > 1 || number == "." ) bad("'", number, "' is not a number");
  while (!unit.empty() && unit.front() == ' ') unit.erase(unit.begin());
  if (unit.empty()) bad("no unit");
  for (char& ch : unit) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  static const std::pair<const char*, double> kUnits[] = {
      {"b", 1.0},       {"kb", 1e3},           {"mb", 1e6},           {"gb", 1e9},
      {"tb", 1e12},     {"kib", 1024.0},       {"mib", 1048576.0},    {"gib", 1073741824.0},
      {"tib", 1099511627776.0},
  };
  double scale = 0;
  for (const auto& [name, s] : kUnits)
    if (unit == name) scale = s;
  if (scale == 0) bad("unknown unit '", text.substr(i), "'");
  const double bytes = std::stod(number) * scale;
  if (!(bytes >= 1)) bad("the size must be positive");
  if (bytes >= 9.2e18) bad("too large");
  return int64_t(bytes);
}

namespace {

constexpr double kGiB = 1073741824.0;

std::string gib(int64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", double(bytes) / kGiB);
  return buf;
}

std::string grouped(int64_t v) {
  std::string s = std::to_string(v), out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i > 0 && (s.size() - i) % 3 == 0) out += ',';
    out += s[i];
  }
  return out;
}

std::string pad(const std::string& s, size_t width) {
  return s.size() >= width ? s : std::string(width - s.size(), ' ') + s;
}

}  // namespace

int64_t parse_max_memory(const std::string& text) {
  const bool bare = !text.empty() && text.find_first_not_of("0123456789.") == std::string::npos;
  if (!bare) return parse_size(text);
  auto bad = [&](const char* why) {
    fail(ErrorCode::invalid_argument, "bad --max-memory '", text, "': ", why,
         " (a bare number is GiB, e.g. 24 or 3.5; or give a unit: 512MiB, 4GiB, 80GB)");
  };
  if (std::count(text.begin(), text.end(), '.') > 1 || text == ".") bad("not a number");
  const double bytes = std::stod(text) * 1073741824.0;
  if (!(bytes >= 1)) bad("the size must be positive");
  if (bytes >= 9.2e18) bad("too large");
  return int64_t(bytes);
}

PlanRequest train_request(const ModelConfig& c, int64_t tp, int64_t dp, int64_t micro_batch, int64_t seq,
                          bool zero1, bool recompute) {
  PlanRequest r;
  r.config = c;
  r.tp = tp;
  r.dp = dp;
  r.micro_batch = micro_batch;
  r.seq = seq;
  r.weight_dtype = r.compute_dtype = r.grad_dtype = DType::f32;
  r.zero1 = zero1;
  r.recompute = recompute;
  return r;
}

std::string human_bytes(int64_t bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = double(bytes);
  size_t u = 0;
  while (std::abs(v) >= 1024.0 && u + 1 < std::size(kUnits)) v /= 1024.0, ++u;
  char buf[48];
  if (u == 0) std::snprintf(buf, sizeof buf, "%lld B", (long long)bytes);
  else std::snprintf(buf, sizeof buf, "%.2f %s", v, kUnits[u]);
  return buf;
}

namespace {

// Whether a TP size above p's can train the model (divides it, no shared KV heads).
bool larger_tp_exists(const Plan& p) {
  const ModelConfig& c = p.req.config;
  for (int64_t t = p.req.tp + 1; t <= c.n_kv_heads; ++t) {
    try {
      if (!tp_layout(c, 0, t).kv_replicated) return true;
    } catch (const Error&) {
    }
  }
  return false;
}

}  // namespace

std::string memory_limit_problem(const Plan& p, int64_t limit) {
  if (p.total <= limit) return "";
  const PlanRequest& q = p.req;
  std::vector<std::string> hints;
  if (!q.zero1 && q.dp > 1) {
    // Only where it shrinks the plan: its reduced chunk and step buffers cost 4 + 8/DP B per
    // parameter in f32, at least the 8 (1 - 1/DP) it saves up to DP 4.
    PlanRequest z = q;
    z.zero1 = true;
    if (make_plan(z).total < p.total) hints.push_back("--zero1");
  }
  // Weights, gradients and Adam alone over the limit: fewer activations cannot help.
  const bool state_fits = p.weights + p.gradients + p.optimizer + p.optimizer_step <= limit;
  if (state_fits && !q.recompute) hints.push_back("--recompute");
  if (larger_tp_exists(p)) hints.push_back("a larger --tp");
  if (state_fits && (q.micro_batch > 1 || q.seq > 1)) hints.push_back("a smaller --micro-batch/--seq");
  std::string hint;
  for (size_t i = 0; i < hints.size(); ++i)
    hint += (i == 0 ? "" : i + 1 == hints.size() ? " or " : ", ") + hints[i];
  if (hint.empty()) hint = "more memory per rank (no other layout of this model is smaller here)";
  return str_cat("planned ", human_bytes(p.total), " (", grouped(p.total), " bytes) per rank exceeds --max-memory ",
                 human_bytes(limit), " (", grouped(limit), " bytes) for TP ", q.tp, ", DP ", q.dp, ", --zero1 ",
                 q.zero1 ? "on" : "off", ", --recompute ", q.recompute ? "on" : "off", ", --micro-batch ",
                 q.micro_batch, ", --seq ", q.seq, " (weights ", human_bytes(p.weights), ", grads ",
                 human_bytes(p.gradients), ", optimizer ", human_bytes(p.optimizer), ", activations ",
                 human_bytes(p.activations), ", workspace ", human_bytes(p.workspace),
                 q.zero1 ? ", ZeRO-1 step buffers " + human_bytes(p.optimizer_step) : std::string(), "); try ", hint);
}

std::vector<TpOption> tp_options(const ModelConfig& c, int64_t gpus) {
  LATTE_REQUIRE(gpus >= 1, ErrorCode::invalid_argument, "--gpus ", gpus, " must be at least 1");
  std::vector<TpOption> out;
  for (int64_t tp = 1; tp <= gpus; ++tp) {
    if (gpus % tp != 0) continue;
    TpOption o{tp, ""};
    try {
      TpLayout l = tp_layout(c, 0, tp);
      if (l.kv_replicated)
        o.skipped = str_cat("--tp ", tp, " exceeds n_kv_heads (", c.n_kv_heads,
                            "): the trainer cannot train shared KV heads");
    } catch (const Error& e) {
      o.skipped = e.what();
    }
    out.push_back(o);
  }
  return out;
}

std::string format_table(const PlanReport& r) {
  std::string out;
  if (r.plans.empty()) {
    out += str_cat("latte plan: ", r.model_name, ": no usable tensor-parallel size for ", r.gpus, " GPUs\n");
  } else {
    const Plan& p0 = r.plans.front();
    const PlanRequest& q = p0.req;
    const ModelConfig& c = q.config;
    out += str_cat("latte plan: ", r.model_name, " (", c.architecture, ", ", grouped(p0.params_total), " parameters");
    if (c.is_mla()) out += str_cat(", d_kv ", c.kv_rank_per_head, ", r ", c.rope_pairs, ", latent ", c.kv_lora_rank());
    out += str_cat("), ", r.gpus, " GPUs x ", gib(r.gpu_mem), " GiB\n");
    out += str_cat("training: seq ", q.seq, ", micro-batch ", q.micro_batch, " per GPU, weights ",
                   dtype_name(q.weight_dtype), ", activations ", dtype_name(q.compute_dtype), ", grads ",
                   dtype_name(q.grad_dtype), ", Adam ", q.weight_dtype == DType::f32 ? 8 : 12, " B/param",
                   q.zero1 ? " sharded over DP (ZeRO-1, with the owned chunk's reduced gradient)" : " (no ZeRO)",
                   q.recompute ? ", per-layer recomputation" : ", no recomputation", "\n");
    char buf[256];
    std::snprintf(buf, sizeof buf, "throughput: %.0f%% MFU of %.0f TFLOP/s per GPU; %.4g model FLOPs/token",
                  q.mfu * 100, q.peak_tflops, p0.flops.model_per_token);
    out += buf;
    out += str_cat(" (6 x ", grouped(p0.flops.matmul_params), " matmul params + 12 x layers x heads x head_dim x seq)");
    if (q.recompute) {
      std::snprintf(buf, sizeof buf, "; recomputation makes it %.4g hardware FLOPs/token", p0.flops.hardware_per_token);
      out += buf;
    }
    out += "\n";
    const std::string kv_col = str_cat("KV ", q.kv_context, "x", q.kv_batch);
    out += "\n";
    out += str_cat(pad("TP", 4), pad("DP", 5), pad("weights", 9), pad("grads", 8), pad("optim", 8), pad("activ", 8),
                   pad("wkspace", 9), pad("ostep", 8), pad("total", 8), "  ", std::string("verdict      "),
                   pad("KV/token", 10),
                   pad(kv_col, std::max<size_t>(kv_col.size() + 2, 12)), pad("tok/s", 12), pad("step s", 9), "\n");
    for (const Plan& p : r.plans) {
      std::snprintf(buf, sizeof buf, "%.1fKiB", double(p.kv_bytes_per_token) / 1024.0);
      std::string kvt = buf;
      std::snprintf(buf, sizeof buf, "%.0f", p.tokens_per_s);
      std::string tps = buf;
      std::snprintf(buf, sizeof buf, "%.3f", p.step_seconds);
      std::string step = buf;
      const bool fits = p.total <= r.gpu_mem;
      const bool over = r.max_memory > 0 && p.total > r.max_memory;
      out += str_cat(pad(std::to_string(p.req.tp), 4), pad(std::to_string(p.req.dp), 5), pad(gib(p.weights), 9),
                     pad(gib(p.gradients), 8), pad(gib(p.optimizer), 8), pad(gib(p.activations), 8),
                     pad(gib(p.workspace), 9), pad(gib(p.optimizer_step), 8), pad(gib(p.total), 8), "  ",
                     over ? "OVER LIMIT   " : fits ? "FITS         " : "DOES NOT FIT ",
                     pad(kvt, 10), pad(gib(p.kv_cache), std::max<size_t>(kv_col.size() + 2, 12)), pad(tps, 12),
                     pad(step, 9), "\n");
    }
    out += str_cat("\nmemory in GiB (2^30 B) per GPU; total = weights + grads + optim + activ + wkspace + ostep ",
                   "(ZeRO-1's optimizer-step buffers: the flat gradient, the all-gather), ",
                   "compared with ",
                   gib(r.gpu_mem), " GiB (no allowance for the CUDA context or fragmentation)",
                   r.max_memory > 0 ? str_cat("; OVER LIMIT: over --max-memory ", human_bytes(r.max_memory)) : "",
                   ".\n",
                   "KV columns: inference cache per GPU (", dtype_name(q.compute_dtype),
                   c.is_mla() ? "; MLA latent replicated on every TP rank" : "", "), not part of the training total.\n",
                   "tok/s: whole job; step s: one micro-batch on every DP rank (DP x ", q.micro_batch, " x ", q.seq,
                   " tokens).\n");
  }
  for (const Plan& p : r.plans) {
    const std::string problem = r.max_memory > 0 ? memory_limit_problem(p, r.max_memory) : "";
    if (!problem.empty()) out += str_cat("TP ", p.req.tp, " refused: ", problem, "\n");
  }
  for (const TpOption& s : r.skipped) out += str_cat("TP ", s.tp, " skipped: ", s.skipped, "\n");
  return out;
}

std::string format_json(const PlanReport& r) {
  using nlohmann::json;
  json j;
  j["model"] = r.model_name;
  j["gpus"] = r.gpus;
  j["gpu_mem_bytes"] = r.gpu_mem;
  if (r.max_memory > 0) j["max_memory_bytes"] = r.max_memory;
  if (!r.plans.empty()) {
    const Plan& p0 = r.plans.front();
    const PlanRequest& q = p0.req;
    const ModelConfig& c = q.config;
    j["architecture"] = c.architecture;
    j["parameters"] = p0.params_total;
    if (c.is_mla()) {
      j["mla_kv_rank_per_head"] = c.kv_rank_per_head;
      j["mla_rope_pairs"] = c.rope_pairs;
    }
    j["seq"] = q.seq;
    j["micro_batch"] = q.micro_batch;
    j["weight_dtype"] = dtype_name(q.weight_dtype);
    j["compute_dtype"] = dtype_name(q.compute_dtype);
    j["grad_dtype"] = dtype_name(q.grad_dtype);
    j["zero1"] = q.zero1;
    j["recompute"] = q.recompute;
    j["peak_tflops"] = q.peak_tflops;
    j["mfu"] = q.mfu;
    j["matmul_parameters"] = p0.flops.matmul_params;
    j["model_flops_per_token"] = p0.flops.model_per_token;
    j["hardware_flops_per_token"] = p0.flops.hardware_per_token;
  }
  j["plans"] = json::array();
  for (const Plan& p : r.plans) {
    json e;
    e["tp"] = p.req.tp;
    e["dp"] = p.req.dp;
    e["params_local"] = p.params_local;
    e["params_replicated"] = p.params_replicated;
    e["bytes"] = {{"weights", p.weights},         {"gradients", p.gradients}, {"optimizer", p.optimizer},
                  {"activations", p.activations}, {"workspace", p.workspace},
                  {"optimizer_step", p.optimizer_step}, {"total", p.total}};
    e["fits"] = p.total <= r.gpu_mem;
    if (r.max_memory > 0) {
      e["within_max_memory"] = p.total <= r.max_memory;
      if (p.total > r.max_memory) e["refused"] = memory_limit_problem(p, r.max_memory);
    }
    e["kv_cache"] = {{"context", p.req.kv_context},
                     {"batch", p.req.kv_batch},
                     {"bytes_per_token", p.kv_bytes_per_token},
                     {"bytes", p.kv_cache}};
    e["tokens_per_s"] = p.tokens_per_s;
    e["step_seconds"] = p.step_seconds;
    j["plans"].push_back(e);
  }
  j["skipped"] = json::array();
  for (const TpOption& s : r.skipped) j["skipped"].push_back({{"tp", s.tp}, {"reason", s.skipped}});
  return j.dump(2) + "\n";
}

}  // namespace latte::planner
