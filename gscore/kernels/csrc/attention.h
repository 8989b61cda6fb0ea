// Attention of a few new query positions over a KV cache, dequantising int8 entries inside.
//
// q [B, Hq, T, D] float32; cached keys/values in either layout, [B, Hkv, S, D] (a cache that
// grows by concatenation) or [S, B, Hkv, D] (a preallocated buffer, written in place by
// cache_attention below), with Hq a multiple of Hkv (grouped query attention: head h reads kv
// head h / (Hq / Hkv)); mask [T, S] additive; the output is [B, T, Hq * D], the layout the
// output projection takes. Only the first `valid` keys are read (the rest of a buffer is
// unwritten; the mask excludes it anyway). An optional float *prefix* of P entries
// (pk/pv [1, Hkv, P, D], the same for every sequence of the batch) comes before the cache's
// own entries: the mask is then [T, P + S], its first P columns for the prefix. For each (b, h, t):
//   score[s] = (q . key_s) * softmax_scale + mask[t, s];  p = softmax(score);  out = sum_s p[s] value_s
// Cache formats (dequantisation folded into the dot products, so entries are never expanded):
//   float   key_s as stored
//   channel int8 codes with per (kv head, d) scale and zero point:  key = (code - zp) * scale
//   token   int8 codes with one scale per (b, kv head, s):          key = code * scale
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "pool.h"
#include "simd.h"

