#include "core/checkpoint/safetensors_stream_writer.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "core/model/model_tensors.h"

namespace latte {

namespace {

using nlohmann::json;
namespace fs = std::filesystem;

int64_t element_count(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

std::string shape_text(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

DType stored_dtype(const PlannedTensor& t, DType writer_dtype) { return t.dtype.value_or(writer_dtype); }

size_t stored_bytes(const PlannedTensor& t, DType writer_dtype) {
  return size_t(element_count(t.shape)) * dtype_size(stored_dtype(t, writer_dtype));
}

std::string shard_file_name(size_t i, size_t n) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", i + 1, n);
  return buf;
}

bool is_weight_file_name(const std::string& name) {
  return name == "model.safetensors" || name == "model.safetensors.index.json" ||
         (name.starts_with("model-") && name.ends_with(".safetensors") && name.find("-of-") != std::string::npos);
}

// "<weight file>.tmp.<pid>" (AtomicFile's temp name) of a process that no longer runs: what a
// save killed mid-write leaves (a 4 GiB shard of a 7B conversion each time it is interrupted).
// A live process's temp file is left alone: it may be a concurrent save of its own.
bool is_orphaned_temp(const std::string& name) {
  const size_t at = name.rfind(".tmp.");
  if (at == std::string::npos || !is_weight_file_name(name.substr(0, at))) return false;
  const std::string pid_text = name.substr(at + 5);
  if (pid_text.empty() || pid_text.size() > 9 || pid_text.find_first_not_of("0123456789") != std::string::npos)
    return false;
  const pid_t pid = pid_t(std::stol(pid_text));
  return pid != ::getpid() && ::kill(pid, 0) != 0 && errno == ESRCH;
}

// model.safetensors, model-*-of-*.safetensors and the index left by an earlier save that this
// one did not rewrite (the loader would otherwise pick up a stale single file over new shards),
// and the temp files of saves that were killed.
void remove_stale_weights(const std::string& dir, const std::set<std::string>& written) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if ((is_weight_file_name(name) && !written.count(name)) || is_orphaned_temp(name)) fs::remove(entry.path(), ec);
  }
}

}  // namespace

