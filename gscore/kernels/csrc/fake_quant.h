// Fake quantization for quantization-aware training: one pass forward, one pass backward.
//
// forward:  u = x / scale + zp;  out = (clamp(rint(u), qmin, qmax) - zp) * scale
// backward: dx = dout where qmin - 0.5 <= u <= qmax + 0.5 (values that quantize without
//           clipping), 0 elsewhere: the straight-through estimator.
// The forward performs the same float operations in the same order as the MindSpore
// composition it replaces (gscore/nn/fake_quant.py _ste), so outputs are bit-identical; a
// symmetric scheme passes zp = 0, which changes no value. scale and zp hold one value, or one
// per leading-axis channel (per-channel weights).
// minmax: the range observers need, one pass instead of a min and a max reduction.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "pool.h"

namespace gsk {

// Element-wise passes are cheap per value; below this many values a second thread costs more
// (waking it, and waiting for it on a busy machine) than it saves.
constexpr int64_t kElementGrain = 1 << 18;

struct FakeQuantShape {
  int64_t channels, per_channel;  // x viewed as [channels][per_channel]
  bool broadcast;  // one scale for everything
};

inline void fake_quant(const float* x, const float* scale, const float* zp, float qmin, float qmax, const FakeQuantShape& sh, float* out) {
  parallel_for(sh.channels * sh.per_channel, kElementGrain, sh.channels * sh.per_channel * 4, [&](int64_t first, int64_t last) {
    for (int64_t i = first; i < last; ++i) {
      const int64_t c = sh.broadcast ? 0 : i / sh.per_channel;
      const float s = scale[c], z = zp[c];
      const float u = x[i] / s + z;
      out[i] = (std::min(std::max(std::nearbyint(u), qmin), qmax) - z) * s;
    }
  });
}

inline void fake_quant_grad(const float* x, const float* scale, const float* zp, float qmin, float qmax, const FakeQuantShape& sh, const float* dout, float* dx) {
  const float lo = qmin - 0.5f, hi = qmax + 0.5f;
  parallel_for(sh.channels * sh.per_channel, kElementGrain, sh.channels * sh.per_channel * 4, [&](int64_t first, int64_t last) {
    for (int64_t i = first; i < last; ++i) {
      const int64_t c = sh.broadcast ? 0 : i / sh.per_channel;
      const float u = x[i] / scale[c] + zp[c], d = dout[i];  // unconditional loads: vectorises
      dx[i] = (u >= lo) & (u <= hi) ? d : 0.0f;
    }
  });
}

// out[c] = (min, max) of channel c of x viewed as [channels][per_channel]; NaN propagates.
inline void minmax(const float* x, int64_t channels, int64_t per_channel, float* out) {
  for (int64_t c = 0; c < channels; ++c) {
    const float* row = x + c * per_channel;
    float lo = std::numeric_limits<float>::infinity(), hi = -lo;
    bool nan = false;
    for (int64_t i = 0; i < per_channel; ++i) {
      lo = std::min(lo, row[i]);
      hi = std::max(hi, row[i]);
      nan |= std::isnan(row[i]);
    }
    out[2 * c] = nan ? std::numeric_limits<float>::quiet_NaN() : lo;
    out[2 * c + 1] = nan ? std::numeric_limits<float>::quiet_NaN() : hi;
  }
}

}  // namespace gsk
