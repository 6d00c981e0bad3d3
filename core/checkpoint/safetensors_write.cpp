// Saving whole in-memory models and tensor stores, through the streaming writers
// (safetensors_stream_writer.h): every file appears atomically, so an interrupted save never
// leaves a torn file.
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "core/base/file_io.h"
#include "core/checkpoint/checkpoint.h"
#include "core/checkpoint/deepseek_layout.h"
#include "core/checkpoint/safetensors_file.h"
#include "core/checkpoint/safetensors_stream_writer.h"

namespace latte {

namespace {

// Model order for the known llama tensors (what a reader scanning the file expects), then any
// others by name.
std::vector<const std::pair<const std::string, TensorEntry>*> ordered(const ModelConfig& config, const TensorStore& tensors) {
  std::vector<const std::pair<const std::string, TensorEntry>*> out;
  std::set<std::string> done;
  auto add = [&](const std::string& name) {
    out.push_back(&*tensors.entries().find(name));
    done.insert(name);
  };
  if (config.n_layers > 0)
    for (const auto& [name, shape] : model_tensor_shapes(config))
      if (tensors.has(name)) add(name);
  for (const auto& [name, e] : tensors.entries())
    if (!done.count(name)) add(name);
  return out;
}

std::vector<PlannedTensor> plan_of(const std::vector<const std::pair<const std::string, TensorEntry>*>& items) {
  std::vector<PlannedTensor> plan;
  for (const auto* it : items) plan.push_back({it->first, it->second.tensor.shape()});
  return plan;
}

}  // namespace

void write_safetensors_file(const std::string& path, const TensorStore& tensors, DType dtype) {
  const auto items = ordered(ModelConfig{}, tensors);
  SafetensorsFileWriter w(path, plan_of(items), dtype);
  for (const auto* it : items) w.write(it->first, it->second.tensor);
  w.commit();
}

void save_deepseek_dir(const std::string& dir, const ModelConfig& config, const TensorStore& tensors,
                       const SaveOptions& opts) {
  const std::string config_json = deepseek_config_json(config);  // refuses a model without one shared RoPE key
  const TensorStore ds = to_deepseek_tensors(config, tensors);
  const auto items = ordered(ModelConfig{}, ds);  // by name: none of DeepSeek's names is in Latte's table order
  SafetensorsDirWriter w(dir, plan_of(items), opts.dtype, opts.max_shard_bytes);
  for (const auto* it : items) w.write(it->first, it->second.tensor);
  w.finish_with_config(config_json);
}

void save_safetensors_dir(const std::string& dir, const ModelConfig& config, const TensorStore& tensors,
                          const SaveOptions& opts) {
  config.validate(dir);
  check_model_tensors(config, tensors);
  const auto items = ordered(config, tensors);
  SafetensorsDirWriter w(dir, plan_of(items), opts.dtype, opts.max_shard_bytes);
  for (const auto* it : items) w.write(it->first, it->second.tensor);
  w.finish(config);
}

}  // namespace latte
