// Attention of new query positions (a few when decoding, a whole prompt when prefilling) over a
// KV cache, dequantising int8 entries inside.
//
// q [B, Hq, T, D] float32 (or [B, T, Hq, D] when the shape says token_rows: the rows the q
// projection gives, no transpose between); cached keys/values in either layout, [B, Hkv, S, D] (a
// cache that grows by concatenation) or [S, B, Hkv, D] (a preallocated buffer, written in place by
// cache_attention below), with Hq a multiple of Hkv (grouped query attention: head h reads kv head
// h / (Hq / Hkv)); mask [T, S] additive; the output is [B, T, Hq * D], the layout the output
// projection takes. Only the first `valid` keys are read (the rest of a buffer is unwritten; the
// mask excludes it anyway). An optional float *prefix* of P entries (pk/pv [1, Hkv, P, D], the same
// for every sequence of the batch) comes before the cache's own entries: the mask is then
// [T, P + S], its first P columns for the prefix. For each (b, h, t):
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
  bool token_rows = false;  // queries (and new keys/values) as [B, T, H, D], not [B, H, T, D]
  // offset of (b, h, t)'s D values in new queries, keys or values of H heads
  int64_t new_row(int64_t b, int64_t h, int64_t t, int64_t H) const { return (token_rows ? (b * T + t) * H + h : (b * H + h) * T + t) * D; }
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

// out[0:D] = sum over s < n of w[s] * row s (at data + rows.at(b, h, s) * D elements, float or
// int8), skipping zero weights, each lane summed in the order of s. NV vectors of D = NV * W
// values stay in registers for the whole loop: an axpy per row through memory waits on its own
// stores, which made this the slowest part of a long prefill.
template <int NV, bool kInt8>
inline void weighted_sum_v(const float* w, int64_t n, const void* data, const Strides& rows, int64_t b, int64_t h, float* out) {
  constexpr int W = FV::W;
  constexpr int64_t D = NV * W;
  FV::V acc[NV];
  for (int i = 0; i < NV; ++i) acc[i] = FV::zero();
  for (int64_t s = 0; s < n; ++s) {
    if (w[s] == 0.0f) continue;
    const FV::V p = FV::set1(w[s]);
    const int64_t row = rows.at(b, h, s);
    if constexpr (kInt8) {
      const int8_t* r = static_cast<const int8_t*>(data) + row * D;
      for (int i = 0; i < NV; ++i) acc[i] = FV::fma(p, FV::from_i8(r + i * W), acc[i]);
    } else {
      const float* r = static_cast<const float*>(data) + row * D;
      for (int i = 0; i < NV; ++i) acc[i] = FV::fma(p, FV::load(r + i * W), acc[i]);
    }
  }
  for (int i = 0; i < NV; ++i) FV::store(out + i * W, acc[i]);
}

template <bool kInt8>
inline void weighted_sum_d(const float* w, int64_t n, const void* data, const Strides& rows, int64_t b, int64_t h, int64_t D, float* out) {
  switch (D / FV::W) {
    case 1: weighted_sum_v<1, kInt8>(w, n, data, rows, b, h, out); break;
    case 2: weighted_sum_v<2, kInt8>(w, n, data, rows, b, h, out); break;
    case 4: weighted_sum_v<4, kInt8>(w, n, data, rows, b, h, out); break;
    default: weighted_sum_v<8, kInt8>(w, n, data, rows, b, h, out); break;
  }
}

// weighted_sum_v for D of 1, 2, 4 or 8 vectors; any other D row by row (axpy_row), the same sums.
inline void weighted_sum(const float* w, int64_t n, const void* data, bool int8, const Strides& rows, int64_t b, int64_t h, int64_t D, float* out) {
  const int64_t nv = D / FV::W;
  if (D % FV::W == 0 && (nv == 1 || nv == 2 || nv == 4 || nv == 8)) {
    if (int8) {
      weighted_sum_d<true>(w, n, data, rows, b, h, D, out);
    } else {
      weighted_sum_d<false>(w, n, data, rows, b, h, D, out);
    }
    return;
  }
  std::fill(out, out + D, 0.0f);
  const size_t elem = int8 ? 1 : 4;
  for (int64_t s = 0; s < n; ++s)
    if (w[s] != 0.0f) axpy_row(w[s], static_cast<const char*>(data) + rows.at(b, h, s) * D * elem, int8, D, out);
}

