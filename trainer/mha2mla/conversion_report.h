// What a conversion did and what it saves: per-layer SVD energy, parameters and KV-cache size
// before and after (shared/notes/mha2mla-spec.md 3.5, 3.6), printed as a table by latte convert.
#pragma once
#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

#include "core/model/config.h"

namespace latte {

struct ConversionReport {
  std::string strategy, svd;
  int64_t rope_pairs = 0, kv_rank_per_head = 0, kv_lora_rank = 0;
  int64_t calib_positions = 0;       // 2norm only
  std::vector<double> energy_kept;   // per layer: sum of kept sigma^2 / sum of all sigma^2
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
