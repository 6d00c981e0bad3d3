#include "trainer/mha2mla/kv_latent.h"

#include "core/base/error.h"
#include "core/linalg/matmul.h"

namespace latte {

namespace {

// tr(m s m^T) = E||m u||^2.
double output_energy(const MatrixD& m, const MatrixD& s) {
  const MatrixD ms = matmul(m, s);
  double e = 0;
  for (size_t i = 0; i < ms.data.size(); ++i) e += ms.data[i] * m.data[i];
  return e;
}

}  // namespace

double output_energy_kept(const MatrixD& a, const MatrixD& up, const MatrixD& down, const MatrixD& s) {
  LATTE_REQUIRE(up.rows == a.rows && down.cols == a.cols && up.cols == down.rows && s.rows == a.cols &&
                    s.cols == a.cols,
                ErrorCode::shape_mismatch, "output energy: a [", a.rows, ", ", a.cols, "], up [", up.rows, ", ",
                up.cols, "], down [", down.rows, ", ", down.cols, "], s [", s.rows, ", ", s.cols, "] do not fit");
  const double total = output_energy(a, s);
  if (total <= 0) return 1.0;
  MatrixD err = matmul(up, down);
  for (size_t i = 0; i < err.data.size(); ++i) err.data[i] = a.data[i] - err.data[i];
  return 1.0 - output_energy(err, s) / total;
}

KvEnergy kv_energy_kept(const MatrixD& k_nope, const MatrixD& v, const KvLatent& f, const MatrixD& s) {
  return {output_energy_kept(k_nope, f.k_up, f.down, s), output_energy_kept(v, f.v_up, f.down, s)};
}

}  // namespace latte
