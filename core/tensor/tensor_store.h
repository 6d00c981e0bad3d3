// TensorStore: named tensors and the file each came from, so every error about a weight can name
// both. Checkpoint loaders fill it; models take their weights from it.
#pragma once
#include <map>
#include <memory>
#include <string>

#include "core/base/file_io.h"
#include "core/tensor/tensor.h"

namespace latte {

struct TensorEntry {
  Tensor tensor;
  std::string file;  // where it was read from, for error messages
  std::shared_ptr<const MappedFile> map;  // the memory map the tensor views, when it does
};

class TensorStore {
 public:
  void put(const std::string& name, Tensor t, const std::string& file,
           std::shared_ptr<const MappedFile> map = nullptr);
  bool has(const std::string& name) const { return entries_.count(name) > 0; }
  // Throws bad_file "missing tensor NAME in FILE".
  const Tensor& get(const std::string& name) const;
  // As get, and throws bad_file naming tensor, file, expected and actual shape on a mismatch.
  const Tensor& get(const std::string& name, const Shape& expected) const;
  const std::string& file_of(const std::string& name) const;
  const std::map<std::string, TensorEntry>& entries() const { return entries_; }
  void erase(const std::string& name) { entries_.erase(name); }
  // Throws numerics naming the first tensor (and its file, and the element) holding NaN or Inf.
  void check_all_finite() const;
  // As check_all_finite for one tensor (a streamed pass checks each tensor as it reaches it).
  void check_finite(const std::string& name) const;
  // Drops the resident pages of a tensor that views a memory map (MappedFile::release_pages);
  // nothing for one in owned memory. The tensor stays valid: reading it faults the pages back in.
  void release_pages(const std::string& name) const;

  std::string origin;  // the path the store was loaded from, for messages about it as a whole

 private:
  std::map<std::string, TensorEntry> entries_;
};

}  // namespace latte
