#include "core/tensor/tensor_store.h"

#include <cmath>

namespace latte {

void TensorStore::put(const std::string& name, Tensor t, const std::string& file,
                      std::shared_ptr<const MappedFile> map) {
  if (map) {
    const auto* p = static_cast<const uint8_t*>(t.raw());
    LATTE_REQUIRE(t.is_contiguous() && p >= map->data() && p + t.nbytes() <= map->data() + map->size(),
                  ErrorCode::internal, "tensor ", name, " is not a contiguous view on the map of ", map->path());
  }
  entries_[name] = TensorEntry{std::move(t), file, std::move(map)};
}

void TensorStore::release_pages(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) fail(ErrorCode::bad_file, "missing tensor ", name, " in ", origin);
  const TensorEntry& e = it->second;
  if (e.map) e.map->release_pages(e.tensor.raw(), e.tensor.nbytes());
}

const Tensor& TensorStore::get(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) fail(ErrorCode::bad_file, "missing tensor ", name, " in ", origin);
  return it->second.tensor;
}

const Tensor& TensorStore::get(const std::string& name, const Shape& expected) const {
  const Tensor& t = get(name);
  LATTE_REQUIRE(t.shape() == expected, ErrorCode::bad_file, "tensor ", name, " in ", file_of(name),
                " has shape ", shape_str(t.shape()), ", expected ", shape_str(expected));
  return t;
}

const std::string& TensorStore::file_of(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) fail(ErrorCode::bad_file, "missing tensor ", name, " in ", origin);
  return it->second.file;
}

void TensorStore::check_all_finite() const {
  for (const auto& [name, e] : entries_) check_finite(name);
}

void TensorStore::check_finite(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) fail(ErrorCode::bad_file, "missing tensor ", name, " in ", origin);
  const TensorEntry& e = it->second;
  if (e.tensor.device().kind != DeviceKind::cpu) return;
  Tensor t = e.tensor.dtype() == DType::f32 && e.tensor.is_contiguous() ? e.tensor : e.tensor.to(DType::f32);
  const float* p = t.f32();
  int64_t n = t.numel();
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(p[i]))
      fail(ErrorCode::numerics, "tensor ", name, " in ", e.file, " holds ", std::isnan(p[i]) ? "NaN" : "Inf",
           " at element ", i);
  }
}

}  // namespace latte
