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
// Cache formats (decoding folds the dequantisation into its dot products; a prefill dequantises
// the keys once, into the transposed copy its tiles read):
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

// Queries per call from which the prefill path (attention_tiles) is taken.
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

// Keys of every (b, kv head) as floats (int8 entries dequantised: channel (code - zp) * scale,
// token code * scale), transposed to [D][ld] (ld = valid rounded up to the vector width, zero
// padded), so that a query's scores over W keys come out of D broadcast-FMAs in one vector, with
// no horizontal sum per key. Prefill (many queries per key) builds it once per call.
struct KeysT {
  int64_t ld = 0;
  std::vector<float> data;  // [B * Hkv][D][ld]
  const float* at(int64_t b, int64_t h, int64_t Hkv, int64_t D) const { return data.data() + (b * Hkv + h) * D * ld; }
};

inline KeysT transpose_keys(const KVView& keys, const AttentionShape& sh) {
  KeysT kt;
  const int64_t D = sh.D;
  kt.ld = (sh.valid + FV::W - 1) / FV::W * FV::W;
  kt.data.assign(static_cast<size_t>(sh.B * sh.Hkv * D * kt.ld), 0.0f);
  for (int64_t b = 0; b < sh.B; ++b)
    for (int64_t h = 0; h < sh.Hkv; ++h) {
      float* dst = kt.data.data() + (b * sh.Hkv + h) * D * kt.ld;
      for (int64_t s = 0; s < sh.valid; ++s) {
        const int64_t row = keys.rows.at(b, h, s);
        if (keys.kind == CacheKind::kFloat) {
          const float* key = static_cast<const float*>(keys.data) + row * D;
          for (int64_t d = 0; d < D; ++d) dst[d * kt.ld + s] = key[d];
          continue;
        }
        const int8_t* code = static_cast<const int8_t*>(keys.data) + row * D;
        if (keys.kind == CacheKind::kChannel) {
          for (int64_t d = 0; d < D; ++d) dst[d * kt.ld + s] = (static_cast<float>(code[d]) - keys.zero[h * D + d]) * keys.scale[h * D + d];
        } else {
          for (int64_t d = 0; d < D; ++d) dst[d * kt.ld + s] = static_cast<float>(code[d]) * keys.scale[row];
        }
      }
    }
  return kt;
}

// The prefill path (T >= kTransposedKeysFrom, D a multiple of the vector width)
// works on tiles of kTileRows query rows of one kv head: the heads of its group at consecutive
// positions, which read the same keys. Each loaded key or value vector then serves every row of
// the tile (one query row at a time, the loads and a single accumulator chain per vector left
// the FMA units mostly idle). Rows x kTileVectors accumulators, the loaded vectors and a
// broadcast fit AVX-512's 32 registers; AVX2 and the portable level have 16.
#if defined(GSK_LEVEL_AVX512VNNI)
constexpr int kTileRows = 6;
#else
constexpr int kTileRows = 2;
#endif
constexpr int kTileVectors = 4;  // the switches below cover 1 .. 4

