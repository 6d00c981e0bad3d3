#include "trainer/mha2mla/attention_input_moments.h"

#include <cblas.h>

#include <climits>

#include "core/base/error.h"

namespace latte {

MatrixD AttentionInputMoments::second_moment(int64_t layer) const {
  LATTE_REQUIRE(positions > 0, ErrorCode::invalid_argument, "attention input moments: no calibration position");
  LATTE_ASSERT(layer >= 0 && layer < int64_t(sum_uu.size()));
  MatrixD s = sum_uu[size_t(layer)];
  for (double& x : s.data) x /= double(positions);
  return s;
}

AttentionInputMomentAccumulator::AttentionInputMomentAccumulator(int64_t n_layers, int64_t dim) {
  m_.dim = dim;
  m_.sum_uu.assign(size_t(n_layers), MatrixD(dim, dim));
}

void AttentionInputMomentAccumulator::add(int64_t layer, const Tensor& u) {
  LATTE_ASSERT(layer >= 0 && layer < int64_t(m_.sum_uu.size()));
  LATTE_REQUIRE(u.ndim() >= 1 && u.dim(u.ndim() - 1) == m_.dim && u.is_contiguous(), ErrorCode::shape_mismatch,
                "attention input moments: activation of shape ", shape_str(u.shape()), ", expected [..., ", m_.dim,
                "]");
  const std::vector<float> v = u.to_vector();
  const int64_t n = int64_t(v.size()) / m_.dim;
  LATTE_REQUIRE(n <= INT_MAX && m_.dim <= INT_MAX, ErrorCode::invalid_argument, "attention input moments: ", n,
                " positions of width ", m_.dim, " exceed BLAS's 32-bit sizes; use a smaller calibration window");
  rows_.assign(v.begin(), v.end());
  // Upper triangle of S += U^T U; float64 so 32k+ positions of O(1..100) activations sum without
  // the cancellation an f32 sum would bring into the small eigenvalues.
  cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, int(m_.dim), int(n), 1.0, rows_.data(), int(m_.dim), 1.0,
              m_.sum_uu[size_t(layer)].data.data(), int(m_.dim));
}

AttentionInputMoments AttentionInputMomentAccumulator::result() const {
  LATTE_REQUIRE(m_.positions > 0, ErrorCode::invalid_argument, "attention input moments: no calibration position was added");
  AttentionInputMoments out = m_;
  for (MatrixD& s : out.sum_uu)
    for (int64_t i = 0; i < s.rows; ++i)
      for (int64_t j = 0; j < i; ++j) s(i, j) = s(j, i);
  return out;
}

}  // namespace latte
