// The paged KV cache ops: CpuBackend::paged_cache_write / paged_attention / paged_mla_attention,
// and the i8 dtype they introduce.
//  - against reference::paged_* (float64) on ragged batches: several sequences, decode rows
//    (n_s = 1), short chunks (n_s < 8, the row form) and prefill chunks (n_s >= 8, the blocked form,
//    one crossing the 64-query block edge) after a cached prefix, a sequence with no query rows,
//    block ids scattered over the cache (a shuffled pool, -1 padding in the table), block sizes 1,
//    4, 8 and 16, GQA groups 1, 3 and 4 (and MHA), f32 and bf16 caches, i8 MLA caches (latent and
//    RoPE keys), with 1 and 2 threads so both the fused and the split row form run. Slots no sequence uses hold NaN
//    (NaN scales for i8), so a read outside the table shows up.
//    Inputs are unit normals and scale = 1/sqrt(score width), so scores are O(1) and outputs are
//    convex mixes of cache rows; f32 dots over <= 72 terms and sums over <= 400 keys gave errors
//    up to 6e-7; tolerance as attention_test.cpp, 3e-6 + 3e-6 relative.
//  - exactness: paged_attention over an f32 cache equals attention_forward on the same keys in a
//    contiguous cache BIT FOR BIT, in both forms (row form vs attention_forward's per-row form,
//    blocked form vs its blocked form). paged_mla_attention equals mla_absorbed_attention only to
//    2e-6 + 2e-6 relative (6.6e-7 seen): mla_absorbed_attention uses std::exp and a sequential sum
//    where the paged op uses attention_forward's vectorised exp and tree sum. A bf16 cache equals
//    an f32 cache holding the same values bit for bit, an i8 cache one holding q * scale.
//  - bit-identical results with 1 and 2 OpenMP threads, on sizes above the OpenMP thresholds.
//  - i8 writes: |x - q * scale| <= scale / 2 per element, the reference's scale and codes.
//  - bad inputs throw with messages naming the argument, the sequence and the value.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>

#include "tests/unit/backend/backend_test_util.h"

namespace latte::test {
namespace {

namespace ref = latte::reference;
constexpr double kAtol = 3e-6, kRtol = 3e-6;


struct SeqSpec {
  int64_t ctx, n;  // keys (including this step's), query rows
};

// A ragged batch over a pool of blocks: each sequence gets blocks drawn from a shuffled pool, so
// its blocks are scattered and out of order; unused table entries are -1.
struct Layout {
  std::vector<int32_t> query_start, context_len, block_table;
  int64_t max_blocks = 0, block_size = 0, num_blocks = 0, N = 0;
  std::vector<std::vector<int32_t>> slots;  // slots[s][p]: slot of position p of sequence s