// A key whose additive mask is at or below this is out of the row: its weight exp(score - best)
// would be exp(about -1e8) = 0 exactly whenever any key of the row is in, so its dot product,
// exponential and value are skipped (the same result). The loops stop after the row's last key
// in: a causal prefill of T tokens reads about half of its keys. A row with every key out is
// computed in full, as the mask says.
constexpr float kMaskedOut = -1e8f;

// Queries per call from which float keys are transposed first (scores_from_transposed).
constexpr int64_t kTransposedKeysFrom = 8;

// score[0, n) <- exp(score - best) in vector lanes (exp_v, within a few ulp of std::exp), 0 for
// the keys out (only where `holes`: keys out before the row's last key in); returns the sum.
inline float softmax_weights(float* score, int64_t n, float best, const float* mrow, bool holes) {
  const FV::V top = FV::set1(best);
  int64_t s = 0;
  for (; s + FV::W <= n; s += FV::W) FV::store(score + s, exp_v(FV::sub(FV::load(score + s), top)));
  for (; s < n; ++s) score[s] = std::exp(score[s] - best);
  if (holes)
    for (s = 0; s < n; ++s)
      if (mrow[s] <= kMaskedOut) score[s] = 0.0f;
  FV::V lanes = FV::zero();
  for (s = 0; s + FV::W <= n; s += FV::W) lanes = FV::add(lanes, FV::load(score + s));
  float total = FV::sum(lanes);
  for (; s < n; ++s) total += score[s];
  return total;
}

// Float keys of every (b, kv head), transposed to [D][ld] (ld = valid rounded up to the vector
// width, zero padded), so that a query's scores over W keys come out of D broadcast-FMAs in one
// vector, with no horizontal sum per key. Prefill (many queries per key) builds it once per call.
struct KeysT {
  int64_t ld = 0;
  std::vector<float> data;  // [B * Hkv][D][ld]
  const float* at(int64_t b, int64_t h, int64_t Hkv, int64_t D) const { return data.data() + (b * Hkv + h) * D * ld; }
};

inline KeysT transpose_keys(const KVView& keys, const AttentionShape& sh) {
  KeysT kt;
  kt.ld = (sh.valid + FV::W - 1) / FV::W * FV::W;
  kt.data.assign(static_cast<size_t>(sh.B * sh.Hkv * sh.D * kt.ld), 0.0f);
  const float* k = static_cast<const float*>(keys.data);
  for (int64_t b = 0; b < sh.B; ++b)
    for (int64_t h = 0; h < sh.Hkv; ++h) {
      float* dst = kt.data.data() + (b * sh.Hkv + h) * sh.D * kt.ld;
      for (int64_t s = 0; s < sh.valid; ++s) {
        const float* row = k + keys.rows.at(b, h, s) * sh.D;
        for (int64_t d = 0; d < sh.D; ++d) dst[d * kt.ld + s] = row[d];
      }
    }
  return kt;
}

// raw[s0 + j] = (q . key) * scale for NB vectors of keys from s0: one accumulator chain per
// vector, so NB FMAs are in flight for every broadcast query value.
template <int NB>
inline void score_block(const float* q, const float* kt, int64_t ld, int64_t D, int64_t s0, FV::V scale, float* raw) {
  constexpr int W = FV::W;
  FV::V acc[NB];
  for (int j = 0; j < NB; ++j) acc[j] = FV::zero();
  for (int64_t d = 0; d < D; ++d) {
    const FV::V qd = FV::set1(q[d]);
    const float* row = kt + d * ld + s0;
    for (int j = 0; j < NB; ++j) acc[j] = FV::fma(qd, FV::load(row + j * W), acc[j]);
  }
  for (int j = 0; j < NB; ++j) FV::store(raw + s0 + j * W, FV::mul(acc[j], scale));
}

