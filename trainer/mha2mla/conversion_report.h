// What a conversion did and what it saves: per-layer SVD energy on the weights, per-layer energy
// kept on the calibration activations for both latent initialisations (issue 17), parameters and
// KV-cache size before and after (shared/notes/mha2mla-spec.md 3.5, 3.6), printed as tables by
// latte convert.
#pragma once
#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

#include "core/model/config.h"

namespace latte {

// One layer's fraction of the calibration keys' (no-RoPE part, pre-RoPE) and values' E||.||^2 that
// each factorization keeps (kv_latent.h output_energy_kept; the svd columns use the chosen SVD
// method), plus the PCA's objective on the balanced outputs and its key scale.
struct ActivationEnergy {
  double svd_keys = 0, svd_values = 0, pca_keys = 0, pca_values = 0;
  double pca_balanced = 0;  // kept eigenvalue mass of [K_nope/alpha; V]
  double alpha = 1;
};

struct ConversionReport {
  std::string strategy, svd, init = "svd";
  int64_t rope_pairs = 0, kv_rank_per_head = 0, kv_lora_rank = 0;
  int64_t shared_rope_dim = 0;       // RoRoPE: d_r of the one shared RoPE key (strategy "rorope")
  std::vector<double> rope_energy;   // RoRoPE, per layer: the keys' E||k||^2 share on the shared key
  int64_t calib_positions = 0;       // when a calibration text was run
  std::vector<double> energy_kept;   // svd, per layer: sum of kept sigma^2 / sum of all sigma^2
  std::vector<ActivationEnergy> activation_energy;  // per layer, when a calibration text was run
  int64_t params_before = 0, params_after = 0;  // ModelConfig::parameter_count
  int64_t kv_elements_before = 0, kv_elements_after = 0;  // cached per token, all layers
};

// The size rows of a report (parameters, KV cache) for a source and a converted config.
ConversionReport size_report(const ModelConfig& before, const ModelConfig& after);
// Cache change in percent, e.g. -81.25.
double kv_cache_reduction_percent(const ConversionReport& r);
// The report as a table: settings, per-layer SVD energy, parameters, KV bytes per token.
void print_conversion_report(std::ostream& out, const ConversionReport& r);

}  // namespace latte
