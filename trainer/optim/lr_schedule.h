// Learning rate: linear warm-up from 0 to `peak` over `warmup` steps, then cosine decay to
// `floor` at `total` steps (and `floor` after). Step indices are 0-based: step 0 trains at
// peak / warmup, so no step runs at lr 0.
#pragma once
#include <cmath>
#include <cstdint>

namespace latte {

struct LrSchedule {
  double peak = 3e-4, floor = 3e-5;
  int64_t warmup = 0, total = 1;

  double at(int64_t step) const {
    if (warmup > 0 && step < warmup) return peak * double(step + 1) / double(warmup);
    if (step >= total) return floor;
    const double span = double(total - warmup);
    const double progress = span > 0 ? double(step - warmup) / span : 1.0;
    return floor + 0.5 * (peak - floor) * (1.0 + std::cos(M_PI * progress));
  }
};

}  // namespace latte