// score[s] = (q . key_s) * scale + mrow[s] for s < n from transposed keys kt [D][ld], zero padded
// to ld >= n rounded up to W; score has room for n rounded up to W. Vectors of W keys go eight
// at a time, then the rest of them together (a lone accumulator chain waits out every FMA's
// latency: scored one vector at a time, the causal rows' last keys took a quarter of a prefill's
// attention); the last, partial vector is computed in full over the padding.
inline void scores_from_transposed(const float* q, const float* kt, int64_t ld, int64_t D, int64_t n, float scale, const float* mrow, float* score) {
  constexpr int W = FV::W, kBlocks = 8;
  const FV::V sv = FV::set1(scale);
  const int64_t vectors = (n + W - 1) / W;
  int64_t v = 0;
  for (; v + kBlocks <= vectors; v += kBlocks) score_block<kBlocks>(q, kt, ld, D, v * W, sv, score);
  switch (vectors - v) {
    case 7: score_block<7>(q, kt, ld, D, v * W, sv, score); break;
    case 6: score_block<6>(q, kt, ld, D, v * W, sv, score); break;
    case 5: score_block<5>(q, kt, ld, D, v * W, sv, score); break;
    case 4: score_block<4>(q, kt, ld, D, v * W, sv, score); break;
    case 3: score_block<3>(q, kt, ld, D, v * W, sv, score); break;
    case 2: score_block<2>(q, kt, ld, D, v * W, sv, score); break;
    case 1: score_block<1>(q, kt, ld, D, v * W, sv, score); break;
    default: break;
  }
  int64_t s = 0;
  for (; s + W <= n; s += W) FV::store(score + s, FV::add(FV::load(score + s), FV::load(mrow + s)));
  for (; s < n; ++s) score[s] += mrow[s];
}

// The largest of x[0, n) (-inf when n is 0).
inline float max_of(const float* x, int64_t n) {
  float best = -std::numeric_limits<float>::infinity();
  int64_t s = 0;
  if (n >= FV::W) {
    FV::V lanes = FV::load(x);
    for (s = FV::W; s + FV::W <= n; s += FV::W) lanes = FV::max(lanes, FV::load(x + s));
    best = FV::hmax(lanes);
  }
  for (; s < n; ++s) best = std::max(best, x[s]);
  return best;
}

// Which keys a query row reads, from its mask row of `cols` entries: keys [0, reach) (up to the
// row's last key in; all of them when no key is in), and whether keys out lie before it (holes).
struct RowReach {
  int64_t reach;
  bool holes;
};

inline RowReach row_reach(const float* mrow, int64_t cols) {
  int64_t n = cols;
  while (n > 0 && mrow[n - 1] <= kMaskedOut) --n;
  if (n == 0) return {cols, false};
  bool holes = false;
  for (int64_t s = 0; s < n; ++s) holes |= mrow[s] <= kMaskedOut;
  return {n, holes};
}

