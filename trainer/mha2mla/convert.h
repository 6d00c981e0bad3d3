// MHA2MLA conversion of a Llama MHA/GQA checkpoint (shared/notes/mha2mla-spec.md 2.5, 3.1-3.3,
// 3.8): partial RoPE on r frequency pairs per KV head, the rest of the keys and all values
// through one low-rank latent of width D = n_kv_heads * d_kv per token, factorized in float64
// either by SVD of the weights (MHA2MLA) or by the balanced PCA of the calibration activations
// (TransMLA-style, issue 17, trainer/mha2mla/latent_pca.h). The result is an MLA checkpoint (core/model/config.h,
// core/model/model_tensors.h); only the attention's K/V side and q_proj's row order change. Or, with
// RoPE mode rorope (trainer/mha2mla/rorope.h), the KV heads' RoPE components rotated into one shared
// RoPE key of d_r dims (DeepSeek's layout), q_proj's heads mixed to read it.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/checkpoint/checkpoint.h"
#include "trainer/mha2mla/calibration.h"
#include "trainer/mha2mla/conversion_report.h"
#include "trainer/mha2mla/partial_rope.h"

namespace latte {

// joint: one SVD of [k_nope; v] (the paper's default, spec 3.2); split: one SVD each, D/2 ranks
// apiece (ablation, spec 3.3).
enum class SvdMethod { joint, split };
const char* svd_method_name(SvdMethod m);
SvdMethod svd_method_from_name(const std::string& name);

// svd: factorize the weights (the default, MHA2MLA). pca: the principal directions of the
// calibration keys and values, keys balanced against values (latent_pca.h); needs calibration.
enum class LatentInit { svd, pca };
const char* latent_init_name(LatentInit i);
LatentInit latent_init_from_name(const std::string& name);

// partial: MHA2MLA's partial RoPE, r kept pairs per KV head (partial_rope.h). rorope: one shared
// RoPE key of d_r dims rotated out of all KV heads (rorope.h); needs calibration.
enum class RopeMode { partial, rorope };
const char* rope_mode_name(RopeMode m);                // "partial", "rorope"
RopeMode rope_mode_from_name(const std::string& name);  // invalid_argument naming the choices

struct ConvertOptions {
  RopeMode rope_mode = RopeMode::partial;
  // rorope: d_r, the shared RoPE key's dims (even, in [2, n_kv_heads*head_dim]); -1: head_dim (as
  // DeepSeek-V2/V3 and TransMLA keep: 64 RoPE dims against 128-dim heads, here one head's worth).
  int64_t rope_dims = -1;
  RopeStrategy strategy = RopeStrategy::two_norm;  // the paper's default (spec 2.2); partial only
  // r, kept frequency pairs per head; -1: head_dim/16 (the paper's choice, spec 2.4), at least 1.
  int64_t rope_pairs = -1;
  // d_kv, latent rank per KV head; -1: head_dim/4, at least 1. With r = head_dim/16 that caches
  // 2r + d_kv = 3/16 of a head pair per KV head: the paper's middle setting (-81.25 %, d_kv 16
  // for SmolLM, 32 for Llama-2-7B).
  int64_t kv_rank_per_head = -1;
  SvdMethod svd = SvdMethod::joint;
  LatentInit init = LatentInit::svd;
  // pca only: the key scale alpha; 0: balanced from the calibration (key_value_balance). Any
  // positive value gives the same function at full rank (a test uses this).
  double pca_key_scale = 0;
  // true (both code generations, what produced the paper's tables): kv_a_proj = V_D^T with
  // orthonormal rows, up = U_D Sigma_D. false (the paper's text): Sigma_D^(1/2) on each side.
  bool sigma_in_up = true;
  // With a calibration text: factorize with both initialisations, so that the report sets their
  // energies on the activations side by side (issue 17's tables). It costs the unchosen
  // factorization and the energy products per layer: seconds for SmolLM2, several minutes per
  // layer at Llama-2-7B's width. false: only the chosen one, and only the moments it needs.
  bool compare_inits = true;
  // The text for strategy two_norm and init pca. Given with init svd, it only adds the
  // activation energies to the report (the weights are those without it).
  CalibrationOptions calibration;
  const Tokenizer* tokenizer = nullptr;  // for calibration; null: the checkpoint's own
  Backend* backend = nullptr;            // runs the calibration; null: the CPU backend
  std::string source_name;               // recorded in mla_provenance
};

// The MLA config for src with these choices (validated); provenance is JSON text.
ModelConfig mla_config(const ModelConfig& src, int64_t rope_pairs, int64_t kv_rank_per_head, RopeFreqs rope_freqs,
                       const std::string& provenance);
// The same in DeepSeek's layout: one shared RoPE key, pair s at frequency shared_freqs[l][s].
ModelConfig mla_shared_rope_config(const ModelConfig& src, int64_t kv_rank_per_head,
                                   std::vector<std::vector<int32_t>> shared_freqs, const std::string& provenance);

// Converts src (architecture llama, any RoPE layout, any weight dtype) into an MLA checkpoint with
// f32 tensors; the embedding, norms, MLP and o_proj keep their values. report may be null.
// Refuses (invalid_argument, one line): an MLA source, r outside [0, head_dim/2], d_kv < 1, a
// latent wider than the factorized matrix's rank bound, an odd D for split, 2norm without a
// calibration text or tokenizer, an empty calibration text, pca without a calibration text, with
// split, or with fewer calibration tokens than the latent width D; rorope with d_r odd or outside
// [2, n_kv_heads*head_dim], without a calibration text, with split, or with rope_pairs given.
Checkpoint convert_to_mla(const Checkpoint& src, const ConvertOptions& o, ConversionReport* report);

}  // namespace latte
