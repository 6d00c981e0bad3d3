// Writing safetensors tensor by tensor, so that a model larger than memory can be saved while it
// is being produced (streaming conversion, `latte make-model`): the layout (which tensors go in
// which file, at which offsets) is fixed up front from names and shapes alone, each file's header
// is written when it opens, and each tensor's bytes go straight to disk. Only the tensor being
// written (and its dtype conversion) is ever in memory.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/base/file_io.h"
#include "core/model/config.h"
#include "core/tensor/tensor.h"

namespace latte {

struct PlannedTensor {
  std::string name;
  Shape shape;
  // Stored as this dtype instead of the writer's (a streamed conversion keeps the bf16 tensors it
  // only copies in bf16 and writes the factors it computes in f32: safetensors types each tensor).
  std::optional<DType> dtype;
};

// "F32", "BF16", "F16"; throws unsupported for dtypes safetensors cannot store.
const char* safetensors_dtype_name(DType t);
// config.json's torch_dtype for dtype: "float32", "bfloat16", "float16".
const char* torch_dtype_name(DType t);

// One .safetensors file: the header for `tensors` (in that order, stored as `dtype` unless a tensor
// names its own) is written
// at construction; write() takes each tensor in order; commit() makes the file appear atomically
// (AtomicFile). Dropped before commit, nothing appears.
class SafetensorsFileWriter {
 public:
  SafetensorsFileWriter(const std::string& path, std::vector<PlannedTensor> tensors, DType dtype);
  // The plan's next tensor: refuses another name or shape, naming both.
  void write(const std::string& name, const Tensor& t);
  void commit();  // refuses while tensors of the plan are missing
  bool complete() const { return next_ == tensors_.size(); }

 private:
  AtomicFile file_;
  std::vector<PlannedTensor> tensors_;
  DType dtype_;
  size_t next_ = 0;
};

// A Hugging Face weights folder: model.safetensors, or with max_shard_bytes > 0 the shards
// model-0000i-of-0000n.safetensors (greedy packing in the given order; a tensor larger than the
// limit gets a shard of its own, as transformers' save_pretrained does) plus
// model.safetensors.index.json. finish() writes the index and config.json last and removes the
// weight files of an earlier save it did not rewrite, so a reader never mixes two saves.
class SafetensorsDirWriter {
 public:
  SafetensorsDirWriter(std::string dir, std::vector<PlannedTensor> tensors, DType dtype, size_t max_shard_bytes);
  ~SafetensorsDirWriter();
  void write(const std::string& name, const Tensor& t);  // in plan order, as SafetensorsFileWriter
  void finish(const ModelConfig& config);                 // refuses while tensors are missing
  // The same with config.json's text given (another format's keys: deepseek_layout.h).
  void finish_with_config(const std::string& config_json);
  size_t shard_count() const { return shards_.size(); }

 private:
  struct Shard {
    std::string file;
    std::vector<PlannedTensor> tensors;
  };
  std::string dir_;
  DType dtype_;
  std::vector<Shard> shards_;
  size_t shard_ = 0;  // the one being written
  std::unique_ptr<SafetensorsFileWriter> open_;
};

// The tensors of a model in the order save_safetensors_dir writes them: the model tensor table
// (core/model/model_tensors.h) for config.
std::vector<PlannedTensor> model_write_plan(const ModelConfig& config);

}  // namespace latte
