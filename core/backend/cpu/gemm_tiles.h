// Private to the CPU kernel files: how the sgemm-based paths (linear.cpp for f32/bf16 weights,
// quantized_linear.cpp for GGUF block weights) cut an output into tiles, each one single-threaded
// sgemm over the whole reduction. The tiles are a function of the shape only, never of the
// thread count, which is what keeps every result bit-identical for any number of threads
// (linear.cpp's header explains why OpenBLAS's own threading cannot be used).
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

namespace latte::cpu {

// Largest output tile edge. Each tile is one OpenBLAS call that packs its operands afresh, so
// bigger tiles pack less per FLOP: on the Xeon, bench/linear at M = 1024 (a training step's rows)
// ran SmolLM2's seven products plus the logits in 1133 ms at 1024 against 1277 ms at 512.
constexpr int64_t kTile = 1024;
constexpr int64_t kThinRows = 16;   // outputs with at most this many rows ...
constexpr int64_t kThinTile = 128;  // ... get column tiles of at most this edge
constexpr int64_t kMinTiles = 8;    // tiles a large product is cut into at least
constexpr int64_t kMinEdge = 64;    // ... but no tile edge below this
constexpr int64_t kMinSplitWork = int64_t(1) << 24;  // M*N*K from which that pays

// The edge of the tiles that cut a dimension of n: at most max_edge, balanced so that no tile is
// a thin remainder (576 -> 2 x 288, not 512 + 64), a multiple of unit.
inline int64_t tile_edge(int64_t n, int64_t max_edge, int64_t unit = 16) {
  const int64_t parts = (n + max_edge - 1) / max_edge;
  return ((n + parts - 1) / parts + unit - 1) / unit * unit;
}

// Calls f(r0, rows, c0, cols) for every tile of an [R, C] output whose elements each sum K
// products, in parallel. Tiles are up to kTile x kTile; when R is small the product is bound by
// reading the other operand, so C is cut finer (kThinTile) to give every thread a share of it.
// Products big enough to be worth it are cut into at least kMinTiles tiles (halving the longer
// edge, down to kMinEdge), so that 2 or 4 threads get equal shares: a 512 x 1536 output in 3
// tiles leaves one of 2 threads idle a third of the time. Column edges are multiples of c_unit
// (32 where a column tile must hold whole quantized blocks).
// How an [R, C] output is cut: tr x tc tiles of er x ec (the last row/column of tiles may be
// smaller). Tile i covers rows from (i / tc) * er and columns from (i % tc) * ec.
struct TileGrid {
  int64_t R, C, er, ec, tr, tc;
  int64_t count() const { return tr * tc; }
  template <typename F>
  void run(int64_t i, F&& f) const {
    const int64_t r0 = (i / tc) * er, c0 = (i % tc) * ec;
    f(r0, std::min(er, R - r0), c0, std::min(ec, C - c0));
  }
};

inline TileGrid tile_grid(int64_t R, int64_t C, int64_t K, int64_t c_unit = 16) {
  int64_t er = tile_edge(R, kTile), ec = tile_edge(C, R <= kThinRows ? kThinTile : kTile, c_unit);
  auto count = [&] { return ((R + er - 1) / er) * ((C + ec - 1) / ec); };
  if (R * C * K >= kMinSplitWork) {
    while (count() < kMinTiles) {
      if (er >= ec && er >= 2 * kMinEdge) {
        er = tile_edge(R, (er + 1) / 2);
      } else if (ec >= 2 * kMinEdge) {
        ec = tile_edge(C, (ec + 1) / 2, c_unit);
      } else {
        break;
      }
    }
  }
  return {R, C, er, ec, (R + er - 1) / er, (C + ec - 1) / ec};
}

// Calls f(r0, rows, c0, cols) for every tile of an [R, C] output whose elements each sum K
// products, in parallel. Tiles are up to kTile x kTile; when R is small the product is bound by
// reading the other operand, so C is cut finer (kThinTile) to give every thread a share of it.
// Products big enough to be worth it are cut into at least kMinTiles tiles (halving the longer
// edge, down to kMinEdge), so that 2 or 4 threads get equal shares: a 512 x 1536 output in 3
// tiles leaves one of 2 threads idle a third of the time. Column edges are multiples of c_unit
// (32 where a column tile must hold whole quantized blocks).
template <typename F>
void for_each_tile(int64_t R, int64_t C, int64_t K, F&& f, int64_t c_unit = 16) {
  const TileGrid g = tile_grid(R, C, K, c_unit);
#pragma omp parallel for schedule(dynamic, 1) if (g.count() > 1)
  for (int64_t i = 0; i < g.count(); ++i) g.run(i, f);
}

// The calling thread's buffer for widened (or dequantized) weights, grown on demand and kept for
// the next call.
inline float* widen_buffer(int64_t elems) {
  thread_local std::vector<float> buf;
  if (int64_t(buf.size()) < elems) buf.resize(size_t(elems));
  return buf.data();
}

}  // namespace latte::cpu
