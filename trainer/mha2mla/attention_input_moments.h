// Second moments of every layer's attention input u (the RMSNorm output that W_q, W_k, W_v read),
// accumulated in float64 over calibration positions: S_l = sum_t u_t^T u_t [dim, dim].
//
// Why the input and not the keys and values themselves: every key and value channel is a row of
// W_k / W_v applied to u, so for any stacked weight rows A the second moment of the outputs is
// exactly A S A^T (keys taken before RoPE, as the issue asks). One dim x dim matrix per layer thus
// serves every partial-RoPE choice and both factorizations, and it is no larger than the
// [k; v] moment itself whenever dim <= 2 n_kv head_dim (every MHA model; SmolLM2-135M: 576^2 vs
// 384^2 doubles, 80 MB for 30 layers). Memory is fixed by the shape, not by the token count.
#pragma once
#include <cstdint>
#include <vector>

#include "core/linalg/matrix.h"
#include "core/tensor/tensor.h"

namespace latte {

struct AttentionInputMoments {
  int64_t dim = 0;
  int64_t positions = 0;              // calibration positions summed (BOS included)
  std::vector<MatrixD> sum_uu;        // per layer, [dim, dim] sum of u^T u (symmetric, both halves filled)

  bool empty() const { return positions == 0; }
  // E[u^T u] of one layer: sum_uu / positions.
  MatrixD second_moment(int64_t layer) const;
};

class AttentionInputMomentAccumulator {
 public:
  AttentionInputMomentAccumulator(int64_t n_layers, int64_t dim);
  // Adds every position of one layer's attention input u [positions, dim] (f32, contiguous; any
  // leading shape whose product is the position count).
  void add(int64_t layer, const Tensor& u);
  void count_positions(int64_t n) { m_.positions += n; }
  AttentionInputMoments result() const;  // fills the lower halves; invalid_argument when empty

 private:
  AttentionInputMoments m_;  // upper triangles only until result()
  std::vector<double> rows_;  // u widened to f64, reused across calls
};

}  // namespace latte
