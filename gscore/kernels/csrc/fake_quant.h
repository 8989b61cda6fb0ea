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
#include <atomic>
#include <cmath>
#include <cstdint>
#include <limits>

#include "pool.h"
#include "simd.h"

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

// int8 activations as a simulated layer's static input quantizer computes them
// (gscore/nn/quantizers.py StaticInputQuantizer), in its order of operations, so outputs are
// bit-identical: code = clamp(rint(x / scale) + zp, qmin, qmax) (rounded before the zero point is
// added, unlike fake_quant), out = (code - zp) * scale.
inline void static_act_fake_quant(const float* x, int64_t n, float scale, float zp, float qmin, float qmax, float* out) {
  parallel_for(n, kElementGrain, n * 4, [&](int64_t first, int64_t last) {
    for (int64_t i = first; i < last; ++i) out[i] = (std::min(std::max(std::nearbyint(x[i] / scale) + zp, qmin), qmax) - zp) * scale;
  });
}

// out[c] = (min, max) of channel c of x viewed as [channels][per_channel]; both NaN when the
// channel holds a NaN or an infinity (callers refuse non-finite data either way).
inline void minmax(const float* x, int64_t channels, int64_t per_channel, float* out) {
  const int64_t grain = std::max<int64_t>(1, kElementGrain / std::max<int64_t>(per_channel, 1));
  parallel_for(channels, grain, channels * per_channel, [&](int64_t first, int64_t last) {
    for (int64_t c = first; c < last; ++c) {
      const float* row = x + c * per_channel;
      const float inf = std::numeric_limits<float>::infinity();
      FV::V lo = FV::set1(inf), hi = FV::set1(-inf), poison = FV::zero();
      int64_t i = 0;
      for (; i + FV::W <= per_channel; i += FV::W) {
        const FV::V v = FV::load(row + i);
        lo = FV::min(lo, v);
        hi = FV::max(hi, v);
        poison = FV::add(poison, FV::mul(v, FV::zero()));
      }
      float l = FV::hmin(lo), h = FV::hmax(hi), p = FV::sum(poison);
      for (; i < per_channel; ++i) {
        l = std::min(l, row[i]);
        h = std::max(h, row[i]);
        p += row[i] * 0.0f;
      }
      const bool finite = p == 0.0f;
      out[2 * c] = finite ? l : std::numeric_limits<float>::quiet_NaN();
      out[2 * c + 1] = finite ? h : std::numeric_limits<float>::quiet_NaN();
    }
  });
}

// Integer codes of x viewed as [rows][cols] with one scale and zero point per row (or one for
// all): code = clamp(rint(x / scale + zp), qmin, qmax), the float operations of
// gscore.quant.quantize in its order, so the codes are identical. Returns how many values were
// not finite (then the codes are not to be used).
template <class Code>
int64_t quantize_rows(const float* x, int64_t rows, int64_t cols, const float* scale, const float* zp, bool per_row, float qmin, float qmax, Code* out) {
  std::atomic<int64_t> bad{0};
  const int64_t grain = std::max<int64_t>(1, kElementGrain / std::max<int64_t>(cols, 1));
  parallel_for(rows, grain, rows * cols, [&](int64_t first, int64_t last) {
    int64_t nonfinite = 0;
    for (int64_t r = first; r < last; ++r) {
      const float s = scale[per_row ? r : 0], z = zp[per_row ? r : 0];
      const float* xr = x + r * cols;
      Code* o = out + r * cols;
      const FV::V sv = FV::set1(s), zv = FV::set1(z), zero = FV::zero();
      FV::V poison = zero;  // stays 0 unless a value is NaN or +/-Inf (0 * Inf is NaN)
      int64_t i = 0;
      for (; i + FV::W <= cols; i += FV::W) {
        const FV::V v = FV::load(xr + i);
        poison = FV::add(poison, FV::mul(v, zero));
        FV::store_codes(FV::clamp(FV::round(FV::add(FV::div(v, sv), zv)), qmin, qmax), o + i);
      }
      for (; i < cols; ++i) {
        poison = FV::add(poison, FV::set1(xr[i] * 0.0f));
        o[i] = static_cast<Code>(static_cast<int32_t>(std::min(std::max(std::nearbyint(xr[i] / s + z), qmin), qmax)));
      }
      if (FV::sum(poison) != 0.0f)  // error path: count them
        for (int64_t j = 0; j < cols; ++j) nonfinite += !std::isfinite(xr[j]);
    }
    bad += nonfinite;
  });
  return bad.load();
}

}  // namespace gsk
