// MatrixD: a dense row-major float64 matrix, the working form of weights while they are
// factorized (core/linalg/svd.h, trainer/mha2mla/convert.cpp). float64 so that a full-rank SVD
// round trip reproduces f32 weights to ~1e-13 relative, far below f32 rounding.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace latte {

struct MatrixD {
  int64_t rows = 0, cols = 0;
  std::vector<double> data;  // [rows, cols], row-major

  MatrixD() = default;
  MatrixD(int64_t r, int64_t c) : rows(r), cols(c), data(size_t(r * c), 0.0) {}

  double& operator()(int64_t i, int64_t j) { return data[size_t(i * cols + j)]; }
  double operator()(int64_t i, int64_t j) const { return data[size_t(i * cols + j)]; }
  double* row(int64_t i) { return data.data() + i * cols; }
  const double* row(int64_t i) const { return data.data() + i * cols; }
};

}  // namespace latte