  PagedBatch batch() const { return {query_start, context_len, block_table, max_blocks, block_size}; }
  ref::PagedLayout ref_layout() const { return {query_start, context_len, block_table, max_blocks, block_size}; }
  std::vector<int32_t> all_slots() const {  // every used slot, sequence by sequence
    std::vector<int32_t> v;
    for (const auto& s : slots) v.insert(v.end(), s.begin(), s.end());
    return v;
  }
};

Layout make_layout(uint64_t seed, const std::vector<SeqSpec>& specs, int64_t block_size, int64_t spare_blocks = 3) {
  Layout l;
  l.block_size = block_size;
  int64_t needed = 0;
  for (const SeqSpec& s : specs) {
    const int64_t nb = (s.ctx + block_size - 1) / block_size;
    l.max_blocks = std::max(l.max_blocks, nb + 1);  // at least one padding entry per row
    needed += nb;
  }
  l.num_blocks = needed + spare_blocks;
  std::vector<int32_t> pool(static_cast<size_t>(l.num_blocks));
  std::iota(pool.begin(), pool.end(), 0);
  std::mt19937_64 gen(seed);
  std::shuffle(pool.begin(), pool.end(), gen);
  size_t next = 0;
  l.query_start.push_back(0);
  for (const SeqSpec& s : specs) {
    l.context_len.push_back(int32_t(s.ctx));
    l.query_start.push_back(int32_t(l.query_start.back() + s.n));
    std::vector<int32_t> row(static_cast<size_t>(l.max_blocks), -1);
    const int64_t nb = (s.ctx + block_size - 1) / block_size;
    for (int64_t j = 0; j < nb; ++j) row[size_t(j)] = pool[next++];
    l.block_table.insert(l.block_table.end(), row.begin(), row.end());
    std::vector<int32_t> sl;
    for (int64_t p = 0; p < s.ctx; ++p)
      sl.push_back(int32_t(row[size_t(p / block_size)] * block_size + p % block_size));
    l.slots.push_back(sl);
  }
  l.N = l.query_start.back();
  return l;
}

// A cache [num_blocks, block_size, row...] whose used slots hold unit normals (written with
// paged_cache_write) and whose other slots hold NaN (i8: code 0 with a NaN scale).
struct Cache {
  Tensor t, scales;  // scales: i8 only
  Tensor* scales_ptr() { return scales.defined() ? &scales : nullptr; }
  const Tensor* scales_ptr() const { return scales.defined() ? &scales : nullptr; }
};

Cache make_cache(CpuBackend& be, Rng& rng, const Layout& l, const Shape& row, DType dtype) {
  Shape shape{l.num_blocks, l.block_size};
  shape.insert(shape.end(), row.begin(), row.end());
  Cache c;
  c.t = Tensor::empty(shape, dtype);
  c.t.fill(std::numeric_limits<float>::quiet_NaN());
  if (dtype == DType::i8) c.scales = nan_f32({l.num_blocks, l.block_size});
  const std::vector<int32_t> slots = l.all_slots();
  Shape rows_shape{int64_t(slots.size())};
  rows_shape.insert(rows_shape.end(), row.begin(), row.end());
  be.paged_cache_write(c.t, c.scales_ptr(), random_f32(rng, rows_shape), slots);
  return c;
}

Vec scales_f64(const Cache& c) { return c.scales.defined() ? to_f64(c.scales) : Vec{}; }

// An f32 cache holding exactly the values c stands for (bf16 widened, i8 codes times scales).
Tensor dequantized(const Cache& c) {
  Tensor f = c.t.to(DType::f32);
  if (!c.scales.defined()) return f;
  const int64_t slots = c.scales.numel(), w = f.numel() / slots;
  for (int64_t s = 0; s < slots; ++s)
    for (int64_t i = 0; i < w; ++i) f.f32()[s * w + i] = c.t.i8()[s * w + i] * c.scales.f32()[s];
  return f;
}

// ---- the i8 dtype (the codes of a quantized cache) ---------------------------------------------

TEST(I8Dtype, SizesNamesAndConversions) {
  EXPECT_EQ(dtype_size(DType::i8), 1u);
  EXPECT_EQ(dtype_bytes(DType::i8, 10), 10u);
  EXPECT_STREQ(dtype_name(DType::i8), "i8");
  EXPECT_EQ(dtype_from_name("int8"), DType::i8);
  // An i8 element is its integer value: nearest (ties to even), saturated, NaN -> 0.
  const std::vector<float> x = {0.4f, 2.5f, 3.5f, -2.5f, 126.7f, 300.0f, -300.0f, -128.0f,
                                std::numeric_limits<float>::quiet_NaN()};
  Tensor t = make_f32(x, {9}).to(DType::i8);
  const std::vector<int> want = {0, 2, 4, -2, 127, 127, -128, -128, 0};
  for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(int(t.i8()[i]), want[i]) << "element " << i;
  EXPECT_EQ(t.to_vector(), std::vector<float>({0, 2, 4, -2, 127, 127, -128, -128, 0}));
  EXPECT_TRUE(throws_error([&] { (void)t.f32(); }, ErrorCode::shape_mismatch, "expected dtype f32, got i8"));
}

TEST(I8Dtype, BackendCopiesStridedViews) {
  CpuBackend be;
  Tensor src = Tensor::empty({4, 6}, DType::i8);
  for (int i = 0; i < 24; ++i) src.i8()[i] = int8_t(i - 12);
  Tensor dst = Tensor::zeros({4, 3}, DType::i8);
  be.copy(dst, src.narrow(1, 2, 5));  // a strided view: 3 of every 6 bytes
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 3; ++c) EXPECT_EQ(dst.i8()[r * 3 + c], int8_t(r * 6 + c + 2 - 12)) << r << "," << c;
  Tensor col = Tensor::zeros({4, 1}, DType::i8);
  be.copy(col, src.narrow(1, 4, 5));  // one column: an element-by-element walk with stride 6
  for (int r = 0; r < 4; ++r) EXPECT_EQ(col.i8()[r], int8_t(r * 6 + 4 - 12)) << r;
}

// ---- paged_cache_write ----------------------------------------------------------------------

TEST(PagedCacheWrite, F32AndBf16MatchReference) {
  CpuBackend be;
  Rng rng(2000);
  const int64_t nb = 6, bs = 4, H = 3, D = 20, N = 9;
  const std::vector<int32_t> slots = {17, 3, 22, 0, 9, 23, 14, 5, 11};
  Tensor rows = random_f32(rng, {N, H, D});
  for (DType dt : {DType::f32, DType::bf16}) {
    SCOPED_TRACE(dtype_name(dt));
    Tensor cache = random_f32(rng, {nb, bs, H, D}).to(dt);
    const Vec before = to_f64(cache);
    be.paged_cache_write(cache, nullptr, rows, slots);
    // bf16: the reference writes the rows as the repo's f32 -> bf16 conversion rounds them.
    const Vec want = ref::paged_cache_write(before, to_f64(rows.to(dt)), slots, H * D);
    EXPECT_TRUE(all_close(cache, want, 0, 0));
  }
}

TEST(PagedCacheWrite, I8RoundTripWithinHalfAScale) {
  CpuBackend be;
  Rng rng(2010);
  const int64_t nb = 5, bs = 3, L = 37, N = 7;
  const std::vector<int32_t> slots = {4, 13, 0, 8, 14, 2, 7};
  std::vector<float> x = rng.normal(N * L);
  for (int64_t i = 0; i < L; ++i) x[size_t(2 * L + i)] = 0.0f;              // a zero row: scale 0
  for (int64_t i = 0; i < L; ++i) x[size_t(3 * L + i)] *= 1e-3f;           // small
  for (int64_t i = 0; i < L; ++i) x[size_t(4 * L + i)] *= 1e3f;            // large
  x[size_t(5 * L + 3)] = 40.0f;                                             // one outlier
  Tensor rows = make_f32(x, {N, L});
  Tensor cache = Tensor::zeros({nb, bs, L}, DType::i8), scales = Tensor::zeros({nb, bs});
  be.paged_cache_write(cache, &scales, rows, slots);

  const ref::I8Rows want = ref::quantize_i8_rows(to_f64(rows), N, L);
  for (int64_t n = 0; n < N; ++n) {
    const int64_t slot = slots[size_t(n)];
    const double scale = scales.f32()[slot];
    EXPECT_NEAR(scale, want.scale[size_t(n)], 1e-6 * want.scale[size_t(n)]) << "row " << n;
    for (int64_t i = 0; i < L; ++i) {
      const double xi = x[size_t(n * L + i)];
      const int q = cache.i8()[slot * L + i];
      EXPECT_LE(std::abs(q), 127);
      // The f32 quotient x / scale may land on the other side of a .5 than the float64 one only
      // when it is within float rounding of the tie.
      const double wq = want.q[size_t(n * L + i)], exact = want.scale[size_t(n)] > 0 ? xi / want.scale[size_t(n)] : 0;
      if (q != wq) {
        EXPECT_LE(std::fabs(q - wq), 1) << "row " << n << " elem " << i;
        EXPECT_LT(std::fabs(std::fabs(exact - std::trunc(exact)) - 0.5), 1e-4) << "row " << n << " elem " << i;
      }
      EXPECT_LE(std::fabs(xi - q * scale), scale / 2 * (1 + 1e-6)) << "row " << n << " elem " << i;
    }
  }
  EXPECT_EQ(scales.f32()[slots[2]], 0.0f);
  // Slots not written keep their old contents.
  EXPECT_EQ(cache.i8()[1 * L], 0);
  EXPECT_EQ(scales.f32()[1], 0.0f);
}

// ---- paged_attention -------------------------------------------------------------------------

struct AttnCase {
  int64_t Hq, Hkv, Dk, Dv, block_size;
  std::vector<SeqSpec> seqs;
};

// Decode rows, short chunks, a no-query sequence, prefill chunks with a cached prefix (n = 12;
// n = 70 crosses the 64-query block), contexts past the 128-key chunk, Dv not a multiple of 8.
const AttnCase kAttnCases[] = {
    {1, 1, 4, 4, 1, {{1, 1}, {3, 1}}},
    {3, 1, 16, 8, 4, {{9, 1}, {5, 5}, {7, 0}, {13, 3}}},
    {8, 2, 32, 24, 16, {{40, 1}, {200, 1}, {33, 12}, {300, 1}}},
    {12, 3, 64, 40, 4, {{1, 1}, {150, 70}, {31, 7}, {17, 1}}},
    {6, 6, 8, 37, 16, {{50, 1}, {20, 9}, {129, 2}}},
};

void check_paged_attention(const AttnCase& c, DType dtype, uint64_t seed) {
  SCOPED_TRACE(testing::Message() << "Hq=" << c.Hq << " Hkv=" << c.Hkv << " Dk=" << c.Dk << " Dv=" << c.Dv
                                  << " block_size=" << c.block_size << " cache " << dtype_name(dtype));
  CpuBackend be;
  Rng rng(seed);
  const Layout l = make_layout(seed, c.seqs, c.block_size);
  const Cache k = make_cache(be, rng, l, {c.Hkv, c.Dk}, dtype), v = make_cache(be, rng, l, {c.Hkv, c.Dv}, dtype);
  Tensor q = random_f32(rng, {l.N, c.Hq, c.Dk});
  const float scale = 1.0f / std::sqrt(float(c.Dk));
  Tensor out = nan_f32({l.N, c.Hq, c.Dv});
  be.paged_attention(out, q, k.t, v.t, l.batch(), scale);
  const Vec want = ref::paged_attention(to_f64(q), to_f64(k.t), to_f64(v.t), l.ref_layout(),
                                        {.N = l.N, .Hq = c.Hq, .Hkv = c.Hkv, .Dk = c.Dk, .Dv = c.Dv}, double(scale));
  EXPECT_TRUE(all_close(out, want, kAtol, kRtol));
}

// With 2 threads a batch of few rows takes the split form (key and column chunks over threads),
// a larger one the fused form; with 1 thread always the fused one. Both are run here.
TEST(PagedAttention, MatchesReference) {
  ThreadCount restore;
  for (int threads : {1, 2}) {
    SCOPED_TRACE(testing::Message() << threads << " threads");
    ThreadCount::set(threads, 1);
    uint64_t seed = 2100;
    for (const AttnCase& c : kAttnCases)
      for (DType dt : {DType::f32, DType::bf16}) check_paged_attention(c, dt, seed++);
  }
}

// Rows [begin, end) of sequence s's keys or values gathered into a contiguous [1, ctx, H, D].
Tensor gather_contiguous(const Tensor& cache, const Layout& l, size_t s) {
  const int64_t H = cache.dim(2), D = cache.dim(3), ctx = l.context_len[s];
  Tensor t = Tensor::empty({1, ctx, H, D});
  for (int64_t p = 0; p < ctx; ++p)
    std::memcpy(t.f32() + p * H * D, cache.f32() + int64_t(l.slots[s][size_t(p)]) * H * D, size_t(H * D) * 4);
  return t;
}

TEST(PagedAttention, EqualsContiguousAttentionBitForBit) {
  CpuBackend be;
  ThreadCount restore;
  ThreadCount::set(2, 1);  // kAttnCases[2] then takes the split form, the others the fused one
  uint64_t seed = 2150;
  for (const AttnCase& c : kAttnCases) {
    SCOPED_TRACE(testing::Message() << "Hq=" << c.Hq << " Hkv=" << c.Hkv << " Dk=" << c.Dk << " Dv=" << c.Dv);
    Rng rng(seed);
    const Layout l = make_layout(seed++, c.seqs, c.block_size);
    const Cache k = make_cache(be, rng, l, {c.Hkv, c.Dk}, DType::f32);
    const Cache v = make_cache(be, rng, l, {c.Hkv, c.Dv}, DType::f32);
    Tensor q = random_f32(rng, {l.N, c.Hq, c.Dk});
    const float scale = 1.0f / std::sqrt(float(c.Dk));
    Tensor out = nan_f32({l.N, c.Hq, c.Dv});
    be.paged_attention(out, q, k.t, v.t, l.batch(), scale);
    for (size_t s = 0; s < c.seqs.size(); ++s) {
      const int64_t q0 = l.query_start[s], n = c.seqs[s].n;
      SCOPED_TRACE(testing::Message() << "sequence " << s << " ctx=" << c.seqs[s].ctx << " n=" << n);
      if (n == 0) continue;
      Tensor qs = q.slice(q0, q0 + n).clone().reshape({1, n, c.Hq, c.Dk});
      Tensor want = nan_f32({1, n, c.Hq, c.Dv});
      be.attention_forward(want, nullptr, qs, gather_contiguous(k.t, l, s), gather_contiguous(v.t, l, s), scale);
      EXPECT_TRUE(bit_equal(out.slice(q0, q0 + n).clone().reshape({1, n, c.Hq, c.Dv}), want));
    }
  }
}

TEST(PagedAttention, Bf16CacheEqualsF32CacheOfTheSameValues) {
  CpuBackend be;
  const AttnCase& c = kAttnCases[3];
  Rng rng(2170);
  const Layout l = make_layout(2170, c.seqs, c.block_size);
  const Cache k = make_cache(be, rng, l, {c.Hkv, c.Dk}, DType::bf16);
  const Cache v = make_cache(be, rng, l, {c.Hkv, c.Dv}, DType::bf16);
  Tensor q = random_f32(rng, {l.N, c.Hq, c.Dk});
  Tensor out = nan_f32({l.N, c.Hq, c.Dv}), out32 = nan_f32({l.N, c.Hq, c.Dv});
  be.paged_attention(out, q, k.t, v.t, l.batch(), 0.125f);
  be.paged_attention(out32, q, dequantized(k), dequantized(v), l.batch(), 0.125f);
  EXPECT_TRUE(bit_equal(out, out32));
}

TEST(PagedAttention, LargeScoresStayFinite) {
  // Scores in the hundreds: exp without the max subtraction would overflow f32.
  CpuBackend be;
  Rng rng(2180);
  const Layout l = make_layout(2180, {{6, 1}, {9, 4}}, 4);
  Cache k;
  k.t = Tensor::empty({l.num_blocks, 4, 1, 8});
  k.t.fill(std::numeric_limits<float>::quiet_NaN());
  be.paged_cache_write(k.t, nullptr, random_f32(rng, {15, 1, 8}, 10.0), l.all_slots());
  const Cache v = make_cache(be, rng, l, {1, 8}, DType::f32);
  Tensor q = random_f32(rng, {l.N, 2, 8}, 10.0);
  Tensor out = nan_f32({l.N, 2, 8});
  be.paged_attention(out, q, k.t, v.t, l.batch(), 1.0f);
  const Vec want = ref::paged_attention(to_f64(q), to_f64(k.t), to_f64(v.t), l.ref_layout(),
                                        {.N = l.N, .Hq = 2, .Hkv = 1, .Dk = 8, .Dv = 8}, 1.0);
  // As in attention_test.cpp: 8 terms |q_i k_i| ~ 100 give score errors up to 5e-5.
  EXPECT_TRUE(all_close(out, want, 1e-4, 0.0));
}

// ---- paged_mla_attention ---------------------------------------------------------------------

struct MlaCase {
  int64_t Hq, Hkv, R, L, block_size;
  std::vector<SeqSpec> seqs;
};

const MlaCase kMlaCases[] = {
    {1, 1, 4, 8, 1, {{1, 1}, {4, 2}}},
    {3, 1, 8, 40, 4, {{9, 1}, {5, 5}, {7, 0}, {13, 3}}},
    {8, 2, 16, 72, 16, {{40, 1}, {200, 1}, {33, 12}, {150, 1}}},
    {9, 3, 0, 32, 4, {{1, 1}, {45, 9}, {31, 7}, {129, 1}}},  // R = 0: no RoPE part
    {4, 4, 8, 24, 16, {{50, 1}, {20, 9}}},
    {6, 2, 8, 40, 8, {{400, 1}, {70, 2}}},  // few rows, much work: the split form with 2 threads
    {6, 3, 4, 24, 16, {{150, 70}, {8, 8}, {30, 1}}},  // blocked form: two query blocks after a prefix
};

struct MlaInputs {
  Layout l;
  Cache k_rope, latent;
  Tensor q_rope, q_lat;
  float scale;
};

MlaInputs make_mla(CpuBackend& be, const MlaCase& c, DType k_dtype, DType lat_dtype, uint64_t seed) {
  Rng rng(seed);
  MlaInputs in;
  in.l = make_layout(seed, c.seqs, c.block_size);
  in.k_rope = make_cache(be, rng, in.l, {c.Hkv, c.R}, k_dtype);
  in.latent = make_cache(be, rng, in.l, {c.L}, lat_dtype);
  in.q_rope = random_f32(rng, {in.l.N, c.Hq, c.R});
  in.q_lat = random_f32(rng, {in.l.N, c.Hq, c.L});
  in.scale = 1.0f / std::sqrt(float(c.R + c.L));
  return in;
}

TEST(PagedMlaAttention, MatchesReference) {
  CpuBackend be;
  ThreadCount restore;
  ThreadCount::set(2, 1);
  uint64_t seed = 2200;
  const std::pair<DType, DType> dtypes[] = {
      {DType::f32, DType::f32}, {DType::bf16, DType::bf16}, {DType::f32, DType::i8}, {DType::bf16, DType::i8},
      {DType::i8, DType::i8}, {DType::i8, DType::f32}};
  for (const MlaCase& c : kMlaCases)
    for (const auto& [kd, ld] : dtypes) {
      SCOPED_TRACE(testing::Message() << "Hq=" << c.Hq << " Hkv=" << c.Hkv << " R=" << c.R << " L=" << c.L
                                      << " k_rope " << dtype_name(kd) << " latent " << dtype_name(ld));
      const MlaInputs in = make_mla(be, c, kd, ld, seed++);
      Tensor out = nan_f32({in.l.N, c.Hq, c.L});
      be.paged_mla_attention(out, in.q_rope, in.q_lat, in.k_rope.t, in.k_rope.scales_ptr(), in.latent.t,
                             in.latent.scales_ptr(), in.l.batch(), in.scale);
      const Vec want = ref::paged_mla_attention(to_f64(in.q_rope), to_f64(in.q_lat), to_f64(in.k_rope.t),
                                                scales_f64(in.k_rope), to_f64(in.latent.t), scales_f64(in.latent),
                                                in.l.ref_layout(),
                                                {.N = in.l.N, .Hq = c.Hq, .Hkv = c.Hkv, .R = c.R, .L = c.L},
                                                double(in.scale));
      EXPECT_TRUE(all_close(out, want, kAtol, kRtol));
    }
}

TEST(PagedMlaAttention, MatchesContiguousAbsorbedAttention) {
  CpuBackend be;
  ThreadCount restore;
  ThreadCount::set(2, 1);
  uint64_t seed = 2250;
  for (const MlaCase& c : kMlaCases) {
    SCOPED_TRACE(testing::Message() << "Hq=" << c.Hq << " Hkv=" << c.Hkv << " R=" << c.R << " L=" << c.L);
    const MlaInputs in = make_mla(be, c, DType::f32, DType::f32, seed++);
    Tensor out = nan_f32({in.l.N, c.Hq, c.L});
    be.paged_mla_attention(out, in.q_rope, in.q_lat, in.k_rope.t, nullptr, in.latent.t, nullptr, in.l.batch(), in.scale);
    for (size_t s = 0; s < c.seqs.size(); ++s) {
      const int64_t q0 = in.l.query_start[s], n = c.seqs[s].n, ctx = c.seqs[s].ctx;
      if (n == 0) continue;
      SCOPED_TRACE(testing::Message() << "sequence " << s);
      Tensor kr = gather_contiguous(in.k_rope.t, in.l, s);
      Tensor lat = gather_contiguous(in.latent.t.reshape({in.l.num_blocks, c.block_size, 1, c.L}), in.l, s)
                       .reshape({1, ctx, c.L});
      Tensor want = nan_f32({1, n, c.Hq, c.L});
      be.mla_absorbed_attention(want, in.q_rope.slice(q0, q0 + n).clone().reshape({1, n, c.Hq, c.R}),
                                in.q_lat.slice(q0, q0 + n).clone().reshape({1, n, c.Hq, c.L}), kr, lat, in.scale);
      EXPECT_TRUE(all_close(out.slice(q0, q0 + n).clone(), to_f64(want), 2e-6, 2e-6));
    }
  }
}

TEST(PagedMlaAttention, QuantizedCachesEqualF32CachesOfTheSameValues) {
  CpuBackend be;
  const MlaCase& c = kMlaCases[2];
  for (DType ld : {DType::bf16, DType::i8}) {
    SCOPED_TRACE(dtype_name(ld));
    const MlaInputs in = make_mla(be, c, ld, ld, 2270);
    Tensor out = nan_f32({in.l.N, c.Hq, c.L}), out32 = nan_f32({in.l.N, c.Hq, c.L});
    be.paged_mla_attention(out, in.q_rope, in.q_lat, in.k_rope.t, in.k_rope.scales_ptr(), in.latent.t,
                           in.latent.scales_ptr(), in.l.batch(), in.scale);
    be.paged_mla_attention(out32, in.q_rope, in.q_lat, dequantized(in.k_rope), nullptr, dequantized(in.latent), nullptr,
                           in.l.batch(), in.scale);
    EXPECT_TRUE(bit_equal(out, out32));
  }
}

// ---- determinism -------------------------------------------------------------------------------

TEST(PagedDeterminism, BitIdenticalForOneAndTwoThreads) {
  CpuBackend be;
  // A batch of decodes and a prefill chunk (blocked form), all above the OpenMP thresholds: the
  // fused row form with 1 and 2 threads. Then one long decode row alone: with 2 threads the split
  // form (its keys and columns spread over the threads), with 1 thread the fused form.
  const std::vector<SeqSpec> seqs = {{700, 1}, {90, 1}, {300, 1}, {120, 40}, {64, 3}};
  const std::vector<SeqSpec> one_row = {{1500, 1}};
  Rng rng(2300);
  const Layout l = make_layout(2300, seqs, 16), l1 = make_layout(2302, one_row, 16);
  const Cache k = make_cache(be, rng, l, {3, 64}, DType::f32), v = make_cache(be, rng, l, {3, 64}, DType::bf16);
  const Cache k1 = make_cache(be, rng, l1, {3, 64}, DType::bf16), v1 = make_cache(be, rng, l1, {3, 64}, DType::f32);
  Tensor q = random_f32(rng, {l.N, 9, 64}), q1 = random_f32(rng, {1, 9, 64});
  const MlaInputs mla = make_mla(be, {9, 3, 16, 96, 16, seqs}, DType::i8, DType::i8, 2301);
  const MlaInputs mla1 = make_mla(be, {9, 3, 16, 96, 16, one_row}, DType::f32, DType::bf16, 2303);
  auto run = [&] {
    Tensor out = nan_f32({l.N, 9, 64}), out1 = nan_f32({1, 9, 64});
    Tensor out_mla = nan_f32({mla.l.N, 9, 96}), out_mla1 = nan_f32({1, 9, 96});
    be.paged_attention(out, q, k.t, v.t, l.batch(), 0.125f);
    be.paged_attention(out1, q1, k1.t, v1.t, l1.batch(), 0.125f);
    be.paged_mla_attention(out_mla, mla.q_rope, mla.q_lat, mla.k_rope.t, mla.k_rope.scales_ptr(), mla.latent.t,
                           mla.latent.scales_ptr(), mla.l.batch(), mla.scale);
    be.paged_mla_attention(out_mla1, mla1.q_rope, mla1.q_lat, mla1.k_rope.t, nullptr, mla1.latent.t, nullptr,
                           mla1.l.batch(), mla1.scale);
    return std::vector<Tensor>{out, out1, out_mla, out_mla1};
  };
  ThreadCount restore;
  ThreadCount::set(1, 1);
  const std::vector<Tensor> one = run();
  ThreadCount::set(2, 2);
  const std::vector<Tensor> two = run(), again = run();
  for (size_t i = 0; i < one.size(); ++i) {
    EXPECT_TRUE(bit_equal(one[i], two[i])) << "output " << i << ": 1 vs 2 threads";
    EXPECT_TRUE(bit_equal(two[i], again[i])) << "output " << i << ": repeated run";
  }
}

// ---- bad inputs --------------------------------------------------------------------------------

TEST(PagedCacheWrite, BadInputsThrow) {
  CpuBackend be;
  Tensor cache = Tensor::zeros({4, 2, 3}), rows = Tensor::zeros({2, 3});
  const std::vector<int32_t> ok = {0, 7};
  be.paged_cache_write(cache, nullptr, rows, ok);  // the valid baseline
  const std::vector<int32_t> past = {0, 8}, neg = {-1, 0}, twice = {5, 5}, one = {0};
  EXPECT_TRUE(throws_error([&] { be.paged_cache_write(cache, nullptr, rows, past); }, ErrorCode::invalid_argument,
                           "slots[1] = 8 is outside [0, 8)"));
  EXPECT_TRUE(throws_error([&] { be.paged_cache_write(cache, nullptr, rows, neg); }, ErrorCode::invalid_argument,
                           "slots[0] = -1 is outside"));
  EXPECT_TRUE(throws_error([&] { be.paged_cache_write(cache, nullptr, rows, twice); }, ErrorCode::invalid_argument,
                           "slot 5 is written twice (slots[0] and slots[1])"));
  EXPECT_TRUE(throws_error([&] { be.paged_cache_write(cache, nullptr, rows, one); }, ErrorCode::shape_mismatch,
                           "slots has 1 entries but rows has 2 rows"));
  Tensor rows_w = Tensor::zeros({2, 4});
  EXPECT_TRUE(throws_error([&] { be.paged_cache_write(cache, nullptr, rows_w, ok); }, ErrorCode::shape_mismatch,
                           "rows: expected shape [2, 3], got [2, 4]"));
  Tensor scales = Tensor::zeros({4, 2});
  EXPECT_TRUE(throws_error([&] { be.paged_cache_write(cache, &scales, rows, ok); }, ErrorCode::invalid_argument,
                           "scales are only for an i8 cache (cache is f32)"));
  Tensor c8 = Tensor::zeros({4, 2, 3}, DType::i8);
  EXPECT_TRUE(throws_error([&] { be.paged_cache_write(c8, nullptr, rows, ok); }, ErrorCode::invalid_argument,
                           "an i8 cache needs scales"));
  Tensor scales_bad = Tensor::zeros({4, 3});
  EXPECT_TRUE(throws_error([&] { be.paged_cache_write(c8, &scales_bad, rows, ok); }, ErrorCode::shape_mismatch,
                           "scales: expected shape [4, 2]"));
  Tensor c16 = Tensor::zeros({4, 2, 3}, DType::f16);
  EXPECT_TRUE(throws_error([&] { be.paged_cache_write(c16, nullptr, rows, ok); }, ErrorCode::shape_mismatch,
                           "cache: expected dtype f32, bf16 or i8, got f16"));
  Tensor c2 = Tensor::zeros({4, 2});
  EXPECT_TRUE(throws_error([&] { be.paged_cache_write(c2, nullptr, rows, ok); }, ErrorCode::shape_mismatch,
                           "cache: expected [num_blocks, block_size, row dims...]"));
}

// A valid two-sequence batch (decode of ctx 3, chunk of 2 at ctx 5) over 4 blocks of 2 rows, and
// ways to break it.
struct BadBatch {
  std::vector<int32_t> query_start = {0, 1, 3}, context_len = {3, 5}, block_table = {2, 0, -1, 1, 3, 0};
  int64_t max_blocks = 3, block_size = 2;
  PagedBatch batch() const { return {query_start, context_len, block_table, max_blocks, block_size}; }
};

TEST(PagedAttention, BadInputsThrow) {
  CpuBackend be;
  Tensor q = Tensor::zeros({3, 4, 8}), k = Tensor::zeros({4, 2, 2, 8}), v = Tensor::zeros({4, 2, 2, 6});
  Tensor out = Tensor::zeros({3, 4, 6});
  be.paged_attention(out, q, k, v, BadBatch().batch(), 1.0f);  // the valid baseline
  auto expect_bad = [&](const BadBatch& bb, ErrorCode code, const std::string& needle) {
    EXPECT_TRUE(throws_error([&] { be.paged_attention(out, q, k, v, bb.batch(), 1.0f); }, code, needle));
  };
  BadBatch b;
  b.block_table[4] = 4;
  expect_bad(b, ErrorCode::invalid_argument, "sequence 1: block_table[1 * max_blocks + 1] = 4 is outside [0, 4)");
  b = BadBatch();
  b.block_table[0] = -1;
  expect_bad(b, ErrorCode::invalid_argument, "sequence 0: block_table[0 * max_blocks + 0] = -1");
  b = BadBatch();
  b.context_len[0] = 7;
  expect_bad(b, ErrorCode::invalid_argument, "sequence 0: context_len = 7 exceeds max_blocks 3 x block_size 2");
  b = BadBatch();
  b.context_len[1] = 1;
  expect_bad(b, ErrorCode::invalid_argument, "sequence 1: 2 query rows but context_len = 1");
  b = BadBatch();
  b.query_start = {0, 1, 2};
  expect_bad(b, ErrorCode::shape_mismatch, "query_start[2] = 2 but q has 3 rows");
  b = BadBatch();
  b.query_start = {0, 4, 3};
  b.context_len = {4, 5};
  expect_bad(b, ErrorCode::invalid_argument, "sequence 1: query_start decreases");
  b = BadBatch();
  b.query_start = {1, 2, 3};
  expect_bad(b, ErrorCode::invalid_argument, "query_start[0] = 1, expected 0");
  b = BadBatch();
  b.query_start = {0, 3};
  expect_bad(b, ErrorCode::invalid_argument, "query_start has 2 entries, expected 3");
  b = BadBatch();
  b.block_table.pop_back();
  expect_bad(b, ErrorCode::invalid_argument, "block_table has 5 entries, expected 2 sequences x max_blocks 3");
  b = BadBatch();
  b.block_size = 4;
  expect_bad(b, ErrorCode::shape_mismatch, "batch block_size = 4 but the cache has blocks of 2 rows");

  Tensor k3 = Tensor::zeros({4, 2, 3, 8}), v3 = Tensor::zeros({4, 2, 3, 6});
  EXPECT_TRUE(throws_error([&] { be.paged_attention(out, q, k3, v3, BadBatch().batch(), 1.0f); },
                           ErrorCode::shape_mismatch, "Hq = 4 query heads is not a multiple of Hkv = 3"));
  Tensor v_blocks = Tensor::zeros({5, 2, 2, 6});
  EXPECT_TRUE(throws_error([&] { be.paged_attention(out, q, k, v_blocks, BadBatch().batch(), 1.0f); },
                           ErrorCode::shape_mismatch, "v_cache: expected shape [4, 2, 2, 6], got [5, 2, 2, 6]"));
  Tensor k_dk = Tensor::zeros({4, 2, 2, 7});
  EXPECT_TRUE(throws_error([&] { be.paged_attention(out, q, k_dk, v, BadBatch().batch(), 1.0f); },
                           ErrorCode::shape_mismatch, "k_cache: expected shape [4, 2, 2, 8]"));
  Tensor k8 = Tensor::zeros({4, 2, 2, 8}, DType::i8);
  EXPECT_TRUE(throws_error([&] { be.paged_attention(out, q, k8, v, BadBatch().batch(), 1.0f); },
                           ErrorCode::shape_mismatch, "k_cache: expected dtype f32 or bf16, got i8"));
  Tensor out_bad = Tensor::zeros({3, 4, 8});
  EXPECT_TRUE(throws_error([&] { be.paged_attention(out_bad, q, k, v, BadBatch().batch(), 1.0f); },
                           ErrorCode::shape_mismatch, "out: expected shape [3, 4, 6]"));
  Tensor q4 = Tensor::zeros({1, 3, 4, 8});
  EXPECT_TRUE(throws_error([&] { be.paged_attention(out, q4, k, v, BadBatch().batch(), 1.0f); },
                           ErrorCode::shape_mismatch, "q: expected a 3-D tensor"));
  Tensor k_strided = Tensor::zeros({4, 2, 4, 8}).narrow(2, 0, 2);
  EXPECT_TRUE(throws_error([&] { be.paged_attention(out, q, k_strided, v, BadBatch().batch(), 1.0f); },
                           ErrorCode::invalid_argument, "k_cache must be contiguous"));
}

TEST(PagedMlaAttention, BadInputsThrow) {
  CpuBackend be;
  Tensor q_rope = Tensor::zeros({3, 4, 2}), q_lat = Tensor::zeros({3, 4, 8});
  Tensor k_rope = Tensor::zeros({4, 2, 2, 2}), lat = Tensor::zeros({4, 2, 8});
  Tensor out = Tensor::zeros({3, 4, 8});
  const BadBatch valid;
  const PagedBatch ok = valid.batch();
  be.paged_mla_attention(out, q_rope, q_lat, k_rope, nullptr, lat, nullptr, ok, 1.0f);  // the valid baseline
  Tensor lat8 = Tensor::zeros({4, 2, 8}, DType::i8), scales = Tensor::zeros({4, 2});
  be.paged_mla_attention(out, q_rope, q_lat, k_rope, nullptr, lat8, &scales, ok, 1.0f);
  EXPECT_TRUE(throws_error([&] { be.paged_mla_attention(out, q_rope, q_lat, k_rope, nullptr, lat8, nullptr, ok, 1.0f); },
                           ErrorCode::invalid_argument, "an i8 latent_cache needs latent_scales"));
  EXPECT_TRUE(throws_error([&] { be.paged_mla_attention(out, q_rope, q_lat, k_rope, nullptr, lat, &scales, ok, 1.0f); },
                           ErrorCode::invalid_argument, "latent_scales are only for an i8 latent_cache"));
  Tensor scales_bad = Tensor::zeros({4, 3});
  EXPECT_TRUE(throws_error([&] { be.paged_mla_attention(out, q_rope, q_lat, k_rope, nullptr, lat8, &scales_bad, ok, 1.0f); },
                           ErrorCode::shape_mismatch, "latent_scales: expected shape [4, 2]"));
  Tensor k_rope8 = Tensor::zeros({4, 2, 2, 2}, DType::i8);
  be.paged_mla_attention(out, q_rope, q_lat, k_rope8, &scales, lat8, &scales, ok, 1.0f);
  EXPECT_TRUE(throws_error([&] { be.paged_mla_attention(out, q_rope, q_lat, k_rope8, nullptr, lat, nullptr, ok, 1.0f); },
                           ErrorCode::invalid_argument, "an i8 k_rope_cache needs k_rope_scales"));
  EXPECT_TRUE(throws_error([&] { be.paged_mla_attention(out, q_rope, q_lat, k_rope, &scales, lat, nullptr, ok, 1.0f); },
                           ErrorCode::invalid_argument, "k_rope_scales are only for an i8 k_rope_cache"));
  Tensor lat_l = Tensor::zeros({4, 2, 9});
  EXPECT_TRUE(throws_error([&] { be.paged_mla_attention(out, q_rope, q_lat, k_rope, nullptr, lat_l, nullptr, ok, 1.0f); },
                           ErrorCode::shape_mismatch, "latent_cache: expected shape [4, 2, 8]"));
  Tensor k_rope3 = Tensor::zeros({4, 2, 3, 2});
  EXPECT_TRUE(throws_error([&] { be.paged_mla_attention(out, q_rope, q_lat, k_rope3, nullptr, lat, nullptr, ok, 1.0f); },
                           ErrorCode::shape_mismatch, "Hq = 4 query heads is not a multiple of Hkv = 3"));
  Tensor k_rope_r = Tensor::zeros({4, 2, 2, 3});
  EXPECT_TRUE(throws_error([&] { be.paged_mla_attention(out, q_rope, q_lat, k_rope_r, nullptr, lat, nullptr, ok, 1.0f); },
                           ErrorCode::shape_mismatch, "k_rope_cache: expected shape [4, 2, 2, 2]"));
  BadBatch b;
  b.block_table[3] = 9;
  EXPECT_TRUE(throws_error([&] { be.paged_mla_attention(out, q_rope, q_lat, k_rope, nullptr, lat, nullptr, b.batch(), 1.0f); },
                           ErrorCode::invalid_argument,
                           "paged_mla_attention: sequence 1: block_table[1 * max_blocks + 0] = 9 is outside [0, 4)"));
  Tensor out_bad = Tensor::zeros({3, 4, 2});
  EXPECT_TRUE(throws_error([&] { be.paged_mla_attention(out_bad, q_rope, q_lat, k_rope, nullptr, lat, nullptr, ok, 1.0f); },
                           ErrorCode::shape_mismatch, "out: expected shape [3, 4, 8]"));
}

}  // namespace
}  // namespace latte::test