namespace gsk {

enum class CacheKind { kFloat, kChannel, kToken };

// Where row (b, h, s) of a cache lives: rows of D values (and token scales) at
// b * sb + h * sh + s * ss.
struct Strides {
  int64_t sb, sh, ss;
  int64_t at(int64_t b, int64_t h, int64_t s) const { return b * sb + h * sh + s * ss; }
  static Strides batch_major(int64_t H, int64_t S) { return {H * S, S, 1}; }  // [B, H, S, .]
  static Strides token_major(int64_t B, int64_t H) { return {H, 1, B * H}; }  // [S, B, H, .]
};

struct KVView {
  CacheKind kind;
  const void* data;  // float or int8 rows of D
  const float* scale;  // channel: [Hkv, D]; token: one per row; float: unused
  const float* zero;  // channel: [Hkv, D]; otherwise unused
  Strides rows;
};

struct AttentionShape {
  int64_t B, Hq, Hkv, T, S, D;
  int64_t valid;  // keys [0, valid) are read
  int64_t P = 0;  // float prefix entries before the cache's own
};

// The float prefix: keys and values [Hkv, P, D] (nullptr when P is 0).
struct Prefix {
  const float* keys = nullptr;
  const float* values = nullptr;
};

// dot(a, row) over D values, row float or int8.
inline float dot_row(const float* a, const void* row, bool int8, int64_t D) {
  using V = FV::V;
  constexpr int W = FV::W;
  V acc = FV::zero();
  int64_t d = 0;
  float s = 0.0f;
  if (int8) {
    const int8_t* r = static_cast<const int8_t*>(row);
    for (; d + W <= D; d += W) acc = FV::fma(FV::load(a + d), FV::from_i8(r + d), acc);
    s = FV::sum(acc);
    for (; d < D; ++d) s += a[d] * static_cast<float>(r[d]);
  } else {
    const float* r = static_cast<const float*>(row);
    for (; d + W <= D; d += W) acc = FV::fma(FV::load(a + d), FV::load(r + d), acc);
    s = FV::sum(acc);
    for (; d < D; ++d) s += a[d] * r[d];
  }
  return s;
}

// out[0:D] += p * row
inline void axpy_row(float p, const void* row, bool int8, int64_t D, float* out) {
  using V = FV::V;
  constexpr int W = FV::W;
  const V pv = FV::set1(p);
  int64_t d = 0;
  if (int8) {
    const int8_t* r = static_cast<const int8_t*>(row);
    for (; d + W <= D; d += W) FV::store(out + d, FV::fma(pv, FV::from_i8(r + d), FV::load(out + d)));
    for (; d < D; ++d) out[d] += p * static_cast<float>(r[d]);
  } else {
    const float* r = static_cast<const float*>(row);
    for (; d + W <= D; d += W) FV::store(out + d, FV::fma(pv, FV::load(r + d), FV::load(out + d)));
    for (; d < D; ++d) out[d] += p * r[d];
  }
}

inline void attention(const float* q, const KVView& keys, const KVView& values, const float* mask, float softmax_scale, const AttentionShape& sh, float* out, const Prefix& prefix = {}) {
  const int64_t B = sh.B, Hq = sh.Hq, Hkv = sh.Hkv, T = sh.T, S = sh.S, D = sh.D, P = sh.P;
  (void)B;
  const int64_t group = Hq / Hkv, items = B * Hq * T, cols = P + S;
  const bool k8 = keys.kind != CacheKind::kFloat, v8 = values.kind != CacheKind::kFloat;
  const size_t elem_k = k8 ? 1 : 4, elem_v = v8 ? 1 : 4;
  parallel_for(items, 1, 2 * items * (P + sh.valid) * D, [&](int64_t first, int64_t last) {
    std::vector<float> score(static_cast<size_t>(cols)), qs(static_cast<size_t>(D)), acc(static_cast<size_t>(D)), pacc(static_cast<size_t>(D));
    for (int64_t item = first; item < last; ++item) {
      const int64_t t = item % T, h = (item / T) % Hq, b = item / (T * Hq), kvh = h / group;
      const float* qv = q + ((b * Hq + h) * T + t) * D;
      const char* kdata = static_cast<const char*>(keys.data);
      const char* vdata = static_cast<const char*>(values.data);
      // keys: fold the per-channel scale into q, the zero point into one constant
      float offset = 0.0f;
      if (keys.kind == CacheKind::kChannel) {
        for (int64_t d = 0; d < D; ++d) {
          qs[d] = qv[d] * keys.scale[kvh * D + d];
          offset += qs[d] * keys.zero[kvh * D + d];
        }
      } else {
        std::copy(qv, qv + D, qs.begin());
      }
      const float* mrow = mask + t * cols;
      float best = -std::numeric_limits<float>::infinity();
      for (int64_t s = 0; s < P; ++s) {  // the float prefix, with the unscaled query
        score[s] = dot_row(qv, prefix.keys + (kvh * P + s) * D, false, D) * softmax_scale + mrow[s];
        best = std::max(best, score[s]);
      }
      float* own = score.data() + P;  // the cache's entries
      for (int64_t s = 0; s < sh.valid; ++s) {
        const int64_t row = keys.rows.at(b, kvh, s);
        float dot = dot_row(qs.data(), kdata + row * D * elem_k, k8, D) - offset;
        if (keys.kind == CacheKind::kToken) dot *= keys.scale[row];
        own[s] = dot * softmax_scale + mrow[P + s];
        best = std::max(best, own[s]);
      }
      float total = 0.0f;
      for (int64_t s = 0; s < P + sh.valid; ++s) {
        score[s] = std::exp(score[s] - best);
        total += score[s];
      }
      std::fill(pacc.begin(), pacc.end(), 0.0f);
      for (int64_t s = 0; s < P; ++s) axpy_row(score[s], prefix.values + (kvh * P + s) * D, false, D, pacc.data());
      std::fill(acc.begin(), acc.end(), 0.0f);
      float pzero = 0.0f;  // sum of the weights that multiplied raw codes (channel zero points)
      for (int64_t s = 0; s < sh.valid; ++s) {
        float p = own[s];
        if (p == 0.0f) continue;
        const int64_t row = values.rows.at(b, kvh, s);
        if (values.kind == CacheKind::kToken) p *= values.scale[row];
        pzero += p;
        axpy_row(p, vdata + row * D * elem_v, v8, D, acc.data());
      }
      float* o = out + ((b * T + t) * Hq + h) * D;
      const float inv = 1.0f / total;
      if (values.kind == CacheKind::kChannel) {
        for (int64_t d = 0; d < D; ++d) o[d] = ((acc[d] - pzero * values.zero[kvh * D + d]) * values.scale[kvh * D + d] + pacc[d]) * inv;
      } else {
        for (int64_t d = 0; d < D; ++d) o[d] = (acc[d] + pacc[d]) * inv;
      }
    }
  });
}

// Write the T new keys (or values) x [B, Hkv, T, D] into a token-major buffer [cap, B, Hkv, D]
// at rows pos .. pos + T, encoded as the cache stores them (the MindSpore cells' encode):
//   channel: code = clamp(rint(x / scale) + zp, -128, 127)
//   token:   s = max(max|x| / 127, 1e-8) per (b, h, t), code = clamp(rint(x / s), -127, 127)
inline void cache_write(const float* x, CacheKind kind, void* data, float* token_scale, const float* scale, const float* zero, int64_t B, int64_t H, int64_t T, int64_t D, int64_t pos) {
  const Strides out = Strides::token_major(B, H);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < T; ++t) {
        const float* src = x + ((b * H + h) * T + t) * D;
        const int64_t row = out.at(b, h, pos + t);
        if (kind == CacheKind::kFloat) {
          std::copy(src, src + D, static_cast<float*>(data) + row * D);
          continue;
        }
        int8_t* dst = static_cast<int8_t*>(data) + row * D;
        if (kind == CacheKind::kChannel) {
          for (int64_t d = 0; d < D; ++d) {
            const float v = std::nearbyint(src[d] / scale[h * D + d]) + zero[h * D + d];
            dst[d] = static_cast<int8_t>(std::min(std::max(v, -128.0f), 127.0f));
          }
        } else {
          float amax = 0.0f;
          for (int64_t d = 0; d < D; ++d) amax = std::max(amax, std::fabs(src[d]));
          const float s = std::max(amax / 127.0f, 1e-8f);
          token_scale[row] = s;
          for (int64_t d = 0; d < D; ++d) dst[d] = static_cast<int8_t>(std::min(std::max(std::nearbyint(src[d] / s), -127.0f), 127.0f));
        }
      }
}

}  // namespace gsk
