#include "trainer/mha2mla/conversion_report.h"

#include <algorithm>
#include <iomanip>
#include <ostream>
#include <sstream>

namespace latte {

ConversionReport size_report(const ModelConfig& before, const ModelConfig& after) {
  ConversionReport r;
  r.params_before = before.parameter_count();
  r.params_after = after.parameter_count();
  r.kv_elements_before = before.kv_cache_elements_per_token();
  r.kv_elements_after = after.kv_cache_elements_per_token();
  r.rope_pairs = after.rope_pairs;
  r.shared_rope_dim = after.shared_rope_dim;
  r.kv_rank_per_head = after.kv_rank_per_head;
  r.kv_lora_rank = after.kv_lora_rank();
  return r;
}

double kv_cache_reduction_percent(const ConversionReport& r) {
  return 100.0 * (double(r.kv_elements_after) - double(r.kv_elements_before)) / double(r.kv_elements_before);
}

namespace {

// 134515008 -> "134.52M", 6738415616 -> "6.74B": the precision of the paper's Table 4.
std::string human_count(int64_t n) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(2);
  if (n >= 1000000000)
    s << double(n) / 1e9 << "B";
  else if (n >= 1000000)
    s << double(n) / 1e6 << "M";
  else if (n >= 1000)
    s << double(n) / 1e3 << "K";
  else
    s << n;
  return s.str();
}

// One energy per layer, then their mean and minimum, under `title`.
void print_layer_energies(std::ostream& out, const std::string& title, const std::vector<double>& energy) {
  out << "\n" << title << "\n  layer    energy\n";
  double lo = 1, sum = 0;
  for (size_t l = 0; l < energy.size(); ++l) {
    out << "  " << std::setw(5) << l << "  " << std::fixed << std::setprecision(6) << energy[l] << "\n";
    lo = std::min(lo, energy[l]);
    sum += energy[l];
  }
  out << "  mean   " << std::setprecision(6) << sum / double(energy.size()) << "   (min " << lo << ")\n";
}

std::string percent_change(double before, double after) {
  std::ostringstream s;
  s << std::showpos << std::fixed << std::setprecision(2) << 100.0 * (after - before) / before << " %";
  return s.str();
}

}  // namespace

void print_conversion_report(std::ostream& out, const ConversionReport& r) {
  const std::string latent = r.init == "pca" ? "latent from balanced PCA of the activations" : "SVD " + r.svd;
  if (r.shared_rope_dim > 0) {
    out << "MHA2MLA conversion with RoRoPE: one shared RoPE key of d_r = " << r.shared_rope_dim
        << " dims, d_kv = " << r.kv_rank_per_head << " (latent width D = " << r.kv_lora_rank << "), " << latent << "\n";
  } else {
    out << "MHA2MLA conversion: RoPE strategy " << r.strategy << ", r = " << r.rope_pairs << " ("
        << 2 * r.rope_pairs << " RoPE dims per head), d_kv = " << r.kv_rank_per_head << " (latent width D = "
        << r.kv_lora_rank << "), " << latent << "\n";
  }
  if (r.calib_positions > 0) out << "calibration over " << r.calib_positions << " positions\n";
  if (!r.rope_energy.empty())
    print_layer_energies(out, "RoRoPE: share of the keys' energy (pre-RoPE, calibration) on the shared RoPE key",
                         r.rope_energy);
  if (!r.energy_kept.empty())
    print_layer_energies(out, "SVD energy kept (sum of kept sigma^2 / all sigma^2)", r.energy_kept);
  if (!r.activation_energy.empty()) {
    out << "\nEnergy kept on the calibration activations (1 - E||x - x_hat||^2 / E||x||^2; x = no-RoPE keys, values)\n"
        << "  layer   svd keys  svd values   pca keys  pca values   pca balanced   alpha\n";
    ActivationEnergy mean;
    mean.alpha = 0;
    for (size_t l = 0; l < r.activation_energy.size(); ++l) {
      const ActivationEnergy& e = r.activation_energy[l];
      out << "  " << std::setw(5) << l << std::fixed << std::setprecision(4) << std::setw(11) << e.svd_keys
          << std::setw(12) << e.svd_values << std::setw(11) << e.pca_keys << std::setw(12) << e.pca_values
          << std::setw(15) << e.pca_balanced << std::setw(8) << std::setprecision(3) << e.alpha << "\n";
      mean.svd_keys += e.svd_keys;
      mean.svd_values += e.svd_values;
      mean.pca_keys += e.pca_keys;
      mean.pca_values += e.pca_values;
      mean.pca_balanced += e.pca_balanced;
      mean.alpha += e.alpha;
    }
    const double n = double(r.activation_energy.size());
    out << "   mean" << std::setprecision(4) << std::setw(11) << mean.svd_keys / n << std::setw(12)
        << mean.svd_values / n << std::setw(11) << mean.pca_keys / n << std::setw(12) << mean.pca_values / n
        << std::setw(15) << mean.pca_balanced / n << std::setw(8) << std::setprecision(3) << mean.alpha / n << "\n";
    out << "  (the model written uses the " << r.init << " columns)\n";
  }
  auto row = [&](const std::string& name, const std::string& before, const std::string& after,
                 const std::string& change) {
    out << "  " << std::left << std::setw(24) << name << std::right << std::setw(16) << before << std::setw(16)
        << after << std::setw(12) << change << "\n";
  };
  out << "\n";
  row("", "before", "after", "change");
  row("parameters", human_count(r.params_before), human_count(r.params_after),
      percent_change(double(r.params_before), double(r.params_after)));
  row("KV cache elements/token", std::to_string(r.kv_elements_before), std::to_string(r.kv_elements_after),
      percent_change(double(r.kv_elements_before), double(r.kv_elements_after)));
  for (auto [name, bytes] : {std::pair<const char*, int64_t>{"f32", 4}, {"bf16", 2}, {"int8", 1}})
    row(std::string("KV cache bytes/token ") + name, std::to_string(r.kv_elements_before * bytes),
        std::to_string(r.kv_elements_after * bytes),
        percent_change(double(r.kv_elements_before), double(r.kv_elements_after)));
  out.flush();
}

}  // namespace latte
