// The MHA2MLA conversion of a checkpoint larger than memory (issue 16): read, convert and write
// one layer at a time. The source is a memory-mapped safetensors folder (load_safetensors_dir
// with check_finite off: nothing is read until used); each layer's tensors are checked for NaN/Inf,
// calibrated (LayerwiseCalibration, when the options need a text), converted (convert_layer.h,
// the in-memory conversion's own code) and written through SafetensorsDirWriter, and then their
// pages are released (TensorStore::release_pages). Peak memory is about one layer's weights plus
// the factorization's float64 workspace and the calibration's hidden states, not the model.
//
// With keep_source_dtype false every tensor is written f32 and the folder is byte-identical to
// export_checkpoint(convert_to_mla(src)) with the same shard size (a test holds it there). With
// it true (latte convert's default), tensors the method only copies or permutes (embedding, norms,
// MLP, o_proj, q_proj, k_rope_proj) keep their source dtype bit for bit and the factors it
// computes (kv_a_proj, k_b_proj, v_b_proj) are f32: no rounding beyond the in-memory conversion's.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

#include "trainer/mha2mla/convert.h"

namespace latte {

struct StreamedConvertProgress {
  int64_t layers_done = 0, layers = 0;
  double seconds = 0;  // since the conversion started (calibration embedding included)
};

struct StreamedConvertOptions {
  ConvertOptions convert;
  bool keep_source_dtype = true;
  size_t max_shard_bytes = 0;  // 0: one model.safetensors; else shards + model.safetensors.index.json
  std::function<void(const StreamedConvertProgress&)> progress;  // after each layer
};

// Converts src (loaded from a safetensors folder, typically with check_finite off) into out_dir:
// config.json and the weights (no tokenizer: the caller writes it, export_tokenizer). Returns the
// converted config. Refuses what convert_to_mla refuses, and a NaN/Inf weight naming tensor and
// file; out_dir keeps no partial weights on an error (each file appears atomically and
// config.json last).
ModelConfig convert_to_mla_streamed(const Checkpoint& src, const std::string& out_dir, const StreamedConvertOptions& o,
                                    ConversionReport* report);

}  // namespace latte
