// Writes a Hugging Face folder: model.safetensors (or shards + index), then config.json; every
// file goes through atomic_write so an interrupted save never leaves a torn file.
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "core/base/file_io.h"
#include "core/checkpoint/checkpoint.h"
#include "core/checkpoint/safetensors_file.h"

namespace latte {

namespace {

using nlohmann::json;
namespace fs = std::filesystem;

const char* safetensors_dtype(DType t) {
  switch (t) {
    case DType::f32: return "F32";
    case DType::bf16: return "BF16";
    case DType::f16: return "F16";
    case DType::q8_0:
    case DType::q4_0:
    case DType::q4_1: break;  // GGML block formats have no safetensors dtype: callers widen first
    case DType::i8: break;    // cache codes without their scales: not a checkpoint dtype
  }
  fail(ErrorCode::unsupported, "safetensors cannot store ", dtype_name(t), " tensors (widen them first)");
}

const char* torch_dtype(DType t) {
  switch (t) {
    case DType::f32: return "float32";
    case DType::bf16: return "bfloat16";
    case DType::f16: return "float16";
    case DType::q8_0:
    case DType::q4_0:
    case DType::q4_1:
    case DType::i8: break;
  }
  fail(ErrorCode::unsupported, "safetensors cannot store ", dtype_name(t), " tensors (widen them first)");
}

struct Item {
  std::string name;
  const Tensor* tensor;
  size_t bytes;  // in the output dtype
};

// Model order for the known llama tensors (what a reader scanning the file expects), then any
// others by name.
std::vector<Item> ordered_items(const ModelConfig& config, const TensorStore& tensors, DType dtype) {
  std::vector<Item> items;
  std::set<std::string> done;
  auto add = [&](const std::string& name) {
    const Tensor& t = tensors.get(name);
    LATTE_REQUIRE(t.device().kind == DeviceKind::cpu, ErrorCode::unsupported, "save: tensor ", name,
                  " is on a device; copy it to the host first");
    items.push_back({name, &t, size_t(t.numel()) * dtype_size(dtype)});
    done.insert(name);
  };
  if (config.n_layers > 0)
    for (const auto& [name, shape] : model_tensor_shapes(config))
      if (tensors.has(name)) add(name);
  for (const auto& [name, e] : tensors.entries())
    if (!done.count(name)) add(name);
  return items;
}

void write_safetensors_file(const std::string& path, const std::vector<Item>& items, DType dtype) {
  json header = json::object();
  header["__metadata__"] = {{"format", "pt"}};
  size_t offset = 0;
  for (const Item& it : items) {
    header[it.name] = {{"dtype", safetensors_dtype(dtype)},
                       {"shape", it.tensor->shape()},
                       {"data_offsets", {offset, offset + it.bytes}}};
    offset += it.bytes;
  }
  std::string text = header.dump();
  // Pad with spaces to a multiple of 8, as the reference implementation does, so the data section
  // (and every tensor in it) starts aligned in a memory map.
  text.append((8 - text.size() % 8) % 8, ' ');
  const uint64_t n = text.size();
  atomic_write(path, [&](FileWriter& w) {
    w.write(&n, 8);
    w.write(text.data(), text.size());
    for (const Item& it : items) {
      const Tensor& t = *it.tensor;
      if (t.dtype() == dtype && t.is_contiguous()) {
        w.write(t.raw(), it.bytes);
      } else {
        Tensor converted = t.to(dtype);  // one tensor at a time keeps the extra memory bounded
        w.write(converted.raw(), it.bytes);
      }
    }
  });
}

std::string shard_name(size_t i, size_t n) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", i + 1, n);
  return buf;
}

// model.safetensors, model-*-of-*.safetensors and the index left by an earlier save that this
// one did not rewrite; the loader would otherwise pick up a stale single file over new shards.
void remove_stale_weights(const std::string& dir, const std::set<std::string>& written) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    const bool ours = name == "model.safetensors" || name == "model.safetensors.index.json" ||
                      (name.starts_with("model-") && name.ends_with(".safetensors") &&
                       name.find("-of-") != std::string::npos);
    if (ours && !written.count(name)) fs::remove(entry.path(), ec);
  }
}

}  // namespace

void write_safetensors_file(const std::string& path, const TensorStore& tensors, DType dtype) {
  write_safetensors_file(path, ordered_items(ModelConfig{}, tensors, dtype), dtype);
}

void save_safetensors_dir(const std::string& dir, const ModelConfig& config, const TensorStore& tensors,
                          const SaveOptions& opts) {
  config.validate(dir);
  check_model_tensors(config, tensors);
  std::error_code ec;
  fs::create_directories(dir, ec);
  LATTE_REQUIRE(is_directory(dir), ErrorCode::io, "cannot create folder ", dir, ": ", ec.message());

  std::vector<Item> items = ordered_items(config, tensors, opts.dtype);
  std::set<std::string> written;
  if (opts.max_shard_bytes == 0) {
    write_safetensors_file((fs::path(dir) / "model.safetensors").string(), items, opts.dtype);
    written.insert("model.safetensors");
  } else {
    // Greedy packing in model order; a tensor larger than the limit gets a shard of its own, as
    // transformers' save_pretrained does.
    std::vector<std::vector<Item>> shards(1);
    size_t current = 0, total = 0;
    for (const Item& it : items) {
      if (!shards.back().empty() && current + it.bytes > opts.max_shard_bytes) {
        shards.emplace_back();
        current = 0;
      }
      shards.back().push_back(it);
      current += it.bytes;
      total += it.bytes;
    }
    json weight_map = json::object();
    for (size_t i = 0; i < shards.size(); ++i) {
      const std::string name = shard_name(i, shards.size());
      write_safetensors_file((fs::path(dir) / name).string(), shards[i], opts.dtype);
      written.insert(name);
      for (const Item& it : shards[i]) weight_map[it.name] = name;
    }
    json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
    atomic_write_string((fs::path(dir) / "model.safetensors.index.json").string(), index.dump(2) + "\n");
    written.insert("model.safetensors.index.json");
  }

  json cfg = json::parse(config_to_json_text(config));
  cfg["torch_dtype"] = torch_dtype(opts.dtype);
  atomic_write_string((fs::path(dir) / "config.json").string(), cfg.dump(2) + "\n");
  remove_stale_weights(dir, written);
}

}  // namespace latte
