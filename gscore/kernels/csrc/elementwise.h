// Fused element-wise steps of a decoder block, each one operator instead of several.
//
// Decoding one token runs a few thousand element-wise values per step through each of these;
// as separate MindSpore operators (RMSNorm is six, rotate-half RoPE seven, SiLU-gate three) the
// per-operator launch cost, not the arithmetic, dominates. Each computes what the MindSpore
// composition computes, in the same order of float operations where that is possible:
//   rms_norm:  y = (x * rsqrt(mean(x^2) + eps)) * w        over the last axis
//   rotary:    y = x * cos + rotate_half(x) * sin,  rotate_half(x) = [-x[D/2:], x[:D/2]]
//   silu_mul:  y = (g * sigmoid(g)) * u,  sigmoid(g) = 1 / (1 + e^-g)
//   add:       y = a + b (a residual connection; MindSpore's Add splits even a few hundred values
//              across its kernel thread pool, which costs far more than the sum on a busy CPU)
//   hadamard:  y = left @ (x.view(a, b) @ right) per row (OnlineHadamard's factored product,
//              seven MindSpore operators)
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "pool.h"
#include "simd.h"

namespace gsk {

constexpr int64_t kRowGrain = 16;  // rows per chunk

// x [rows, H], w [H] -> y [rows, H]
inline void rms_norm(const float* x, const float* w, float eps, int64_t rows, int64_t H, float* y) {
  parallel_for(rows, kRowGrain, rows * H * 4, [&](int64_t first, int64_t last) {
    for (int64_t r = first; r < last; ++r) {
      const float* xr = x + r * H;
      float* yr = y + r * H;
      double sq = 0.0;
      for (int64_t i = 0; i < H; ++i) sq += static_cast<double>(xr[i]) * xr[i];
      const float inv = 1.0f / std::sqrt(static_cast<float>(sq / static_cast<double>(H)) + eps);
      for (int64_t i = 0; i < H; ++i) yr[i] = (xr[i] * inv) * w[i];
    }
  });
}

// One head vector x [D] at one position (c, s [D]) -> y [D] (y must not alias x).
inline void rotate_half(const float* x, const float* c, const float* s, int64_t D, float* y) {
  const int64_t half = D / 2;
  for (int64_t d = 0; d < half; ++d) y[d] = x[d] * c[d] + (-x[d + half]) * s[d];
  for (int64_t d = half; d < D; ++d) y[d] = x[d] * c[d] + x[d - half] * s[d];
}

// x [B, H, T, D], cos/sin [T, D] -> y
inline void rotary(const float* x, const float* cos, const float* sin, int64_t BH, int64_t T, int64_t D, float* y) {
  parallel_for(BH * T, kRowGrain, BH * T * D * 3, [&](int64_t first, int64_t last) {
    for (int64_t row = first; row < last; ++row) {
      const int64_t t = row % T;
      rotate_half(x + row * D, cos + t * D, sin + t * D, D, y + row * D);
    }
  });
}

// The same on a projection's output before the heads are split out: x [B * T, H * D] (row
// b * T + t holds token t's H head vectors one after another) -> y.
inline void rotary_tokens(const float* x, const float* cos, const float* sin, int64_t rows, int64_t T, int64_t H, int64_t D, float* y) {
  parallel_for(rows, kRowGrain, rows * H * D * 3, [&](int64_t first, int64_t last) {
    for (int64_t row = first; row < last; ++row) {
      const int64_t t = row % T;
      for (int64_t h = 0; h < H; ++h) rotate_half(x + (row * H + h) * D, cos + t * D, sin + t * D, D, y + (row * H + h) * D);
    }
  });
}

// g, u [n] -> y [n]
inline void silu_mul(const float* g, const float* u, int64_t n, float* y) {
  constexpr int64_t kGrain = 1 << 16;
  parallel_for(n, kGrain, n * 16, [&](int64_t first, int64_t last) {
    int64_t i = first;
    const FV::V one = FV::set1(1.0f), zero = FV::zero();
    for (; i + FV::W <= last; i += FV::W) {
      const FV::V gv = FV::load(g + i);
      const FV::V sig = FV::div(one, FV::add(one, exp_v(FV::sub(zero, gv))));
      FV::store(y + i, FV::mul(FV::mul(gv, sig), FV::load(u + i)));
    }
    for (; i < last; ++i) y[i] = (g[i] * (1.0f / (1.0f + std::exp(-g[i])))) * u[i];
  });
}

// x [rows, a * b], left [a, a], right [b, b] -> y [rows, a * b]: each row viewed as [a, b] is
// multiplied by `right` on the right, then by `left` on the left (the factored Hadamard of
// gscore.nn.rotation.OnlineHadamard, 1/sqrt(n) folded into `left`), summing k in increasing order.
inline void hadamard_rows(const float* x, const float* left, const float* right, int64_t rows, int64_t a, int64_t b, float* y) {
  const int64_t n = a * b;
  parallel_for(rows, 1, rows * n * (a + b), [&](int64_t first, int64_t last) {
    std::vector<float> inner(static_cast<size_t>(n));
    for (int64_t r = first; r < last; ++r) {
      const float* xr = x + r * n;
      float* yr = y + r * n;
      for (int64_t i = 0; i < a; ++i) {
        float* out = inner.data() + i * b;
        std::fill(out, out + b, 0.0f);
        for (int64_t k = 0; k < b; ++k) {
          const float v = xr[i * b + k];
          const float* rk = right + k * b;
          for (int64_t j = 0; j < b; ++j) out[j] += v * rk[j];
        }
      }
      for (int64_t i = 0; i < a; ++i) {
        float* out = yr + i * b;
        std::fill(out, out + b, 0.0f);
        for (int64_t k = 0; k < a; ++k) {
          const float v = left[i * a + k];
          const float* in = inner.data() + k * b;
          for (int64_t j = 0; j < b; ++j) out[j] += v * in[j];
        }
      }
    }
  });
}

// a, b [n] -> a + b
inline void add(const float* a, const float* b, int64_t n, float* y) {
  parallel_for(n, 1 << 18, n, [&](int64_t first, int64_t last) {
    for (int64_t i = first; i < last; ++i) y[i] = a[i] + b[i];
  });
}

}  // namespace gsk
