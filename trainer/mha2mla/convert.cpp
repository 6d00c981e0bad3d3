#include "trainer/mha2mla/convert.h"
#include "trainer/mha2mla/convert_layer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>
#include <nlohmann/json.hpp>

#include "core/backend/registry.h"
#include "core/linalg/svd.h"
#include "core/linalg/svd_top.h"
#include "trainer/mha2mla/latent_pca.h"
#include "trainer/mha2mla/rorope.h"

namespace latte {

const char* svd_method_name(SvdMethod m) { return m == SvdMethod::joint ? "joint" : "split"; }

SvdMethod svd_method_from_name(const std::string& name) {
  if (name == "joint") return SvdMethod::joint;
  if (name == "split") return SvdMethod::split;
  fail(ErrorCode::invalid_argument, "unknown SVD method '", name, "' (expected joint or split)");
}

const char* rope_mode_name(RopeMode m) { return m == RopeMode::partial ? "partial" : "rorope"; }

RopeMode rope_mode_from_name(const std::string& name) {
  if (name == "partial") return RopeMode::partial;
  if (name == "rorope") return RopeMode::rorope;
  fail(ErrorCode::invalid_argument, "unknown RoPE mode '", name, "' (expected partial or rorope)");
}

const char* latent_init_name(LatentInit i) { return i == LatentInit::svd ? "svd" : "pca"; }

LatentInit latent_init_from_name(const std::string& name) {
  if (name == "svd") return LatentInit::svd;
  if (name == "pca") return LatentInit::pca;
  fail(ErrorCode::invalid_argument, "unknown latent initialisation '", name, "' (expected svd or pca)");
}

ModelConfig mla_config(const ModelConfig& src, int64_t rope_pairs, int64_t kv_rank_per_head, RopeFreqs rope_freqs,
                       const std::string& provenance) {
  ModelConfig c = src;
  c.architecture = "mla";
  c.rope_layout = RopeLayout::interleaved;  // the [rope | nope] head layout, core/model/config.h
  c.rope_pairs = rope_pairs;
  c.kv_rank_per_head = kv_rank_per_head;
  c.rope_freqs = std::move(rope_freqs);
  c.mla_provenance = provenance;
  c.validate("the MHA2MLA conversion");
  return c;
}

ModelConfig mla_shared_rope_config(const ModelConfig& src, int64_t kv_rank_per_head,
                                   std::vector<std::vector<int32_t>> shared_freqs, const std::string& provenance) {
  ModelConfig c = src;
  c.architecture = "mla";
  c.rope_layout = RopeLayout::interleaved;  // the shared key's pairs are adjacent, config.h
  c.rope_pairs = 0;
  c.rope_freqs.clear();
  c.shared_rope_dim = shared_freqs.empty() ? 0 : 2 * int64_t(shared_freqs[0].size());
  c.shared_rope_freqs = std::move(shared_freqs);
  c.kv_rank_per_head = kv_rank_per_head;
  c.mla_provenance = provenance;
  c.validate("the RoRoPE conversion");
  return c;
}

namespace {

// up [rows, D] . down [D, cols] ~= a, truncated to `rank` singular triplets.
struct LowRank {
  MatrixD down, up;
  double kept_energy = 0, total_energy = 0;  // sums of sigma^2
};

// A tall matrix (rows >= cols: [k_nope; v] of MHA models such as Llama-2-7B, [7936, 4096])
// goes through its Gram matrix (svd_top: the top `rank` triplets only, several times faster);
// a wide one (GQA: SmolLM2's [360, 576]) through dgesdd, as small as it is.
LowRank low_rank(const MatrixD& a, int64_t rank, bool sigma_in_up) {
  LowRank lr{MatrixD(rank, a.cols), MatrixD(a.rows, rank)};
  if (a.rows >= a.cols) {
    const TopSvd top = svd_top(a, rank);
    lr.total_energy = top.total_energy;
    for (int64_t k = 0; k < rank; ++k) {
      const double s = top.s[size_t(k)];
      lr.kept_energy += s * s;
      // av = u s: sigma_in_up takes it as it is; the paper's split gives sqrt(s) to each side
      // (a zero singular value contributes nothing either way).
      const double s_up = sigma_in_up ? 1.0 : (s > 0 ? 1.0 / std::sqrt(s) : 0.0);
      const double s_down = sigma_in_up ? 1.0 : std::sqrt(s);
      for (int64_t c = 0; c < a.cols; ++c) lr.down(k, c) = s_down * top.vt(k, c);
      for (int64_t i = 0; i < a.rows; ++i) lr.up(i, k) = s_up * top.av(i, k);
    }
    return lr;
  }
  const Svd svd = svd_thin(a);
  LATTE_ASSERT(rank <= int64_t(svd.s.size()));
  for (size_t i = 0; i < svd.s.size(); ++i) {
    lr.total_energy += svd.s[i] * svd.s[i];
    if (int64_t(i) < rank) lr.kept_energy += svd.s[i] * svd.s[i];
  }
  for (int64_t k = 0; k < rank; ++k) {
    const double s = svd.s[size_t(k)];
    const double s_up = sigma_in_up ? s : std::sqrt(s), s_down = sigma_in_up ? 1.0 : std::sqrt(s);
    for (int64_t c = 0; c < a.cols; ++c) lr.down(k, c) = s_down * svd.vt(k, c);
    for (int64_t i = 0; i < a.rows; ++i) lr.up(i, k) = s_up * svd.u(i, k);
  }
  return lr;
}

MatrixD to_matrix(const std::vector<float>& v, int64_t rows, int64_t cols) {
  MatrixD m(rows, cols);
  LATTE_ASSERT(int64_t(v.size()) == rows * cols);
  for (size_t i = 0; i < v.size(); ++i) m.data[i] = double(v[i]);
  return m;
}

Tensor to_tensor(const MatrixD& m) {
  Tensor t = Tensor::empty({m.rows, m.cols});
  float* p = t.f32();
  for (size_t i = 0; i < m.data.size(); ++i) p[i] = float(m.data[i]);
  return t;
}

// Copies the source rows `rows` of w [*, cols] (f32 values) into m starting at row `at`.
void gather_rows(MatrixD& m, int64_t at, const std::vector<float>& w, int64_t cols, const std::vector<int64_t>& rows) {
  for (size_t t = 0; t < rows.size(); ++t)
    for (int64_t c = 0; c < cols; ++c) m(at + int64_t(t), c) = double(w[size_t(rows[t] * cols + c)]);
}

// Copies rows `rows` of w [*, cols] into out (same element dtype) starting at row `at`: a
// permutation moves bytes, so a bf16 source stays bf16, bit for bit.
void gather_rows(Tensor& out, int64_t at, const Tensor& w, const std::vector<int64_t>& rows) {
  const int64_t cols = w.dim(1);
  const size_t row_bytes = size_t(cols) * dtype_size(w.dtype());
  auto* dst = static_cast<uint8_t*>(out.raw());
  const auto* src = static_cast<const uint8_t*>(w.raw());
  for (size_t t = 0; t < rows.size(); ++t)
    std::memcpy(dst + size_t(at + int64_t(t)) * row_bytes, src + size_t(rows[t]) * row_bytes, row_bytes);
}

// A weight in a dtype whose rows can be moved as bytes: itself (f32, bf16, f16), or f32 for a
// block format (GGUF's q4_1 rows are not whole elements).
Tensor element_weight(const Tensor& t) {
  const bool element = t.dtype() == DType::f32 || t.dtype() == DType::bf16 || t.dtype() == DType::f16;
  return element && t.is_contiguous() ? t : t.to(DType::f32);
}

std::vector<int64_t> offset(const std::vector<int64_t>& rows, int64_t by) {
  std::vector<int64_t> out(rows);
  for (int64_t& r : out) r += by;
  return out;
}

// The SVD factorization of the weights: joint, one SVD of [k_nope; v] (spec 3.2); split, D/2
// ranks each with latent = [c_k | c_v], keys reading only the first half, values only the
// second (spec 3.3). *energy_kept: kept sigma^2 / all sigma^2.
KvLatent svd_latent(const MatrixD& k_nope, const MatrixD& v, int64_t D, SvdMethod method, bool sigma_in_up,
                    double* energy_kept) {
  const int64_t dim = k_nope.cols;
  KvLatent f{MatrixD(), MatrixD(k_nope.rows, D), MatrixD(v.rows, D)};
  if (method == SvdMethod::joint) {
    MatrixD a(k_nope.rows + v.rows, dim);
    std::copy(k_nope.data.begin(), k_nope.data.end(), a.data.begin());
    std::copy(v.data.begin(), v.data.end(), a.data.begin() + long(k_nope.data.size()));
    LowRank lr = low_rank(a, D, sigma_in_up);
    f.down = std::move(lr.down);
    std::copy(lr.up.data.begin(), lr.up.data.begin() + long(f.k_up.data.size()), f.k_up.data.begin());
    std::copy(lr.up.data.begin() + long(f.k_up.data.size()), lr.up.data.end(), f.v_up.data.begin());
    *energy_kept = lr.total_energy > 0 ? lr.kept_energy / lr.total_energy : 1.0;
    return f;
  }
  const int64_t half = D / 2;
  LowRank lk = low_rank(k_nope, half, sigma_in_up), lv = low_rank(v, half, sigma_in_up);
  f.down = MatrixD(D, dim);
  std::copy(lk.down.data.begin(), lk.down.data.end(), f.down.data.begin());
  std::copy(lv.down.data.begin(), lv.down.data.end(), f.down.data.begin() + long(lk.down.data.size()));
  for (int64_t i = 0; i < f.k_up.rows; ++i)
    for (int64_t k = 0; k < half; ++k) f.k_up(i, k) = lk.up(i, k);
  for (int64_t i = 0; i < f.v_up.rows; ++i)
    for (int64_t k = 0; k < half; ++k) f.v_up(i, half + k) = lv.up(i, k);
  const double total = lk.total_energy + lv.total_energy;
  *energy_kept = total > 0 ? (lk.kept_energy + lv.kept_energy) / total : 1.0;
  return f;
}

// f with its latent widened to D: zero rows of down, zero columns of the up-projections.
KvLatent pad_latent(KvLatent f, int64_t D) {
  const int64_t rank = f.down.rows;
  if (rank == D) return f;
  LATTE_ASSERT(rank < D);
  KvLatent out{MatrixD(D, f.down.cols), MatrixD(f.k_up.rows, D), MatrixD(f.v_up.rows, D)};
  std::copy(f.down.data.begin(), f.down.data.end(), out.down.data.begin());
  for (int64_t i = 0; i < f.k_up.rows; ++i) std::copy(f.k_up.row(i), f.k_up.row(i) + rank, out.k_up.row(i));
  for (int64_t i = 0; i < f.v_up.rows; ++i) std::copy(f.v_up.row(i), f.v_up.row(i) + rank, out.v_up.row(i));
  return out;
}

// The widest latent the weights can fill: D beyond the factorized matrix's rank bound would be
// zero columns (joint: A = [k_nope; v] is [n_kv*(2 head_dim - 2r), dim]; split: each half has
// D/2 ranks and its own bound). RoRoPE's no-RoPE keys have at most n_kv*head_dim rows (r = 0).
int64_t max_kv_rank_per_head(const ModelConfig& c, int64_t r, SvdMethod svd) {
  const int64_t nope_rows = c.n_kv_heads * (c.head_dim - 2 * r), v_rows = c.kv_dim();
  const int64_t max_d = svd == SvdMethod::joint ? std::min(c.dim, nope_rows + v_rows)
                                                : 2 * std::min({c.dim, nope_rows, v_rows});
  return max_d / c.n_kv_heads;
}

}  // namespace

ResolvedConversion resolve_conversion(const ModelConfig& c, const ConvertOptions& o, const std::string& origin) {
  LATTE_REQUIRE(!c.is_mla(), ErrorCode::invalid_argument, origin,
                " is already an MLA model (architecture mla); convert its Llama source instead");
  const int64_t hd = c.head_dim, n_kv = c.n_kv_heads;
  const bool rorope = o.rope_mode == RopeMode::rorope;
  int64_t d_r = 0;
  if (rorope) {
    LATTE_REQUIRE(o.rope_pairs == -1, ErrorCode::invalid_argument,
                  "--rope-pairs applies to --rope-mode partial; RoRoPE keeps --rope-dims d_r dims of one shared key");
    d_r = o.rope_dims == -1 ? hd : o.rope_dims;
    LATTE_REQUIRE(d_r >= 2 && d_r % 2 == 0 && d_r <= n_kv * hd, ErrorCode::invalid_argument, "--rope-dims d_r = ", d_r,
                  " must be even and in [2, n_kv_heads*head_dim = ", n_kv * hd, "] (", n_kv, " KV heads x ", hd / 2,
                  " frequencies = ", n_kv * hd / 2, " rotated components of 2 dims)");
    LATTE_REQUIRE(o.svd == SvdMethod::joint, ErrorCode::invalid_argument,
                  "--svd split applies to --rope-mode partial; RoRoPE factorizes keys and values jointly");
    LATTE_REQUIRE(!o.calibration.text_path.empty(), ErrorCode::invalid_argument,
                  "--rope-mode rorope needs a calibration text (--calib FILE): its rotation diagonalizes the "
                  "calibration keys' second moments");
  } else {
    LATTE_REQUIRE(o.rope_dims == -1, ErrorCode::invalid_argument, "--rope-dims applies to --rope-mode rorope only");
  }
  const int64_t r = rorope ? 0 : o.rope_pairs == -1 ? std::max<int64_t>(1, hd / 16) : o.rope_pairs;
  LATTE_REQUIRE(r >= 0 && r <= hd / 2, ErrorCode::invalid_argument, "rope pairs r = ", r,
                " is outside the valid range [0, head_dim/2 = ", hd / 2, "]");
  const int64_t d_kv = o.kv_rank_per_head == -1 ? std::max<int64_t>(1, hd / 4) : o.kv_rank_per_head;
  LATTE_REQUIRE(d_kv >= 1, ErrorCode::invalid_argument, "d_kv (latent rank per KV head) is ", d_kv,
                ", must be at least 1");
  LATTE_REQUIRE(o.init == LatentInit::svd || o.svd == SvdMethod::joint, ErrorCode::invalid_argument,
                "--init pca factorizes keys and values jointly; --svd split applies to --init svd only");
  const int64_t d_max = max_kv_rank_per_head(c, r, o.svd);
  LATTE_REQUIRE(d_kv <= d_max, ErrorCode::invalid_argument, "d_kv ", d_kv, " larger than possible: at most ", d_max,
                rorope ? " for RoRoPE" : str_cat(" for r=", r), " with ", o.init == LatentInit::pca ? "PCA" : str_cat("SVD ", svd_method_name(o.svd)),
                " (latent D = n_kv_heads*d_kv = ", n_kv * d_kv, " exceeds the rank of the factorized weights)");
  const int64_t D = n_kv * d_kv;
  LATTE_REQUIRE(o.svd == SvdMethod::joint || D % 2 == 0, ErrorCode::invalid_argument,
                "SVD split gives half the latent to keys and half to values, but D = n_kv_heads*d_kv = ", D, " is odd");
  ResolvedConversion rc{.r = r, .d_kv = d_kv, .D = D, .rorope = rorope, .d_r = d_r};
  rc.two_norm = !rorope && o.strategy == RopeStrategy::two_norm;
  LATTE_REQUIRE(!rc.two_norm || !o.calibration.text_path.empty(), ErrorCode::invalid_argument,
                "rope strategy 2norm needs a calibration text (--calib FILE)");
  LATTE_REQUIRE(o.init == LatentInit::svd || !o.calibration.text_path.empty(), ErrorCode::invalid_argument,
                "--init pca needs a calibration text (--calib FILE)");
  rc.calibrate = !o.calibration.text_path.empty();
  rc.moments = rc.calibrate && (o.init == LatentInit::pca || rorope || o.compare_inits);
  return rc;
}

CalibrationOptions conversion_calibration_options(const ConvertOptions& o, const ResolvedConversion& rc) {
  CalibrationOptions co = o.calibration;
  if (o.init == LatentInit::pca) {
    // D principal directions need at least D samples; fewer would leave the tail of the basis
    // to the damping (latent_pca.h), i.e. to chance.
    co.min_tokens = std::max(co.min_tokens, rc.D);
    co.min_tokens_why = str_cat("--init pca with latent width D = ", rc.D);
  }
  return co;
}

const Tokenizer& calibration_tokenizer(const ConvertOptions& o, const ResolvedConversion& rc, const Tokenizer* own) {
  const Tokenizer* tok = o.tokenizer ? o.tokenizer : own;
  LATTE_REQUIRE(tok != nullptr, ErrorCode::invalid_argument,
                rc.two_norm ? "rope strategy 2norm" : o.init == LatentInit::pca ? "--init pca" : "the calibration text",
                " needs a tokenizer for the calibration text (--tokenizer PATH)");
  return *tok;
}

nlohmann::json conversion_provenance(const ModelConfig& c, const ConvertOptions& o, const ResolvedConversion& rc,
                                     const std::string& origin, int64_t calib_tokens) {
  nlohmann::json prov = {{"method", "MHA2MLA"},
                         {"source", o.source_name.empty() ? origin : o.source_name},
                         {"source_rope_layout", rope_layout_name(c.rope_layout)},
                         {"strategy", rope_strategy_name(o.strategy)},
                         {"svd", svd_method_name(o.svd)},
                         {"sigma_in_up", o.sigma_in_up},
                         {"r", rc.r},
                         {"d_kv", rc.d_kv}};
  // The svd record keeps today's fields (an svd conversion is byte-identical to before issue 17).
  if (o.init == LatentInit::pca) {
    prov.erase("svd");
    prov.erase("sigma_in_up");
    prov["init"] = "pca";
  }
  if (rc.rorope) {
    prov.erase("strategy");
    prov.erase("r");
    prov["rope_mode"] = "rorope";
    prov["d_r"] = rc.d_r;
  }
  if (rc.two_norm || o.init == LatentInit::pca || rc.rorope) {
    prov["calib_file"] = o.calibration.text_path;
    prov["calib_tokens"] = calib_tokens;
  }
  return prov;
}

ConversionReport conversion_report_head(const ModelConfig& src, const ModelConfig& dst, const ConvertOptions& o,
                                        int64_t calib_positions) {
  ConversionReport rep = size_report(src, dst);
  rep.strategy = o.rope_mode == RopeMode::rorope ? "rorope" : rope_strategy_name(o.strategy);
  rep.svd = svd_method_name(o.svd);
  rep.init = latent_init_name(o.init);
  rep.calib_positions = calib_positions;
  return rep;
}

ConvertedLayer convert_layer(const ModelConfig& c, const TensorStore& src, int64_t l,
                             const std::vector<std::vector<int32_t>>& freqs, const MatrixD* moment,
                             const ConvertOptions& o, const ResolvedConversion& rc) {
  const int64_t hd = c.head_dim, n_kv = c.n_kv_heads, g = c.n_heads / c.n_kv_heads, r = rc.r, D = rc.D;
  const int64_t d_c = hd - 2 * r;
  const std::string p = str_cat("model.layers.", l, ".self_attn.");
  const Tensor wq = element_weight(src.get(p + "q_proj.weight", {c.q_dim(), c.dim}));
  const Tensor wk = element_weight(src.get(p + "k_proj.weight", {c.kv_dim(), c.dim}));
  // f32 values for the factorization (any dtype; block formats dequantized).
  const std::vector<float> wk_values = wk.to_vector();
  const std::vector<float> wv_values = src.get(p + "v_proj.weight", {c.kv_dim(), c.dim}).to_vector();

  ConvertedLayer out;
  MatrixD k_nope, v(n_kv * hd, c.dim);
  std::vector<int64_t> all(static_cast<size_t>(hd));
  for (int64_t d = 0; d < hd; ++d) all[size_t(d)] = d;
  for (int64_t j = 0; j < n_kv; ++j) gather_rows(v, j * hd, wv_values, c.dim, offset(all, j * hd));
  // rorope: the rows of its [n_kv*head_dim] no-RoPE keys that carry anything; the others (the
  // frequencies whose components all kept RoPE) are zero and stay out of the factorization.
  std::vector<int64_t> nope_rows;
  if (rc.rorope) {
    LATTE_REQUIRE(moment != nullptr, ErrorCode::internal, "RoRoPE conversion of layer ", l, " without calibration moments");
    const MatrixD wk_m = to_matrix(wk_values, c.kv_dim(), c.dim);
    const RoropePlan plan = rorope_plan(c, wk_m, *moment, rc.d_r);
    const RoropeWeights rw = rorope_weights(c, to_matrix(wq.to_vector(), c.q_dim(), c.dim), wk_m, plan);
    out.q = to_tensor(rw.q);
    out.k_rope = to_tensor(rw.k_rope);
    out.shared_rope_freqs = plan.freqs();
    out.rope_energy = plan.energy_kept;
    for (int64_t j = 0; j < n_kv; ++j)
      for (int64_t d = 0; d < hd; ++d)
        if (!plan.dropped(pair_of_dim(d, c.rope_layout, hd)).empty()) nope_rows.push_back(j * hd + d);
    k_nope = MatrixD(int64_t(nope_rows.size()), c.dim);
    for (size_t t = 0; t < nope_rows.size(); ++t)
      std::copy(rw.k_nope.row(nope_rows[t]), rw.k_nope.row(nope_rows[t]) + c.dim, k_nope.row(int64_t(t)));
  } else {
    std::vector<HeadRows> heads;
    for (int64_t j = 0; j < n_kv; ++j) heads.push_back(head_rows(freqs[size_t(j)], c.rope_layout, hd));
    // Queries: each head reordered [rope | nope] with its KV head's split; no low rank (spec 2.5).
    out.q = Tensor::empty({c.q_dim(), c.dim}, wq.dtype());
    for (int64_t h = 0; h < c.n_heads; ++h) {
      const HeadRows& hr = heads[size_t(h / g)];
      gather_rows(out.q, h * hd, wq, offset(hr.rope, h * hd));
      gather_rows(out.q, h * hd + 2 * r, wq, offset(hr.nope, h * hd));
    }
    // RoPE keys stay full rank; the no-RoPE keys and the values share one latent. A = [k_nope; v]
    // [n_kv*d_c + n_kv*hd, dim] is the transpose of the spec's M = [W_k,nope | W_v], so spec 3.2's
    // W_dkv = U_D is our Vt_D and its Sigma_D V_D^T our U_D Sigma_D.
    out.k_rope = Tensor::empty({n_kv * 2 * r, c.dim}, wk.dtype());
    k_nope = MatrixD(n_kv * d_c, c.dim);
    for (int64_t j = 0; j < n_kv; ++j) {
      gather_rows(out.k_rope, j * 2 * r, wk, offset(heads[size_t(j)].rope, j * hd));
      gather_rows(k_nope, j * d_c, wk_values, c.dim, offset(heads[size_t(j)].nope, j * hd));
    }
  }

  // Both methods are factorized when the calibration moments are there, so the report can set
  // their activation energies side by side; the checkpoint gets the chosen one.
  const bool compare = moment && o.compare_inits;
  // RoRoPE's no-RoPE keys have as many rows as its dropped components leave (none when all are
  // kept): a latent wider than [k_nope; v] can hold gets the rank there is, and zero columns.
  const int64_t rank = rc.rorope ? std::min({D, k_nope.rows + v.rows, c.dim}) : D;
  std::optional<KvLatent> svd;
  if (o.init == LatentInit::svd || compare) {
    double energy = 0;
    svd = pad_latent(svd_latent(k_nope, v, rank, o.svd, o.sigma_in_up, &energy), D);
    out.weight_energy = energy;
  }
  std::optional<LatentPca> pca;
  if (o.init == LatentInit::pca || compare) {
    LATTE_ASSERT(moment != nullptr);
    const double alpha = o.pca_key_scale > 0 ? o.pca_key_scale : key_value_balance(k_nope, v, *moment);
    pca = balanced_joint_pca(k_nope, v, *moment, rank, alpha);
    pca->latent = pad_latent(std::move(pca->latent), D);
  }
  if (compare) {
    const KvEnergy es = kv_energy_kept(k_nope, v, *svd, *moment), ep = kv_energy_kept(k_nope, v, pca->latent, *moment);
    out.activation_energy = ActivationEnergy{.svd_keys = es.keys,
                                             .svd_values = es.values,
                                             .pca_keys = ep.keys,
                                             .pca_values = ep.values,
                                             .pca_balanced = pca->balanced_energy_kept,
                                             .alpha = pca->alpha};
  }
  const KvLatent& f = o.init == LatentInit::svd ? *svd : pca->latent;
  if (o.init == LatentInit::pca) out.key_scale = pca->alpha;
  out.kv_a = to_tensor(f.down);
  if (rc.rorope) {
    MatrixD k_up(n_kv * hd, D);  // k_b_proj over all no-RoPE rows; the zero ones stay zero
    for (size_t t = 0; t < nope_rows.size(); ++t)
      std::copy(f.k_up.row(int64_t(t)), f.k_up.row(int64_t(t)) + D, k_up.row(nope_rows[t]));
    out.k_b = to_tensor(k_up);
  } else {
    out.k_b = to_tensor(f.k_up);
  }
  out.v_b = to_tensor(f.v_up);
  return out;
}

void add_to_report(ConversionReport& rep, const ConvertedLayer& layer) {
  if (layer.activation_energy) rep.activation_energy.push_back(*layer.activation_energy);
  if (layer.weight_energy) rep.energy_kept.push_back(*layer.weight_energy);
  if (layer.rope_energy) rep.rope_energy.push_back(*layer.rope_energy);
}

Checkpoint convert_to_mla(const Checkpoint& src, const ConvertOptions& o, ConversionReport* report) {
  const ModelConfig& c = src.config;
  const ResolvedConversion rc = resolve_conversion(c, o, src.tensors.origin);

  CalibrationStats calib;
  if (rc.calibrate) {
    const Tokenizer& tok = calibration_tokenizer(o, rc, src.tokenizer.get());
    calib = collect_calibration(c, src.tensors, tok, conversion_calibration_options(o, rc),
                                o.backend ? *o.backend : cpu_backend(),
                                {.pair_norms = rc.two_norm, .input_moments = rc.moments});
  }
  const AttentionInputMoments& moments = calib.input_moments;
  // rorope: no per-head pairs (r = 0); its frequencies come with each layer below.
  RopeFreqs freqs = select_rope_freqs(rc.rorope ? RopeStrategy::high : o.strategy, rc.r, c,
                                      rc.two_norm ? &calib.pair_norms : nullptr);
  nlohmann::json prov = conversion_provenance(c, o, rc, src.tensors.origin, calib.text_tokens);
  std::vector<double> key_scales;  // pca: alpha per layer, recorded in the provenance
  // rorope: each layer's shared key frequencies, known once the layer is converted.
  std::vector<std::vector<int32_t>> shared_freqs(size_t(c.n_layers), std::vector<int32_t>(size_t(rc.d_r / 2), 0));

  Checkpoint dst;
  dst.config = rc.rorope ? mla_shared_rope_config(c, rc.d_kv, shared_freqs, prov.dump())
                         : mla_config(c, rc.r, rc.d_kv, freqs, prov.dump());
  dst.format = "mha2mla";  // made in memory, not read from a file
  dst.tensors.origin = src.tensors.origin + " (converted to MLA)";
  const std::string made_here = "the MHA2MLA conversion of " + src.tensors.origin;
  ConversionReport rep = conversion_report_head(c, dst.config, o, calib.positions);

  for (int64_t l = 0; l < c.n_layers; ++l) {
    const MatrixD moment = moments.empty() ? MatrixD() : moments.second_moment(l);
    ConvertedLayer layer = convert_layer(c, src.tensors, l, freqs[size_t(l)], moments.empty() ? nullptr : &moment, o, rc);
    add_to_report(rep, layer);
    if (layer.key_scale) key_scales.push_back(*layer.key_scale);
    if (rc.rorope) shared_freqs[size_t(l)] = layer.shared_rope_freqs;
    const std::string p = str_cat("model.layers.", l, ".self_attn.");
    dst.tensors.put(p + "q_proj.weight", layer.q.to(DType::f32), made_here);
    dst.tensors.put(p + "kv_a_proj.weight", layer.kv_a, made_here);
    dst.tensors.put(p + "k_rope_proj.weight", layer.k_rope.to(DType::f32), made_here);
    dst.tensors.put(p + "k_b_proj.weight", layer.k_b, made_here);
    dst.tensors.put(p + "v_b_proj.weight", layer.v_b, made_here);
  }
  // Everything outside q/k/v keeps its values, widened to f32 like the new tensors.
  for (const auto& [name, entry] : src.tensors.entries()) {
    if (dst.tensors.has(name) || name.ends_with(".self_attn.k_proj.weight") ||
        name.ends_with(".self_attn.v_proj.weight"))
      continue;
    Tensor t = entry.tensor.dtype() == DType::f32 ? entry.tensor : entry.tensor.to(DType::f32);
    dst.tensors.put(name, t, entry.file);
  }
  if (o.init == LatentInit::pca) {
    prov["pca_key_scale"] = key_scales;
    dst.config.mla_provenance = prov.dump();
  }
  if (rc.rorope) {
    dst.config.shared_rope_freqs = std::move(shared_freqs);
    dst.config.validate("the RoRoPE conversion");
  }
  check_model_tensors(dst.config, dst.tensors);
  if (report) *report = std::move(rep);
  return dst;
}

}  // namespace latte
