// Hugging Face folders: config.json + model.safetensors, or shards listed in
// model.safetensors.index.json. Tensors are views on the memory maps, in the dtype stored.
#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "core/base/file_io.h"
#include "core/checkpoint/checkpoint.h"
#include "core/checkpoint/deepseek_layout.h"
#include "core/checkpoint/safetensors_file.h"

namespace latte {

namespace {

using nlohmann::json;
namespace fs = std::filesystem;

// The reference implementation refuses headers above 100 MB; a larger length is a corrupt file.
constexpr uint64_t kMaxHeaderBytes = 100u << 20;

bool dtype_from_safetensors(const std::string& s, DType* out) {
  if (s == "F32") *out = DType::f32;
  else if (s == "BF16") *out = DType::bf16;
  else if (s == "F16") *out = DType::f16;
  else return false;
  return true;
}

bool is_known_safetensors_dtype(const std::string& s) {
  static const std::set<std::string> known = {"BOOL", "U8",  "I8",  "I16", "U16",     "I32",    "U32",
                                              "I64",  "U64", "F64", "F8_E4M3", "F8_E5M2", "F8_E8M0",
                                              "F4",   "F6_E2M3", "F6_E3M2", "I4", "U4"};
  return known.count(s) > 0;
}

// Reads one .safetensors file into `store`, validating the header against the file.
void read_safetensors_file(const std::string& path, TensorStore& store) {
  LATTE_REQUIRE(file_exists(path), ErrorCode::io, "safetensors file ", path, " does not exist");
  auto file = std::make_shared<MappedFile>(path);
  const uint64_t size = file->size();
  LATTE_REQUIRE(size >= 8, ErrorCode::bad_file, path, " is truncated: ", size,
                " bytes, shorter than the 8-byte header length");
  uint64_t n;
  std::memcpy(&n, file->data(), 8);
  LATTE_REQUIRE(n <= kMaxHeaderBytes, ErrorCode::bad_file, path, ": header length ", n,
                " is implausible (over 100 MB); not a safetensors file?");
  LATTE_REQUIRE(8 + n <= size, ErrorCode::bad_file, path, ": header length ", n, " runs past the end of the file (",
                size, " bytes)");
  json header;
  try {
    header = json::parse(file->data() + 8, file->data() + 8 + n);
  } catch (const json::exception& e) {
    fail(ErrorCode::bad_file, path, ": header is not valid JSON (", e.what(), ")");
  }
  LATTE_REQUIRE(header.is_object(), ErrorCode::bad_file, path, ": header is not a JSON object");

  const uint64_t data_start = 8 + n;
  const uint64_t data_bytes = size - data_start;
  struct Range {
    uint64_t begin, end;
    std::string name;
  };
  std::vector<Range> ranges;
  std::vector<std::pair<std::string, Tensor>> tensors;
  std::vector<bool> viewed;  // the tensor is a view on the map (not a copy out of it)
  std::shared_ptr<void> keep = file;
  auto* data = const_cast<uint8_t*>(file->data()) + data_start;

  for (const auto& item : header.items()) {
    // Named variables, not a structured binding: clang 14 (the fuzz build) cannot capture a
    // binding in the lambda below.
    const std::string& name = item.key();
    const json& info = item.value();
    if (name == "__metadata__") continue;
    auto bad = [&](auto&&... parts) { fail(ErrorCode::bad_file, "tensor ", name, " in ", path, ": ", parts...); };
    if (!info.is_object() || !info.contains("dtype") || !info.contains("shape") || !info.contains("data_offsets"))
      bad("header entry needs dtype, shape and data_offsets, got ", info.dump());
    const json& jd = info["dtype"];
    if (!jd.is_string()) bad("dtype is not a string");
    const std::string ds = jd.get<std::string>();
    DType dtype;
    if (!dtype_from_safetensors(ds, &dtype)) {
      if (is_known_safetensors_dtype(ds))
        fail(ErrorCode::unsupported, "tensor ", name, " in ", path, " has dtype ", ds,
             ", not supported (F32, BF16, F16 only)");
      bad("unknown dtype \"", ds, "\"");
    }
    const json& js = info["shape"];
    if (!js.is_array()) bad("shape is not an array");
    Shape shape;
    unsigned __int128 numel = 1;
    for (const json& d : js) {
      if (!d.is_number_unsigned()) bad("shape ", js.dump(), " has an entry that is not a non-negative integer");
      shape.push_back(d.get<int64_t>());
      numel *= d.get<uint64_t>();
      if (numel > (unsigned __int128)1 << 62) bad("shape ", js.dump(), " is too large");
    }
    const json& jo = info["data_offsets"];
    if (!jo.is_array() || jo.size() != 2 || !jo[0].is_number_unsigned() || !jo[1].is_number_unsigned())
      bad("data_offsets ", jo.dump(), " is not a pair of non-negative integers");
    const uint64_t begin = jo[0].get<uint64_t>(), end = jo[1].get<uint64_t>();
    if (begin > end) bad("data_offsets [", begin, ", ", end, "] run backwards");
    const uint64_t want = uint64_t(numel) * dtype_size(dtype);
    if (end - begin != want)
      bad("data_offsets [", begin, ", ", end, "] hold ", end - begin, " bytes, but shape ", shape_str(shape), " of ", ds,
          " needs ", want);
    if (end > data_bytes)
      fail(ErrorCode::bad_file, path, " is truncated: tensor ", name, " needs data bytes [", begin, ", ", end,
           ") but only ", data_bytes, " follow the header (file is ", size, " bytes)");
    ranges.push_back({begin, end, name});
    void* p = data + begin;
    Tensor t;
    // A header length that is not a multiple of 8 (other writers) can leave data misaligned for
    // its dtype; only then is the tensor copied out of the map.
    if (reinterpret_cast<uintptr_t>(p) % dtype_size(dtype) != 0) {
      t = Tensor::empty(shape, dtype);
      std::memcpy(t.raw(), p, want);
    } else {
      t = Tensor::borrow(p, shape, dtype, Device::cpu(), keep);
    }
    viewed.push_back(t.raw() == p);
    tensors.emplace_back(name, std::move(t));
  }

  // The reference implementation requires the tensors to tile the data section exactly.
  std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t covered = 0;
  for (size_t i = 0; i < ranges.size(); ++i) {
    const Range& r = ranges[i];
    if (r.begin < covered)
      fail(ErrorCode::bad_file, "tensor ", r.name, " in ", path, ": data_offsets [", r.begin, ", ", r.end,
           ") overlap tensor ", ranges[i - 1].name, " (ends at ", covered, ")");
    if (r.begin > covered && r.end > r.begin)
      fail(ErrorCode::bad_file, "tensor ", r.name, " in ", path, ": data_offsets start at ", r.begin,
           ", leaving a gap after byte ", covered, " of the data section");
    covered = std::max(covered, r.end);
  }
  if (covered != data_bytes)
    fail(ErrorCode::bad_file, path, " has ", data_bytes - covered, " bytes after the last tensor (data section is ",
         data_bytes, " bytes, tensors end at ", covered, ")");

  for (size_t i = 0; i < tensors.size(); ++i) {
    auto& [name, t] = tensors[i];
    if (store.has(name))
      fail(ErrorCode::bad_file, "tensor ", name, " appears in both ", store.file_of(name), " and ", path);
    store.put(name, std::move(t), path, viewed[i] ? file : nullptr);
  }
}

std::unique_ptr<Tokenizer> tokenizer_beside(const std::string& dir, int64_t vocab_size) {
  const std::string json_path = (fs::path(dir) / "tokenizer.json").string();
  if (file_exists(json_path)) return load_hf_tokenizer_json(json_path);
  const std::string bin_path = (fs::path(dir) / "tokenizer.bin").string();
  if (file_exists(bin_path)) return load_llama2c_tokenizer(bin_path, vocab_size);
  return nullptr;
}

}  // namespace

TensorStore read_safetensors_file(const std::string& path) {
  TensorStore store;
  store.origin = path;
  read_safetensors_file(path, store);
  return store;
}

Checkpoint load_safetensors_dir(const std::string& dir, const LoadOptions& opts) {
  LATTE_REQUIRE(is_directory(dir), ErrorCode::io, dir, " is not a folder");
  const std::string config_path = (fs::path(dir) / "config.json").string();
  LATTE_REQUIRE(file_exists(config_path), ErrorCode::io, "missing config.json in ", dir);
  Checkpoint ck;
  ck.format = "safetensors";
  const std::string config_text = read_text_file(config_path);
  // A DeepSeek-V3-style folder latte export wrote (deepseek_layout.h): renamed back after reading.
  const bool deepseek = is_deepseek_config(config_text);
  if (deepseek) ck.format = "deepseek_v3";
  ck.config = deepseek ? config_from_deepseek_json(config_text, config_path) : config_from_json_text(config_text, config_path);
  if (opts.config_only) return ck;
  ck.tensors.origin = dir;

  const std::string single = (fs::path(dir) / "model.safetensors").string();
  const std::string index_path = (fs::path(dir) / "model.safetensors.index.json").string();
  if (file_exists(single)) {
    read_safetensors_file(single, ck.tensors);
  } else if (file_exists(index_path)) {
    json index;
    try {
      index = json::parse(read_text_file(index_path));
    } catch (const json::exception& e) {
      fail(ErrorCode::bad_file, index_path, ": not valid JSON (", e.what(), ")");
    }
    LATTE_REQUIRE(index.is_object() && index.contains("weight_map") && index["weight_map"].is_object(),
                  ErrorCode::bad_file, index_path, ": no \"weight_map\" object");
    std::map<std::string, std::string> weight_map;  // tensor -> shard file name
    std::set<std::string> shards;
    for (const auto& [name, shard] : index["weight_map"].items()) {
      LATTE_REQUIRE(shard.is_string(), ErrorCode::bad_file, index_path, ": weight_map entry for ", name,
                    " is not a file name");
      const std::string s = shard.get<std::string>();
      // Shards must live in the folder: a path elsewhere is a broken (or hostile) index.
      LATTE_REQUIRE(s.find('/') == std::string::npos && s != ".." && !s.empty(), ErrorCode::bad_file, index_path,
                    ": weight_map entry for ", name, " names \"", s, "\", not a file in the folder");
      weight_map[name] = s;
      shards.insert(s);
    }
    for (const std::string& s : shards) {
      const std::string p = (fs::path(dir) / s).string();
      if (!file_exists(p)) {
        std::string example;
        for (const auto& [name, shard] : weight_map)
          if (shard == s) { example = name; break; }
        fail(ErrorCode::bad_file, index_path, " names shard ", s, " (for tensor ", example,
             " and others) which does not exist in ", dir);
      }
      read_safetensors_file(p, ck.tensors);
    }
    for (const auto& [name, shard] : weight_map) {
      const std::string p = (fs::path(dir) / shard).string();
      LATTE_REQUIRE(ck.tensors.has(name) && ck.tensors.file_of(name) == p, ErrorCode::bad_file, index_path,
                    " places tensor ", name, " in ", shard, ", but that shard does not hold it");
    }
    for (const auto& [name, e] : ck.tensors.entries())
      LATTE_REQUIRE(weight_map.count(name), ErrorCode::bad_file, "tensor ", name, " in ", e.file, " is not listed in ",
                    index_path);
  } else {
    fail(ErrorCode::io, "no model.safetensors or model.safetensors.index.json in ", dir);
  }

  // Older transformers versions saved RoPE's inverse frequencies as a buffer; they follow from
  // the config, so they are dropped rather than treated as unexpected.
  std::vector<std::string> derived;
  for (const auto& [name, e] : ck.tensors.entries())
    if (name.size() > 24 && name.ends_with(".rotary_emb.inv_freq")) derived.push_back(name);
  for (const auto& name : derived) ck.tensors.erase(name);

  if (deepseek) ck.tensors = from_deepseek_tensors(ck.config, ck.tensors);
  check_model_tensors(ck.config, ck.tensors);
  if (opts.check_finite) ck.tensors.check_all_finite();
  ck.tokenizer = tokenizer_beside(dir, ck.config.vocab_size);
  return ck;
}

}  // namespace latte