const char* safetensors_dtype_name(DType t) {
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

const char* torch_dtype_name(DType t) {
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

SafetensorsFileWriter::SafetensorsFileWriter(const std::string& path, std::vector<PlannedTensor> tensors, DType dtype)
    : file_(path), tensors_(std::move(tensors)), dtype_(dtype) {
  json header = json::object();
  header["__metadata__"] = {{"format", "pt"}};
  size_t offset = 0;
  for (const PlannedTensor& t : tensors_) {
    const size_t bytes = stored_bytes(t, dtype);
    header[t.name] = {{"dtype", safetensors_dtype_name(stored_dtype(t, dtype))},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  // Pad with spaces to a multiple of 8, as the reference implementation does, so the data section
  // (and every tensor in it) starts aligned in a memory map.
  text.append((8 - text.size() % 8) % 8, ' ');
  const uint64_t n = text.size();
  file_.write(&n, 8);
  file_.write(text.data(), text.size());
}

void SafetensorsFileWriter::write(const std::string& name, const Tensor& t) {
  LATTE_REQUIRE(next_ < tensors_.size(), ErrorCode::invalid_argument, "safetensors ", file_.path(), ": tensor ", name,
                " is one more than the ", tensors_.size(), " planned");
  const PlannedTensor& want = tensors_[next_];
  LATTE_REQUIRE(name == want.name, ErrorCode::invalid_argument, "safetensors ", file_.path(), ": got tensor ", name,
                " where the plan has ", want.name, " next");
  LATTE_REQUIRE(t.shape() == want.shape, ErrorCode::shape_mismatch, "safetensors ", file_.path(), ": tensor ", name,
                " has shape ", shape_text(t.shape()), ", planned ", shape_text(want.shape));
  LATTE_REQUIRE(t.device().kind == DeviceKind::cpu, ErrorCode::unsupported, "save: tensor ", name,
                " is on a device; copy it to the host first");
  const DType dtype = stored_dtype(want, dtype_);
  const size_t bytes = stored_bytes(want, dtype_);
  if (t.dtype() == dtype && t.is_contiguous()) {
    file_.write(t.raw(), bytes);
  } else {
    Tensor converted = t.to(dtype);  // one tensor at a time keeps the extra memory bounded
    file_.write(converted.raw(), bytes);
  }
  ++next_;
}

void SafetensorsFileWriter::commit() {
  LATTE_REQUIRE(complete(), ErrorCode::invalid_argument, "safetensors ", file_.path(), ": ",
                tensors_.size() - next_, " planned tensors were not written, the first ", tensors_[next_].name);
  file_.commit();
}

SafetensorsDirWriter::SafetensorsDirWriter(std::string dir, std::vector<PlannedTensor> tensors, DType dtype,
                                           size_t max_shard_bytes)
    : dir_(std::move(dir)), dtype_(dtype) {
  safetensors_dtype_name(dtype);  // refuse an unstorable dtype before creating anything
  std::error_code ec;
  fs::create_directories(dir_, ec);
  LATTE_REQUIRE(is_directory(dir_), ErrorCode::io, "cannot create folder ", dir_, ": ", ec.message());
  shards_.emplace_back();
  size_t current = 0;
  for (PlannedTensor& t : tensors) {
    if (t.dtype) safetensors_dtype_name(*t.dtype);
    const size_t bytes = stored_bytes(t, dtype);
    if (max_shard_bytes > 0 && !shards_.back().tensors.empty() && current + bytes > max_shard_bytes) {
      shards_.emplace_back();
      current = 0;
    }
    shards_.back().tensors.push_back(std::move(t));
    current += bytes;
  }
  if (max_shard_bytes == 0) {
    shards_[0].file = "model.safetensors";
  } else {
    for (size_t i = 0; i < shards_.size(); ++i) shards_[i].file = shard_file_name(i, shards_.size());
  }
}

SafetensorsDirWriter::~SafetensorsDirWriter() = default;

void SafetensorsDirWriter::write(const std::string& name, const Tensor& t) {
  // Skip shards that are complete (committed); an empty plan has one empty shard.
  while (shard_ < shards_.size()) {
    if (!open_)
      open_ = std::make_unique<SafetensorsFileWriter>((fs::path(dir_) / shards_[shard_].file).string(),
                                                      shards_[shard_].tensors, dtype_);
    if (!open_->complete()) break;
    open_->commit();
    open_.reset();
    ++shard_;
  }
  LATTE_REQUIRE(shard_ < shards_.size(), ErrorCode::invalid_argument, "save ", dir_, ": tensor ", name,
                " is one more than planned");
  open_->write(name, t);
  if (open_->complete()) {
    open_->commit();
    open_.reset();
    ++shard_;
  }
}

void SafetensorsDirWriter::finish(const ModelConfig& config) { finish_with_config(config_to_json_text(config)); }

void SafetensorsDirWriter::finish_with_config(const std::string& config_json) {
  if (shard_ < shards_.size()) {  // only an empty plan gets here with nothing written: commit it
    if (!open_)
      open_ = std::make_unique<SafetensorsFileWriter>((fs::path(dir_) / shards_[shard_].file).string(),
                                                      shards_[shard_].tensors, dtype_);
    open_->commit();  // refuses with the first missing tensor's name
    open_.reset();
    ++shard_;
  }
  std::set<std::string> written;
  if (shards_.size() == 1 && shards_[0].file == "model.safetensors") {
    written.insert("model.safetensors");
  } else {
    json weight_map = json::object();
    size_t total = 0;
    for (const Shard& s : shards_) {
      written.insert(s.file);
      for (const PlannedTensor& t : s.tensors) {
        weight_map[t.name] = s.file;
        total += stored_bytes(t, dtype_);
      }
    }
    json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
    atomic_write_string((fs::path(dir_) / "model.safetensors.index.json").string(), index.dump(2) + "\n");
    written.insert("model.safetensors.index.json");
  }
  json cfg = json::parse(config_json);
  cfg["torch_dtype"] = torch_dtype_name(dtype_);
  atomic_write_string((fs::path(dir_) / "config.json").string(), cfg.dump(2) + "\n");
  remove_stale_weights(dir_, written);
}

std::vector<PlannedTensor> model_write_plan(const ModelConfig& config) {
  std::vector<PlannedTensor> plan;
  for (auto& [name, shape] : model_tensor_shapes(config)) plan.push_back({name, shape});
  return plan;
}

}  // namespace latte