inline void attention(const float* q, const KVView& keys, const KVView& values, const float* mask, float softmax_scale, const AttentionShape& sh, float* out, const Prefix& prefix = {}) {
  const int64_t B = sh.B, Hq = sh.Hq, Hkv = sh.Hkv, T = sh.T, S = sh.S, D = sh.D, P = sh.P;
  const int64_t group = Hq / Hkv, items = B * Hq * T, cols = P + S;
  const bool k8 = keys.kind != CacheKind::kFloat, v8 = values.kind != CacheKind::kFloat;
  const size_t elem_k = k8 ? 1 : 4;
  // prefill with float keys: scores W keys at a time from transposed keys
  const KeysT kt = keys.kind == CacheKind::kFloat && T >= kTransposedKeysFrom ? transpose_keys(keys, sh) : KeysT{};
  // every head of a query position reads the same keys: found once per position
  std::vector<RowReach> reaches(static_cast<size_t>(T));
  parallel_for(T, 16, T * (P + sh.valid), [&](int64_t first, int64_t last) {
    for (int64_t t = first; t < last; ++t) reaches[t] = row_reach(mask + t * cols, P + sh.valid);
  });
  parallel_for(items, 1, 2 * items * (P + sh.valid) * D, [&](int64_t first, int64_t last) {
    // per-thread rows, kept between calls: score has room for the last vector of transposed keys
    thread_local std::vector<float> score, qs, acc, pacc;
    score.resize(static_cast<size_t>(cols + FV::W));
    for (auto* v : {&qs, &acc, &pacc}) v->resize(static_cast<size_t>(D));
    for (int64_t item = first; item < last; ++item) {
      const int64_t t = item % T, h = (item / T) % Hq, b = item / (T * Hq), kvh = h / group;
      const float* qv = q + sh.new_row(b, h, t, Hq);
      const char* kdata = static_cast<const char*>(keys.data);
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
      const int64_t n = reaches[t].reach;  // keys [0, n) are read
      const bool holes = reaches[t].holes;
      const int64_t n_prefix = std::min(P, n), n_own = n - n_prefix;
      constexpr float kOut = -std::numeric_limits<float>::infinity();
      for (int64_t s = 0; s < n_prefix; ++s)  // the float prefix, with the unscaled query
        score[s] = holes && mrow[s] <= kMaskedOut ? kOut : dot_row(qv, prefix.keys + (kvh * P + s) * D, false, D) * softmax_scale + mrow[s];
      float* own = score.data() + P;  // the cache's entries
      if (kt.ld) {
        scores_from_transposed(qs.data(), kt.at(b, kvh, Hkv, D), kt.ld, D, n_own, softmax_scale, mrow + P, own);
        for (int64_t s = 0; holes && s < n_own; ++s)
          if (mrow[P + s] <= kMaskedOut) own[s] = kOut;
      }
      for (int64_t s = 0; s < n_own && !kt.ld; ++s) {
        if (holes && mrow[P + s] <= kMaskedOut) {
          own[s] = kOut;
          continue;
        }
        const int64_t row = keys.rows.at(b, kvh, s);
        float dot = dot_row(qs.data(), kdata + row * D * elem_k, k8, D) - offset;
        if (keys.kind == CacheKind::kToken) dot *= keys.scale[row];
        own[s] = dot * softmax_scale + mrow[P + s];
      }
      const float best = max_of(score.data(), n);
      const float total = softmax_weights(score.data(), n, best, mrow, holes);
      weighted_sum(score.data(), n_prefix, prefix.values, false, Strides{0, P, 1}, 0, kvh, D, pacc.data());
      float pzero = 0.0f;  // sum of the weights that multiplied raw codes (channel zero points)
      for (int64_t s = 0; v8 && s < n_own; ++s) {
        if (own[s] == 0.0f) continue;
        if (values.kind == CacheKind::kToken) own[s] *= values.scale[values.rows.at(b, kvh, s)];
        pzero += own[s];
      }
      weighted_sum(own, n_own, values.data, v8, values.rows, b, kvh, D, acc.data());
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

// Write the T new keys (or values) x [B, Hkv, T, D] (or [B, T, Hkv, D] when sh.token_rows) into
// a token-major buffer [cap, B, Hkv, D] at rows pos .. pos + T, encoded as the cache stores
// them (the MindSpore cells' encode):
//   channel: code = clamp(rint(x / scale) + zp, -128, 127)
//   token:   s = max(max|x| / 127, 1e-8) per (b, h, t), code = clamp(rint(x / s), -127, 127)
inline void cache_write(const float* x, CacheKind kind, void* data, float* token_scale, const float* scale, const float* zero, const AttentionShape& sh, int64_t pos) {
  const int64_t B = sh.B, H = sh.Hkv, T = sh.T, D = sh.D;
  const Strides out = Strides::token_major(B, H);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < T; ++t) {
        const float* src = x + sh.new_row(b, h, t, H);
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
