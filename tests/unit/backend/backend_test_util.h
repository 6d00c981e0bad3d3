// Helpers shared by the backend tests: seeded random inputs, Tensor <-> double conversions, and
// the comparison helpers. Every comparison helper is shown failing on purpose in
// comparison_test.cpp before the op tests trust it.
#pragma once
#include <cblas.h>
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/backend/cpu/cpu_backend.h"
#include "core/backend/reference/reference_ops.h"
#include "core/tensor/tensor.h"

namespace latte::test {

// Restores the thread counts a test changes.
class ThreadCount {
 public:
  ThreadCount() : omp_(omp_get_max_threads()), blas_(openblas_get_num_threads()) {}
  ~ThreadCount() { set(omp_, blas_); }
  static void set(int omp, int blas) {
    omp_set_num_threads(omp);
    openblas_set_num_threads(blas);
  }

 private:
  int omp_, blas_;
};

using Vec = std::vector<double>;

// Seeded generator: every test names its seed, so a failure reproduces exactly.
class Rng {
 public:
  explicit Rng(uint64_t seed) : gen_(seed) {}
  std::vector<float> normal(int64_t n, double stddev = 1.0, double mean = 0.0) {
    std::normal_distribution<double> dist(mean, stddev);
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = float(dist(gen_));
    return v;
  }
  Vec normal_f64(int64_t n, double stddev = 1.0) {
    std::normal_distribution<double> dist(0.0, stddev);
    Vec v(static_cast<size_t>(n));
    for (double& x : v) x = dist(gen_);
    return v;
  }
  std::vector<int32_t> ints(int64_t n, int32_t lo, int32_t hi) {  // uniform in [lo, hi]
    std::uniform_int_distribution<int32_t> dist(lo, hi);
    std::vector<int32_t> v(static_cast<size_t>(n));
    for (int32_t& x : v) x = dist(gen_);
    return v;
  }

 private:
  std::mt19937_64 gen_;
};

inline Tensor make_f32(const std::vector<float>& v, const Shape& shape) { return Tensor::from_vector(v, shape); }

inline Tensor random_f32(Rng& rng, const Shape& shape, double stddev = 1.0) {
  return make_f32(rng.normal(shape_numel(shape), stddev), shape);
}

inline Tensor nan_f32(const Shape& shape) {
  Tensor t = Tensor::empty(shape);
  t.fill(std::numeric_limits<float>::quiet_NaN());
  return t;
}

// The exact values a tensor holds (bf16 widened exactly), as the reference's doubles.
inline Vec to_f64(const Tensor& t) {
  std::vector<float> f = t.to_vector();
  return Vec(f.begin(), f.end());
}

inline Vec add_vec(const Vec& a, const Vec& b) { return reference::add(a, b); }

// |got[i] - want[i]| <= atol + rtol * |want[i]| for every i; NaN or Inf in got always fails.
// The message names the first failing index and the worst error, so a failure is diagnosable.
inline ::testing::AssertionResult all_close(const std::vector<float>& got, const Vec& want, double atol, double rtol) {
  if (got.size() != want.size())
    return ::testing::AssertionFailure() << "size " << got.size() << " != expected " << want.size();
  size_t bad = 0, first = 0, worst = 0;
  double worst_excess = -1;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(double(got[i]) - want[i]);
    const double tol = atol + rtol * std::fabs(want[i]);
    if (!(err <= tol)) {  // also catches NaN
      if (bad++ == 0) first = i;
      const double excess = std::isfinite(err) ? err / tol : std::numeric_limits<double>::infinity();
      if (excess > worst_excess) worst_excess = excess, worst = i;
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << bad << " of " << got.size() << " values out of tolerance (atol " << atol
                                       << ", rtol " << rtol << "); first at " << first << ": got " << got[first]
                                       << ", want " << want[first] << "; worst at " << worst << ": got " << got[worst]
                                       << ", want " << want[worst];
}

inline ::testing::AssertionResult all_close(const Tensor& got, const Vec& want, double atol, double rtol) {
  return all_close(got.to_vector(), want, atol, rtol);
}

// Bit-for-bit equality of two f32 tensors (NaN payloads included).
inline ::testing::AssertionResult bit_equal(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape())
    return ::testing::AssertionFailure() << "shape " << shape_str(a.shape()) << " vs " << shape_str(b.shape());
  const std::vector<float> x = a.to_vector(), y = b.to_vector();
  for (size_t i = 0; i < x.size(); ++i) {
    if (std::memcmp(&x[i], &y[i], 4) != 0)
      return ::testing::AssertionFailure() << "first difference at " << i << ": " << x[i] << " vs " << y[i];
  }
  return ::testing::AssertionSuccess();
}

// Central finite differences of a scalar function: (f(x + h e_i) - f(x - h e_i)) / 2h.
inline Vec numeric_grad(const std::function<double(const Vec&)>& f, Vec x, double h = 1e-5) {
  Vec g(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double x0 = x[i];
    x[i] = x0 + h;
    const double fp = f(x);
    x[i] = x0 - h;
    const double fm = f(x);
    x[i] = x0;
    g[i] = (fp - fm) / (2 * h);
  }
  return g;
}

// Gradient check tolerance: |numeric - analytic| <= rel * max(1, |analytic|). With h = 1e-5 in
// float64 the central difference is off by ~h^2 |f'''| ~ 1e-10 (truncation) plus ~eps |f| / h ~
// 1e-10 (rounding), so rel = 1e-6 leaves a wide margin yet catches any wrong term.
inline ::testing::AssertionResult grad_close(const Vec& numeric, const Vec& analytic, double rel = 1e-6) {
  if (numeric.size() != analytic.size())
    return ::testing::AssertionFailure() << "size " << numeric.size() << " != " << analytic.size();
  for (size_t i = 0; i < numeric.size(); ++i) {
    const double tol = rel * std::max(1.0, std::fabs(analytic[i]));
    if (!(std::fabs(numeric[i] - analytic[i]) <= tol))
      return ::testing::AssertionFailure()
             << "gradient " << i << ": finite difference " << numeric[i] << ", analytic " << analytic[i];
  }
  return ::testing::AssertionSuccess();
}

// sum_i a[i] * b[i]: the scalar loss L = <out, r> whose gradient w.r.t. out is r.
inline double inner(const Vec& a, const Vec& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Runs f and checks it throws latte::Error with the given code and a message containing `needle`.
template <typename F>
::testing::AssertionResult throws_error(F&& f, ErrorCode code, const std::string& needle = "") {
  try {
    f();
  } catch (const Error& e) {
    if (e.code() != code)
      return ::testing::AssertionFailure()
             << "threw " << error_code_name(e.code()) << " (" << e.what() << "), expected " << error_code_name(code);
    if (std::string(e.what()).find(needle) == std::string::npos)
      return ::testing::AssertionFailure() << "message '" << e.what() << "' does not contain '" << needle << "'";
    return ::testing::AssertionSuccess();
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "threw a non-latte exception: " << e.what();
  }
  return ::testing::AssertionFailure() << "did not throw";
}

}  // namespace latte::test