// raw[r][s0 + j W] = (q_r . key) * scale, r < kTileRows, for NB vectors of keys from s0 of the
// transposed keys kt [D][ld].
template <int NB>
inline void score_tile(const float* const* q, const float* kt, int64_t ld, int64_t D, int64_t s0, FV::V scale, float* const* raw) {
  constexpr int W = FV::W, R = kTileRows;
  FV::V acc[R][NB];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < NB; ++j) acc[r][j] = FV::zero();
  for (int64_t d = 0; d < D; ++d) {
    FV::V key[NB];
    for (int j = 0; j < NB; ++j) key[j] = FV::load(kt + d * ld + s0 + j * W);
    for (int r = 0; r < R; ++r) {
      const FV::V qd = FV::set1(q[r][d]);
      for (int j = 0; j < NB; ++j) acc[r][j] = FV::fma(qd, key[j], acc[r][j]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < NB; ++j) FV::store(raw[r] + s0 + j * W, FV::mul(acc[r][j], scale));
}

// raw[r][s] = (q_r . key_s) * scale for s < n rounded up to W (the last vector over kt's zero
// padding), every row of the tile.
inline void score_tile_rows(const float* const* q, const float* kt, int64_t ld, int64_t D, int64_t n, float scale, float* const* raw) {
  constexpr int W = FV::W, NB = kTileVectors;
  const FV::V sv = FV::set1(scale);
  const int64_t vectors = (n + W - 1) / W;
  int64_t v = 0;
  for (; v + NB <= vectors; v += NB) score_tile<NB>(q, kt, ld, D, v * W, sv, raw);
  switch (vectors - v) {
    case 3: score_tile<3>(q, kt, ld, D, v * W, sv, raw); break;
    case 2: score_tile<2>(q, kt, ld, D, v * W, sv, raw); break;
    case 1: score_tile<1>(q, kt, ld, D, v * W, sv, raw); break;
    default: break;
  }
}

// out[r][c W .. (c + CV) W) = sum over s < n of w[r][s] * value_s's vectors c .. c + CV (float or
// int8 rows of D at data + rows.at(b, h, s) * D), every row of the tile, each lane summed in the
// order of s.
template <int CV, bool kInt8>
inline void value_tile(const float* const* w, int64_t n, const void* data, const Strides& rows, int64_t b, int64_t h, int64_t D, int64_t c, float* const* out) {
  constexpr int W = FV::W, R = kTileRows;
  FV::V acc[R][CV];
  for (int r = 0; r < R; ++r)
    for (int i = 0; i < CV; ++i) acc[r][i] = FV::zero();
  for (int64_t s = 0; s < n; ++s) {
    const int64_t at = rows.at(b, h, s) * D + c * W;
    FV::V value[CV];
    for (int i = 0; i < CV; ++i) {
      if constexpr (kInt8) {
        value[i] = FV::from_i8(static_cast<const int8_t*>(data) + at + i * W);
      } else {
        value[i] = FV::load(static_cast<const float*>(data) + at + i * W);
      }
    }
    for (int r = 0; r < R; ++r) {
      const FV::V p = FV::set1(w[r][s]);
      for (int i = 0; i < CV; ++i) acc[r][i] = FV::fma(p, value[i], acc[r][i]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int i = 0; i < CV; ++i) FV::store(out[r] + (c + i) * W, acc[r][i]);
}

template <bool kInt8>
inline void value_tile_rows(const float* const* w, int64_t n, const void* data, const Strides& rows, int64_t b, int64_t h, int64_t D, float* const* out) {
  const int64_t nv = D / FV::W;
  for (int64_t c = 0; c < nv; c += kTileVectors) {
    switch (std::min<int64_t>(kTileVectors, nv - c)) {
      case 4: value_tile<4, kInt8>(w, n, data, rows, b, h, D, c, out); break;
      case 3: value_tile<3, kInt8>(w, n, data, rows, b, h, D, c, out); break;
      case 2: value_tile<2, kInt8>(w, n, data, rows, b, h, D, c, out); break;
      default: value_tile<1, kInt8>(w, n, data, rows, b, h, D, c, out); break;
    }
  }
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
  int64_t own(int64_t P) const { return reach - std::min(P, reach); }  // of them, the cache's own (after P prefix keys)
};

inline RowReach row_reach(const float* mrow, int64_t cols) {
  int64_t n = cols;
  while (n > 0 && mrow[n - 1] <= kMaskedOut) --n;
  if (n == 0) return {cols, false};
  bool holes = false;
  for (int64_t s = 0; s < n; ++s) holes |= mrow[s] <= kMaskedOut;
  return {n, holes};
}

// One query row's softmax weights, once the scores of the cache's own keys (mask added) are in
// own = score + P: scores the float prefix (with the unscaled query qv), drops the keys out
// (holes), exponentiates, sums the prefix's values into pacc, and turns the own keys' weights
// into what multiplies their stored rows (times the value's token scale for a per-token cache).
// Returns the weights' total and, for int8 values, the sum of the own keys' weights (which the
// channel zero points multiply).
struct RowWeights {
  float total, pzero;
};

inline RowWeights row_weights(const float* qv, const float* mrow, RowReach reach, const Prefix& prefix, const KVView& values, const AttentionShape& sh, int64_t b, int64_t kvh, float softmax_scale, float* score, float* pacc) {
  const int64_t P = sh.P, D = sh.D, n = reach.reach, n_prefix = std::min(P, n), n_own = n - n_prefix;
  constexpr float kOut = -std::numeric_limits<float>::infinity();
  for (int64_t s = 0; s < n_prefix; ++s)
    score[s] = reach.holes && mrow[s] <= kMaskedOut ? kOut : dot_row(qv, prefix.keys + (kvh * P + s) * D, false, D) * softmax_scale + mrow[s];
  float* own = score + P;
  for (int64_t s = 0; reach.holes && s < n_own; ++s)
    if (mrow[P + s] <= kMaskedOut) own[s] = kOut;
  const float total = softmax_weights(score, n, max_of(score, n), mrow, reach.holes);
  weighted_sum(score, n_prefix, prefix.values, false, Strides{0, P, 1}, 0, kvh, D, pacc);
  float pzero = 0.0f;
  for (int64_t s = 0; values.kind != CacheKind::kFloat && s < n_own; ++s) {
    if (own[s] == 0.0f) continue;
    if (values.kind == CacheKind::kToken) own[s] *= values.scale[values.rows.at(b, kvh, s)];
    pzero += own[s];
  }
  return {total, pzero};
}

// o[0, D) = the row's attention output from its summed own values acc and prefix values pacc.
inline void row_output(const float* acc, const float* pacc, RowWeights sums, const KVView& values, int64_t kvh, int64_t D, float* o) {
  const float inv = 1.0f / sums.total;
  if (values.kind == CacheKind::kChannel) {
    for (int64_t d = 0; d < D; ++d) o[d] = ((acc[d] - sums.pzero * values.zero[kvh * D + d]) * values.scale[kvh * D + d] + pacc[d]) * inv;
  } else {
    for (int64_t d = 0; d < D; ++d) o[d] = (acc[d] + pacc[d]) * inv;
  }
}

// The prefill path: tiles of kTileRows query rows of one kv head (see kTileRows).
inline void attention_tiles(const float* q, const KVView& keys, const KVView& values, const float* mask, float softmax_scale, const AttentionShape& sh, float* out, const Prefix& prefix,
                            const std::vector<RowReach>& reaches) {
  const int64_t B = sh.B, Hq = sh.Hq, Hkv = sh.Hkv, T = sh.T, S = sh.S, D = sh.D, P = sh.P;
  const int64_t group = Hq / Hkv, cols = P + S, rows_per_head = group * T, tiles = (rows_per_head + kTileRows - 1) / kTileRows;
  const bool v8 = values.kind != CacheKind::kFloat;
  const KeysT kt = transpose_keys(keys, sh);
  parallel_for(B * Hkv * tiles, 1, 2 * B * Hq * T * (P + sh.valid) * D, [&](int64_t first, int64_t last) {
    // per-thread rows, kept between calls; a score row has room for the last vector of keys
    thread_local std::vector<float> score, acc, pacc;
    const int64_t ldscore = cols + FV::W;
    score.resize(static_cast<size_t>(kTileRows * ldscore));
    acc.resize(static_cast<size_t>(kTileRows * D));
    pacc.resize(static_cast<size_t>(kTileRows * D));
    for (int64_t item = first; item < last; ++item) {
      const int64_t tile = item % tiles, kvh = (item / tiles) % Hkv, b = item / (tiles * Hkv);
      const int64_t i0 = tile * kTileRows, rows = std::min<int64_t>(kTileRows, rows_per_head - i0);
      // row r: head kvh * group + (i0 + r) % group at position (i0 + r) / group; rows past the
      // last repeat the tile's first, their results unused
      const float* qr[kTileRows];
      float *own[kTileRows], *accr[kTileRows];
      int64_t n_own_max = 0;
      for (int r = 0; r < kTileRows; ++r) {
        const int64_t i = i0 + (r < rows ? r : 0), t = i / group, h = kvh * group + i % group;
        qr[r] = q + sh.new_row(b, h, t, Hq);
        own[r] = score.data() + r * ldscore + P;
        accr[r] = acc.data() + r * D;
        n_own_max = std::max(n_own_max, reaches[t].own(P));
      }
      score_tile_rows(qr, kt.at(b, kvh, Hkv, D), kt.ld, D, n_own_max, softmax_scale, own);
      RowWeights sums[kTileRows];
      for (int r = 0; r < rows; ++r) {
        const int64_t t = (i0 + r) / group;
        const RowReach reach = reaches[t];
        const int64_t n_own = reach.own(P);
        const float* mrow = mask + t * cols;
        for (int64_t s = 0; s < n_own; ++s) own[r][s] += mrow[P + s];
        sums[r] = row_weights(qr[r], mrow, reach, prefix, values, sh, b, kvh, softmax_scale, own[r] - P, pacc.data() + r * D);
        std::fill(own[r] + n_own, own[r] + n_own_max, 0.0f);  // keys past the row's reach weigh nothing
      }
      if (v8) {
        value_tile_rows<true>(own, n_own_max, values.data, values.rows, b, kvh, D, accr);
      } else {
        value_tile_rows<false>(own, n_own_max, values.data, values.rows, b, kvh, D, accr);
      }
      for (int r = 0; r < rows; ++r) {
        const int64_t i = i0 + r, t = i / group, h = kvh * group + i % group;
        row_output(accr[r], pacc.data() + r * D, sums[r], values, kvh, D, out + ((b * T + t) * Hq + h) * D);
      }
    }
  });
}

inline void attention(const float* q, const KVView& keys, const KVView& values, const float* mask, float softmax_scale, const AttentionShape& sh, float* out, const Prefix& prefix = {}) {
  const int64_t B = sh.B, Hq = sh.Hq, Hkv = sh.Hkv, T = sh.T, S = sh.S, D = sh.D, P = sh.P;
  const int64_t group = Hq / Hkv, items = B * Hq * T, cols = P + S;
  // every head of a query position reads the same keys: found once per position
  std::vector<RowReach> reaches(static_cast<size_t>(T));
  parallel_for(T, 16, T * (P + sh.valid), [&](int64_t first, int64_t last) {
    for (int64_t t = first; t < last; ++t) reaches[t] = row_reach(mask + t * cols, P + sh.valid);
  });
  if (T >= kTransposedKeysFrom && D % FV::W == 0) {
    attention_tiles(q, keys, values, mask, softmax_scale, sh, out, prefix, reaches);
    return;
  }
  const bool k8 = keys.kind != CacheKind::kFloat, v8 = values.kind != CacheKind::kFloat;
  const size_t elem_k = k8 ? 1 : 4;
  parallel_for(items, 1, 2 * items * (P + sh.valid) * D, [&](int64_t first, int64_t last) {
    thread_local std::vector<float> score, qs, acc, pacc;  // per-thread rows, kept between calls
    score.resize(static_cast<size_t>(cols));
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
      const RowReach reach = reaches[t];
      const int64_t n_own = reach.own(P);
      float* own = score.data() + P;  // the cache's entries
      for (int64_t s = 0; s < n_own; ++s) {
        if (reach.holes && mrow[P + s] <= kMaskedOut) continue;  // row_weights drops it
        const int64_t row = keys.rows.at(b, kvh, s);
        float dot = dot_row(qs.data(), kdata + row * D * elem_k, k8, D) - offset;
        if (keys.kind == CacheKind::kToken) dot *= keys.scale[row];
        own[s] = dot * softmax_scale + mrow[P + s];
      }
      const RowWeights sums = row_weights(qv, mrow, reach, prefix, values, sh, b, kvh, softmax_scale, score.data(), pacc.data());
      weighted_sum(own, n_own, values.data, v8, values.rows, b, kvh, D, acc.data());
      row_output(acc.data(), pacc.data(), sums, values, kvh, D, out + ((b * T + t) * Hq + h) * D);
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
