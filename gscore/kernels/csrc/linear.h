// Quantized linear layers: y[M, N] = x[M, K] times a low-bit weight [N, K] (transpose_b layout).
//
// Weight-only (float activations):
//   w8: int8 codes q, per output channel scale s and zp_neg z:  w = (q + z) * s
//   w4: int4 codes packed two per byte along K (code 2b in the low nibble of byte b), per group
//       of G input channels scale s[n, g] and zp_neg z[n, g]; the last group may be shorter.
// Integer (int8 activations, int8 weights per output channel):
//   a8w8: x is quantized inside the kernel, statically (one scale and zero point) or dynamically
//       (symmetric, one scale per row), multiplied exactly in int32, rescaled once at the end.
//   a8w4: x quantized the same way, its codes (minus the zero point, as floats: exact) times the
//       int4 weight of w4, then the row's activation scale: the MindSpore path's order (a
//       scale per weight group leaves no single integer sum to rescale).
//
// Two shapes of work: decode (M <= kGemvRows rows) streams each weight row once straight from
// its int8 storage; prefill (more rows) converts panels of the weight into a packed buffer that
// a register-tiled micro-kernel reuses across all rows. Both split the output channels across
// the threads of pool.h.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <type_traits>
#include <vector>

#include "amx.h"
#include "pool.h"
#include "simd.h"

namespace gsk {

constexpr int64_t kGemvRows = 8;  // decode shapes (M = 1..8) take the GEMV kernels

// fn(std::integral_constant<int, M>{}) for M = 1 .. kGemvRows: the GEMVs take their row count as
// a template parameter (their accumulators are arrays sized by it).
template <class F>
inline void with_gemv_rows(int64_t M, F&& fn) {
  static_assert(kGemvRows == 8, "one case per GEMV row count");
  switch (M) {
    case 1: fn(std::integral_constant<int, 1>{}); break;
    case 2: fn(std::integral_constant<int, 2>{}); break;
    case 3: fn(std::integral_constant<int, 3>{}); break;
    case 4: fn(std::integral_constant<int, 4>{}); break;
    case 5: fn(std::integral_constant<int, 5>{}); break;
    case 6: fn(std::integral_constant<int, 6>{}); break;
    case 7: fn(std::integral_constant<int, 7>{}); break;
    default: fn(std::integral_constant<int, 8>{}); break;
  }
}

constexpr int64_t kGemvGrain = 64;  // weight rows per GEMV chunk

// The rows of an [N, K] weight against MB rows of x, in blocks of NB rows (4, 2 or 1 as MB
// grows, so NB * MB accumulators stay in registers): block(nb, n0) with nb a
// std::integral_constant, NB for the whole blocks, shared out in chunks of about `grain` rows,
// then 1 for each row left.
template <int MB, class Block>
void gemv_blocks(int64_t N, int64_t K, int64_t grain, const Block& block) {
  constexpr int NB = MB <= 2 ? 4 : (MB <= 4 ? 2 : 1);
  const int64_t blocks = N / NB;
  parallel_for(blocks, grain / NB, MB * N * K, [&](int64_t first, int64_t last) {
    for (int64_t b = first; b < last; ++b) block(std::integral_constant<int, NB>{}, b * NB);
  });
  for (int64_t n = blocks * NB; n < N; ++n) block(std::integral_constant<int, 1>{}, n);
}
// Int4 weight rows per GEMV chunk. Unpacking nibbles makes the int4 GEMV compute-bound where
// int8 streams at the memory's pace, so how evenly the chunks share out between threads counts
// more: SmolLM2's k/v projections (192 rows) were three 64-row chunks, two for one thread.
// Chunks of 8, 16, 32 and 64 rows raced on SmolLM2's 210 layers: 8 was fastest; a whole A16W4
// decode step against 64-row chunks: bench/results/decode_grain.md.
constexpr int64_t kW4GemvGrain = 8;

// How many GEMV blocks ahead a block prefetches its weight rows (prefetch_ahead below):
// GSCORE_KERNEL_PREFETCH if set, else by CPU vendor. Measured streaming SmolLM2's int8 layer
// weights at M = 1 (2 threads): on an AMD EPYC (AVX2) 4 blocks raised the w8 rate by ~25 % over
// none (8 to 10.5 GB/s); on an Intel Xeon with AVX-512 VNNI and AMX none was best (w8 12-13
// against 10.5 GB/s at 4, dynamic A8W8 15-17 against 9-11; bench/results/gemv_prefetch.md).
constexpr int64_t kIntelPrefetchBlocks = 0;

inline int64_t initial_prefetch_blocks() {
  if (const char* env = std::getenv("GSCORE_KERNEL_PREFETCH")) return std::max<long long>(0, std::atoll(env));
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();  // this runs while the library loads, before any constructor did it
  if (__builtin_cpu_is("intel")) return kIntelPrefetchBlocks;
#endif
  return 4;
}
inline const int64_t prefetch_blocks = initial_prefetch_blocks();

// While a GEMV block reads byte `byte` of its rows [n0, n0 + NB) of a [total, row_bytes]
// weight, asks for the same cache line of the rows prefetch_blocks blocks ahead (once per
// line; rows past the end are skipped; nothing at 0): the hardware prefetcher alone keeps too
// few requests in flight for the several row streams a block reads at once. Prefetching whole
// rows at the block's start gained less.
template <int NB>
inline void prefetch_ahead(const int8_t* q, int64_t row_bytes, int64_t n0, int64_t total, int64_t byte) {
  if (byte % 64 || prefetch_blocks == 0) return;
  const int64_t first = n0 + prefetch_blocks * NB;
  for (int64_t n = first; n < first + NB && n < total; ++n) __builtin_prefetch(q + n * row_bytes + byte, 0, 0);
}

inline int8_t int4_code(const int8_t* row, int64_t k) {
  int8_t b = row[k >> 1];
  return (k & 1) ? static_cast<int8_t>(b >> 4) : static_cast<int8_t>(static_cast<int8_t>(static_cast<uint8_t>(b) << 4) >> 4);
}

// ---------------------------------------------------------------------------------------------
// Float GEMM for prefill: C[M, N] (+)= A[M, K] Bp, where Bp holds packed panels of NR columns.

constexpr int kMR = 6;
constexpr int kNR = 2 * FV::W;
// K is split into as few equal blocks of at most kKC as cover it (as the int8 GEMM does): fixed
// 256-wide blocks gave SmolLM2's K = 576 three passes over each C tile, the last only 64 deep,
// and a 6 x 768 packed A tile still sits in L1 next to the weight panel's stream.
constexpr int64_t kKC = 768;
constexpr int64_t kMC = 96;

// C[MR rows][nr <= kNR] (+)= A B over kc: A packed [kc][MR] (ap), B packed [kc][kNR] (bp).
template <int MR>
inline void micro_f32(int64_t kc, const float* ap, const float* bp, float* c, int64_t ldc, int nr, bool accumulate) {
  using V = FV::V;
  constexpr int W = FV::W;
  V c0[MR], c1[MR];
  GSK_UNROLL
  for (int i = 0; i < MR; ++i) c0[i] = c1[i] = FV::zero();
  for (int64_t kk = 0; kk < kc; ++kk) {
    V b0 = FV::load(bp + kk * kNR), b1 = FV::load(bp + kk * kNR + W);
    GSK_UNROLL
    for (int i = 0; i < MR; ++i) {
      V av = FV::set1(ap[kk * MR + i]);
      c0[i] = FV::fma(av, b0, c0[i]);
      c1[i] = FV::fma(av, b1, c1[i]);
    }
  }
  GSK_UNROLL
  for (int i = 0; i < MR; ++i) {
    float* row = c + i * ldc;
    if (nr == kNR) {
      if (accumulate) {
        c0[i] = FV::add(c0[i], FV::load(row));
        c1[i] = FV::add(c1[i], FV::load(row + W));
      }
      FV::store(row, c0[i]);
      FV::store(row + W, c1[i]);
    } else {
      float tmp[kNR];
      FV::store(tmp, c0[i]);
      FV::store(tmp + W, c1[i]);
      for (int j = 0; j < nr; ++j) row[j] = accumulate ? row[j] + tmp[j] : tmp[j];
    }
  }
}

inline void micro_f32_rows(int mr, int64_t kc, const float* ap, const float* bp, float* c, int64_t ldc, int nr, bool accumulate) {
  switch (mr) {
    case 6: micro_f32<6>(kc, ap, bp, c, ldc, nr, accumulate); break;
    case 5: micro_f32<5>(kc, ap, bp, c, ldc, nr, accumulate); break;
    case 4: micro_f32<4>(kc, ap, bp, c, ldc, nr, accumulate); break;
    case 3: micro_f32<3>(kc, ap, bp, c, ldc, nr, accumulate); break;
    case 2: micro_f32<2>(kc, ap, bp, c, ldc, nr, accumulate); break;
    default: micro_f32<1>(kc, ap, bp, c, ldc, nr, accumulate); break;
  }
}

// Rows m0 .. m1 of A, columns k0 .. k0 + kc, as consecutive panels of kMR rows, each [kc][mr].
inline void pack_rows(const float* a, int64_t K, int64_t m0, int64_t m1, int64_t k0, int64_t kc, float* ap) {
  for (int64_t m = m0; m < m1; m += kMR) {
    const int64_t mr = std::min<int64_t>(kMR, m1 - m);
    float* panel = ap + (m - m0) * kc;
    for (int64_t kk = 0; kk < kc; ++kk)
      for (int64_t i = 0; i < mr; ++i) panel[kk * mr + i] = a[(m + i) * K + k0 + kk];
  }
}

// A grow-only buffer per calling thread (slot tells buffers of one call apart): prefill packs
// the whole weight once per call, and reusing the memory keeps page faults out of every call.
template <class T>
T* scratch(size_t n, int slot) {
  thread_local std::vector<T> buffers[2];
  if (buffers[slot].size() < n) buffers[slot].resize(n);
  return buffers[slot].data();
}

// Work is split into chunks of (a block of rows) x (a block of column panels). Row blocks
// come first: a chunk packs its rows of A once per block of K and reuses them across all its
// panels. Columns are split only as far as needed to give every thread two chunks.
// Row blocks hold kMC rows; with row_step > 0 as many blocks share the rows' micro-tiles
// (row_step rows each) out evenly: 512 rows as 96-row blocks left one of two threads idle
// during the last, 32-row block. (More, smaller blocks would balance threads too, but each
// row block streams every weight panel once: 200 rows of a 4096 x 4096 layer in four blocks
// instead of three took 1.15x the time.)
static_assert(kMC % kMR == 0, "row blocks hold whole float micro-tiles");
struct GemmChunks {
  int64_t M, step, tiles, panels, row_blocks, col_blocks, per_col_block;
  GemmChunks(int64_t M_, int64_t N, int64_t nr, int64_t row_step = 0)
      : M(M_), step(row_step > 0 ? row_step : kMC), tiles((M_ + step - 1) / step), panels((N + nr - 1) / nr) {
    row_blocks = (tiles + kMC / step - 1) / (kMC / step);
    const int64_t wanted = 2 * Pool::instance().threads();
    col_blocks = std::min(panels, std::max<int64_t>(1, (wanted + row_blocks - 1) / row_blocks));
    per_col_block = (panels + col_blocks - 1) / col_blocks;
    col_blocks = (panels + per_col_block - 1) / per_col_block;
  }
  int64_t count() const { return col_blocks * row_blocks; }
  int64_t first_panel(int64_t chunk) const { return (chunk % col_blocks) * per_col_block; }
  int64_t end_panel(int64_t chunk) const { return std::min(first_panel(chunk) + per_col_block, panels); }
  int64_t first_row(int64_t chunk) const { return std::min(M, step * ((chunk / col_blocks) * tiles / row_blocks)); }
  int64_t end_row(int64_t chunk) const { return std::min(M, step * ((chunk / col_blocks + 1) * tiles / row_blocks)); }
};

// A weight whose packed panels exceed this many bytes does not stay in the cache between the
// row blocks that each stream all of it: SmolLM2's output head (49152 x 576) packs to 113 MB,
// read back from memory once per 96-row block. Such weights take gemm_f32_streamed instead.
constexpr int64_t kStreamedPackBytes = int64_t{8} << 20;
constexpr int64_t kStreamedPanels = 4;  // at most this many weight panels per streamed chunk (300 KB at K = 576, AVX-512)

// For weights too large to pack whole: A is packed once (all rows, per block of K; it is the
// small operand), then every chunk packs kStreamedPanels weight panels into its own buffer
// and runs all rows against them while they sit in L2, so each weight is read and packed once.
template <class Pack, class Finish>
void gemm_f32_streamed(int64_t M, int64_t N, int64_t K, const float* a, float* c, const Pack& pack, const Finish& finish) {
  const int64_t kblocks = (K + kKC - 1) / kKC, kstep = (K + kblocks - 1) / kblocks;
  const int64_t tiles = (M + kMR - 1) / kMR, panels = (N + kNR - 1) / kNR;
  float* ap = scratch<float>(static_cast<size_t>(M * K), 1);  // block at k0: M * kc floats from ap + M * k0
  parallel_for(tiles, 8, M * K * 8, [&](int64_t first, int64_t last) {
    const int64_t m0 = first * kMR, m1 = std::min(M, last * kMR);
    for (int64_t k0 = 0; k0 < K; k0 += kstep) pack_rows(a, K, m0, m1, k0, std::min(kstep, K - k0), ap + M * k0 + m0 * std::min(kstep, K - k0));
  });
  // At least 8 groups per thread, so that no thread is left with one group more than the others
  // for long (a 896-wide weight in 4-panel groups was 7 groups: 4 for one thread, 3 for the other).
  const int64_t per_group = std::clamp<int64_t>(panels / (8 * Pool::instance().threads()), 1, kStreamedPanels);
  const int64_t groups = (panels + per_group - 1) / per_group;
  parallel_for(groups, 1, M * N * K, [&](int64_t first, int64_t last) {
    float* bp = scratch<float>(static_cast<size_t>(per_group * K * kNR), 0);
    for (int64_t g = first; g < last; ++g) {
      const int64_t p0 = g * per_group, p1 = std::min(panels, p0 + per_group);
      for (int64_t p = p0; p < p1; ++p) pack(p * kNR, bp + (p - p0) * K * kNR);
      for (int64_t k0 = 0; k0 < K; k0 += kstep) {
        const int64_t kc = std::min(kstep, K - k0);
        for (int64_t mb = 0; mb < M; mb += kMC) {
          const int64_t mb1 = std::min(M, mb + kMC);
          for (int64_t p = p0; p < p1; ++p) {
            const int nr = static_cast<int>(std::min<int64_t>(kNR, N - p * kNR));
            for (int64_t m = mb; m < mb1; m += kMR) {
              const int mr = static_cast<int>(std::min<int64_t>(kMR, mb1 - m));
              micro_f32_rows(mr, kc, ap + M * k0 + m * kc, bp + ((p - p0) * K + k0) * kNR, c + m * N + p * kNR, N, nr, k0 > 0);
            }
          }
        }
      }
      finish(0, M, p0 * kNR, std::min(p1 * kNR, N));
    }
  });
}

// pack(n0, bp): fill bp[K][kNR] with weight columns n0 .. n0 + kNR (0 past N), all of K.
// finish(m0, m1, n0, n1): runs once per chunk after all of K, e.g. to rescale its outputs.
template <class Pack, class Finish>
void gemm_f32(int64_t M, int64_t N, int64_t K, const float* a, float* c, const Pack& pack, const Finish& finish) {
  if ((N + kNR - 1) / kNR * K * kNR * static_cast<int64_t>(sizeof(float)) > kStreamedPackBytes) {
    gemm_f32_streamed(M, N, K, a, c, pack, finish);
    return;
  }
  const GemmChunks chunks(M, N, kNR, kMR);
  float* bp = scratch<float>(static_cast<size_t>(chunks.panels * K * kNR), 0);
  parallel_for(chunks.panels, 2, N * K * 8, [&](int64_t first, int64_t last) {
    for (int64_t p = first; p < last; ++p) pack(p * kNR, bp + p * K * kNR);
  });
  const int64_t kblocks = (K + kKC - 1) / kKC, kstep = (K + kblocks - 1) / kblocks;
  parallel_for(chunks.count(), 1, M * N * K, [&](int64_t first, int64_t last) {
    float* ap = scratch<float>(static_cast<size_t>(kMC * kstep), 1);
    for (int64_t chunk = first; chunk < last; ++chunk) {
      const int64_t p0 = chunks.first_panel(chunk), p1 = chunks.end_panel(chunk);
      const int64_t m0 = chunks.first_row(chunk), m1 = chunks.end_row(chunk);
      for (int64_t k0 = 0; k0 < K; k0 += kstep) {
        const int64_t kc = std::min(kstep, K - k0);
        pack_rows(a, K, m0, m1, k0, kc, ap);
        for (int64_t p = p0; p < p1; ++p) {
          const int nr = static_cast<int>(std::min<int64_t>(kNR, N - p * kNR));
          for (int64_t m = m0; m < m1; m += kMR) {
            const int mr = static_cast<int>(std::min<int64_t>(kMR, m1 - m));
            micro_f32_rows(mr, kc, ap + (m - m0) * kc, bp + (p * K + k0) * kNR, c + m * N + p * kNR, N, nr, k0 > 0);
          }
        }
      }
      finish(m0, m1, p0 * kNR, std::min(p1 * kNR, N));
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Weight panels for the prefill GEMM: bp[k * kNR + j] for the panel's rows j, all of K, built
// on every call. Stored one float at a time (a store per weight, kNR floats apart) this took
// about 1.3 ns a weight on the AVX2 EPYC, a tenth of a 512-row prefill's linear time. At the
// AVX2 and AVX-512 levels, blocks of 16 rows x 16 k values go through a byte transpose and
// leave as whole 8-float vectors (AVX2 instructions, which every AVX-512 CPU runs).

constexpr int kPackRows = 16;  // rows (and k values) per vector block
static_assert(kNR % kPackRows == 0, "panels hold whole 16-row blocks");

#if defined(GSK_LEVEL_AVX2) || defined(GSK_LEVEL_AVX512VNNI)

// t[k] = byte k of every r[0..15], in four interleaving stages (bytes, pairs, quads, octets).
inline void transpose_bytes_16x16(const __m128i r[16], __m128i t[16]) {
  __m128i a[16], b[16], c[16];
  for (int i = 0; i < 8; ++i) {  // a[h * 8 + i]: rows 2i, 2i+1 at k = 8h .. 8h+7
    a[i] = _mm_unpacklo_epi8(r[2 * i], r[2 * i + 1]);
    a[i + 8] = _mm_unpackhi_epi8(r[2 * i], r[2 * i + 1]);
  }
  for (int h = 0; h < 2; ++h)
    for (int m = 0; m < 4; ++m) {  // b[q * 4 + m]: rows 4m .. 4m+3 at k = 4q .. 4q+3
      b[h * 8 + m] = _mm_unpacklo_epi16(a[h * 8 + 2 * m], a[h * 8 + 2 * m + 1]);
      b[h * 8 + 4 + m] = _mm_unpackhi_epi16(a[h * 8 + 2 * m], a[h * 8 + 2 * m + 1]);
    }
  for (int q = 0; q < 4; ++q)
    for (int p = 0; p < 2; ++p) {  // c[e * 2 + p]: rows 8p .. 8p+7 at k = 2e, 2e+1
      c[q * 4 + p] = _mm_unpacklo_epi32(b[q * 4 + 2 * p], b[q * 4 + 2 * p + 1]);
      c[q * 4 + 2 + p] = _mm_unpackhi_epi32(b[q * 4 + 2 * p], b[q * 4 + 2 * p + 1]);
    }
  for (int e = 0; e < 8; ++e) {
    t[2 * e] = _mm_unpacklo_epi64(c[2 * e], c[2 * e + 1]);
    t[2 * e + 1] = _mm_unpackhi_epi64(c[2 * e], c[2 * e + 1]);
  }
}

// dst[k * kNR + j] = (float(t[k] byte j) + z[j]) (* s[j] when Scaled), k, j < 16: the scalar
// pack's arithmetic, operation for operation.
template <bool Scaled>
inline void store_panel_block(const __m128i t[16], const float* z, const float* s, float* dst) {
  const __m256 z0 = _mm256_loadu_ps(z), z1 = _mm256_loadu_ps(z + 8);
  const __m256 s0 = Scaled ? _mm256_loadu_ps(s) : z0, s1 = Scaled ? _mm256_loadu_ps(s + 8) : z1;
  for (int k = 0; k < 16; ++k) {
    __m256 lo = _mm256_add_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(t[k])), z0);
    __m256 hi = _mm256_add_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(t[k], 8))), z1);
    if (Scaled) {
      lo = _mm256_mul_ps(lo, s0);
      hi = _mm256_mul_ps(hi, s1);
    }
    _mm256_storeu_ps(dst + k * kNR, lo);
    _mm256_storeu_ps(dst + k * kNR + 8, hi);
  }
}

// Rows n .. n+15 of an int8 weight [N, K] into their panel columns (dst = bp + j0) for
// k < the returned multiple of 16; the caller packs the rest.
inline int64_t pack_int8_rows(const int8_t* q, int64_t K, const float* zp_neg, int64_t n, float* dst) {
  alignas(32) float z[kPackRows];
  for (int j = 0; j < kPackRows; ++j) z[j] = zp_neg[n + j];
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    __m128i r[16], t[16];
    for (int j = 0; j < 16; ++j) r[j] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + (n + j) * K + k));
    transpose_bytes_16x16(r, t);
    store_panel_block<false>(t, z, nullptr, dst + k * kNR);
  }
  return k;
}

// 8 packed bytes -> their 16 int4 codes as signed bytes, in k order (low nibble first).
inline __m128i int4_bytes(const int8_t* p) {
  const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)), low = _mm_set1_epi8(0x0F), eight = _mm_set1_epi8(8);
  const __m128i v = _mm_unpacklo_epi8(_mm_and_si128(b, low), _mm_and_si128(_mm_srli_epi16(b, 4), low));
  return _mm_sub_epi8(_mm_xor_si128(v, eight), eight);  // nibble n -> n - 16 when n >= 8
}

// Rows n .. n+15 of group g of a packed int4 weight, k from the (even) group start g0 to the
// returned end (16 at a time, within g1); the caller packs the rest.
inline int64_t pack_int4_rows(const int8_t* q, int64_t half, const float* scale, const float* zp_neg, int64_t groups, int64_t n, int64_t g,
                              int64_t g0, int64_t g1, float* dst) {
  alignas(32) float z[kPackRows], s[kPackRows];
  for (int j = 0; j < kPackRows; ++j) {
    z[j] = zp_neg[(n + j) * groups + g];
    s[j] = scale[(n + j) * groups + g];
  }
  int64_t k = g0;
  for (; k + 16 <= g1; k += 16) {
    __m128i r[16], t[16];
    for (int j = 0; j < 16; ++j) r[j] = int4_bytes(q + (n + j) * half + k / 2);
    transpose_bytes_16x16(r, t);
    store_panel_block<true>(t, z, s, dst + k * kNR);
  }
  return k;
}

// Rows n .. n+7 of a float weight [.., K], k = 0 .. the returned end (8 at a time) as 8 x 8
// transposes; the caller packs the rest.
inline int64_t pack_float_rows(const float* w, int64_t K, int64_t n, float* dst) {
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    __m256 r[8], t[8], u[8];
    for (int j = 0; j < 8; ++j) r[j] = _mm256_loadu_ps(w + (n + j) * K + k);
    for (int i = 0; i < 4; ++i) {  // t: rows 2i, 2i+1 interleaved
      t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
      t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 2; ++i) {  // u: columns of rows 4i .. 4i+3, per 128-bit lane
      u[4 * i] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
      u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
      u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
      u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int c = 0; c < 4; ++c) {
      _mm256_storeu_ps(dst + (k + c) * kNR, _mm256_permute2f128_ps(u[c], u[c + 4], 0x20));
      _mm256_storeu_ps(dst + (k + c + 4) * kNR, _mm256_permute2f128_ps(u[c], u[c + 4], 0x31));
    }
  }
  return k;
}
#else  // no vector pack: nothing done, the caller's scalar code packs everything
inline int64_t pack_int8_rows(const int8_t*, int64_t, const float*, int64_t, float*) { return 0; }
inline int64_t pack_int4_rows(const int8_t*, int64_t, const float*, const float*, int64_t, int64_t, int64_t, int64_t g0, int64_t, float*) { return g0; }
inline int64_t pack_float_rows(const float*, int64_t, int64_t, float*) { return 0; }
#endif

// ---------------------------------------------------------------------------------------------
// Float weights: a quantized network's float output head. As a MindSpore MatMul in a graph
// that MindSpore runs on the calling thread (a quantized network's ~35 operators), a prefill's
// head went to that thread and both pool threads, three threads on two cores.

struct F32 {
  const float* w;  // [N, K]
  int64_t N, K;
};

// Decode: rows n0..n0+NB of the weight against MB rows of x.
template <int MB, int NB>
inline void f32_gemv_block(const float* x, const F32& w, int64_t n0, float* y) {
  using V = FV::V;
  const int64_t K = w.K;
  V acc[NB][MB];
  for (int j = 0; j < NB; ++j)
    for (int i = 0; i < MB; ++i) acc[j][i] = FV::zero();
  int64_t k = 0;
  for (; k + FV::W <= K; k += FV::W) {
    V wv[NB];
    for (int j = 0; j < NB; ++j) wv[j] = FV::load(w.w + (n0 + j) * K + k);
    for (int i = 0; i < MB; ++i) {
      V xv = FV::load(x + i * K + k);
      for (int j = 0; j < NB; ++j) acc[j][i] = FV::fma(xv, wv[j], acc[j][i]);
    }
  }
  for (int j = 0; j < NB; ++j) {
    const float* row = w.w + (n0 + j) * K;
    for (int i = 0; i < MB; ++i) {
      float sum = FV::sum(acc[j][i]);
      for (int64_t kk = k; kk < K; ++kk) sum += x[i * K + kk] * row[kk];
      y[i * w.N + n0 + j] = sum;
    }
  }
}

template <int MB>
void f32_gemv(const float* x, const F32& w, float* y) {
  gemv_blocks<MB>(w.N, w.K, kGemvGrain, [&](auto nb, int64_t n0) { f32_gemv_block<MB, decltype(nb)::value>(x, w, n0, y); });
}

inline void f32_linear(const float* x, int64_t M, const F32& w, float* y) {
  if (M <= kGemvRows) {
    with_gemv_rows(M, [&](auto rows) { f32_gemv<decltype(rows)::value>(x, w, y); });
    return;
  }
  auto pack = [&w](int64_t n0, float* bp) {
    for (int j0 = 0; j0 < kNR; j0 += 8) {
      const int64_t done = n0 + j0 + 8 <= w.N ? pack_float_rows(w.w, w.K, n0 + j0, bp + j0) : 0;
      for (int j = j0; j < j0 + 8; ++j) {
        const int64_t n = n0 + j;
        for (int64_t k = done; k < w.K; ++k) bp[k * kNR + j] = n < w.N ? w.w[n * w.K + k] : 0.0f;
      }
    }
  };
  gemm_f32(M, w.N, w.K, x, y, pack, [](int64_t, int64_t, int64_t, int64_t) {});
}

// ---------------------------------------------------------------------------------------------
// Weight-only int8, per output channel.

struct W8 {
  const int8_t* q;
  const float* scale;
  const float* zp_neg;
  int64_t N, K;
};

// Decode: rows n0..n0+NB of the weight against MB rows of x. sx[m] = sum_k x[m, k].
template <int MB, int NB>
inline void w8_gemv_block(const float* x, const float* sx, const W8& w, int64_t n0, float* y) {
  using V = FV::V;
  const int64_t K = w.K;
  V acc[NB][MB];
  for (int j = 0; j < NB; ++j)
    for (int i = 0; i < MB; ++i) acc[j][i] = FV::zero();
  int64_t k = 0;
  for (; k + FV::W <= K; k += FV::W) {
    V wv[NB];
    prefetch_ahead<NB>(w.q, K, n0, w.N, k);
    for (int j = 0; j < NB; ++j) wv[j] = FV::from_i8(w.q + (n0 + j) * K + k);
    for (int i = 0; i < MB; ++i) {
      V xv = FV::load(x + i * K + k);
      for (int j = 0; j < NB; ++j) acc[j][i] = FV::fma(xv, wv[j], acc[j][i]);
    }
  }
  for (int j = 0; j < NB; ++j) {
    const int64_t n = n0 + j;
    const int8_t* row = w.q + n * K;
    for (int i = 0; i < MB; ++i) {
      float s = FV::sum(acc[j][i]);
      for (int64_t kk = k; kk < K; ++kk) s += x[i * K + kk] * static_cast<float>(row[kk]);
      y[i * w.N + n] = (s + w.zp_neg[n] * sx[i]) * w.scale[n];
    }
  }
}

template <int MB>
void w8_gemv(const float* x, const float* sx, const W8& w, float* y) {
  gemv_blocks<MB>(w.N, w.K, kGemvGrain, [&](auto nb, int64_t n0) { w8_gemv_block<MB, decltype(nb)::value>(x, sx, w, n0, y); });
}

inline void row_sums(const float* x, int64_t M, int64_t K, float* sx) {
  for (int64_t m = 0; m < M; ++m) {
    float s = 0.0f;
    for (int64_t k = 0; k < K; ++k) s += x[m * K + k];
    sx[m] = s;
  }
}

inline void w8_linear(const float* x, int64_t M, const W8& w, float* y) {
  if (M <= kGemvRows) {
    float sx[kGemvRows];
    row_sums(x, M, w.K, sx);
    with_gemv_rows(M, [&](auto rows) { w8_gemv<decltype(rows)::value>(x, sx, w, y); });
    return;
  }
  // Prefill: y = (x @ (q + zp_neg).T) * scale, the order the MindSpore path computes in.
  auto pack = [&w](int64_t n0, float* bp) {
    for (int j0 = 0; j0 < kNR; j0 += kPackRows) {
      const int64_t done = n0 + j0 + kPackRows <= w.N ? pack_int8_rows(w.q, w.K, w.zp_neg, n0 + j0, bp + j0) : 0;
      for (int j = j0; j < j0 + kPackRows; ++j) {
        const int64_t n = n0 + j;
        if (n >= w.N) {
          for (int64_t k = 0; k < w.K; ++k) bp[k * kNR + j] = 0.0f;
          continue;
        }
        const int8_t* row = w.q + n * w.K;
        const float z = w.zp_neg[n];
        for (int64_t k = done; k < w.K; ++k) bp[k * kNR + j] = static_cast<float>(row[k]) + z;
      }
    }
  };
  auto finish = [&](int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
    for (int64_t m = m0; m < m1; ++m)
      for (int64_t n = n0; n < n1; ++n) y[m * w.N + n] *= w.scale[n];
  };
  gemm_f32(M, w.N, w.K, x, y, pack, finish);
}

// ---------------------------------------------------------------------------------------------
// Weight-only int4 per group, packed two per byte.

struct W4 {
  const int8_t* q;  // [N, K/2]
  const float* scale;  // [N, groups]
  const float* zp_neg;  // [N, groups]
  int64_t N, K, group, groups;
};

// x rearranged for the nibble layout: inside each vector chunk of 2W codes (W bytes) that lies
// within one group, the W even-indexed values come first, then the W odd-indexed ones, matching
// from_i4's (low nibbles, high nibbles). Values outside whole chunks stay in place.
// End of the part of group [g0, g1) that whole vector chunks cover (none if g0 is odd: a
// chunk must start on a byte boundary).
inline int64_t w4_vector_end(int64_t g0, int64_t g1) {
  constexpr int64_t C = 2 * FV::W;
  return (g0 & 1) ? g0 : g0 + (g1 - g0) / C * C;
}

inline void w4_permute_row(const float* x, const W4& w, float* xp) {
  constexpr int W = FV::W;
  for (int64_t g = 0; g < w.groups; ++g) {
    const int64_t g0 = g * w.group, g1 = std::min(g0 + w.group, w.K), gv = w4_vector_end(g0, g1);
    int64_t k = g0;
    for (; k < gv; k += 2 * W)
      for (int l = 0; l < W; ++l) {
        xp[k + l] = x[k + 2 * l];
        xp[k + W + l] = x[k + 2 * l + 1];
      }
    for (; k < g1; ++k) xp[k] = x[k];
  }
}

template <int MB, int NB>
inline void w4_gemv_block(const float* xp, const float* x, const float* sxg, const W4& w, int64_t n0, float* y) {
  using V = FV::V;
  constexpr int W = FV::W;
  const int64_t K = w.K, half = K / 2;
  // Each group's vector sums are scaled in vector form and summed across lanes once at the end
  // (a horizontal sum per group and row cost as much as the group's multiply-adds at G = 64);
  // the zero-point term and the scalar tail of each group go to `out`.
  V total[NB][MB];
  float out[NB][MB] = {};
  GSK_UNROLL
  for (int j = 0; j < NB; ++j)
    GSK_UNROLL
    for (int i = 0; i < MB; ++i) total[j][i] = FV::zero();
  for (int64_t g = 0; g < w.groups; ++g) {
    const int64_t g0 = g * w.group, g1 = std::min(g0 + w.group, K), gv = w4_vector_end(g0, g1);
    V acc[NB][MB];
    GSK_UNROLL
    for (int j = 0; j < NB; ++j)
      GSK_UNROLL
      for (int i = 0; i < MB; ++i) acc[j][i] = FV::zero();
    int64_t k = g0;
    for (; k < gv; k += 2 * W) {
      V even[NB], odd[NB];
      prefetch_ahead<NB>(w.q, half, n0, w.N, k / 2);
      GSK_UNROLL
      for (int j = 0; j < NB; ++j) FV::from_i4(w.q + (n0 + j) * half + k / 2, even[j], odd[j]);
      GSK_UNROLL
      for (int i = 0; i < MB; ++i) {
        V xe = FV::load(xp + i * K + k), xo = FV::load(xp + i * K + k + W);
        GSK_UNROLL
        for (int j = 0; j < NB; ++j) acc[j][i] = FV::fma(xo, odd[j], FV::fma(xe, even[j], acc[j][i]));
      }
    }
    GSK_UNROLL
    for (int j = 0; j < NB; ++j) {
      const int64_t n = n0 + j;
      const int8_t* row = w.q + n * half;
      const float s = w.scale[n * w.groups + g], z = w.zp_neg[n * w.groups + g];
      const V sv = FV::set1(s);
      GSK_UNROLL
      for (int i = 0; i < MB; ++i) {
        total[j][i] = FV::fma(acc[j][i], sv, total[j][i]);
        float d = 0.0f;
        for (int64_t kk = k; kk < g1; ++kk) d += x[i * K + kk] * static_cast<float>(int4_code(row, kk));
        out[j][i] += (d + z * sxg[i * w.groups + g]) * s;
      }
    }
  }
  GSK_UNROLL
  for (int j = 0; j < NB; ++j)
    GSK_UNROLL
    for (int i = 0; i < MB; ++i) y[i * w.N + n0 + j] = FV::sum(total[j][i]) + out[j][i];
}

template <int MB>
void w4_gemv(const float* xp, const float* x, const float* sxg, const W4& w, float* y) {
  gemv_blocks<MB>(w.N, w.K, kW4GemvGrain, [&](auto nb, int64_t n0) { w4_gemv_block<MB, decltype(nb)::value>(xp, x, sxg, w, n0, y); });
}

inline void w4_linear(const float* x, int64_t M, const W4& w, float* y) {
  const int64_t K = w.K;
  if (M <= kGemvRows) {
    std::vector<float> xp(static_cast<size_t>(M * K)), sxg(static_cast<size_t>(M * w.groups));
    for (int64_t m = 0; m < M; ++m) {
      w4_permute_row(x + m * K, w, xp.data() + m * K);
      for (int64_t g = 0; g < w.groups; ++g) {
        float s = 0.0f;
        for (int64_t k = g * w.group; k < std::min((g + 1) * w.group, K); ++k) s += x[m * K + k];
        sxg[m * w.groups + g] = s;
      }
    }
    with_gemv_rows(M, [&](auto rows) { w4_gemv<decltype(rows)::value>(xp.data(), x, sxg.data(), w, y); });
    return;
  }
  // Prefill: y = x @ ((code + zp_neg) * scale).T, the MindSpore path's dequantised weight.
  auto pack = [&w](int64_t n0, float* bp) {
    for (int j0 = 0; j0 < kNR; j0 += kPackRows) {
      const bool vector = n0 + j0 + kPackRows <= w.N;
      for (int64_t g = 0; g < w.groups; ++g) {
        const int64_t g0 = g * w.group, g1 = std::min(g0 + w.group, w.K);
        const int64_t done = vector && !(g0 & 1) ? pack_int4_rows(w.q, w.K / 2, w.scale, w.zp_neg, w.groups, n0 + j0, g, g0, g1, bp + j0) : g0;
        for (int j = j0; j < j0 + kPackRows; ++j) {
          const int64_t n = n0 + j;
          if (n >= w.N) {
            for (int64_t k = done; k < g1; ++k) bp[k * kNR + j] = 0.0f;
            continue;
          }
          const int8_t* row = w.q + n * (w.K / 2);
          const float s = w.scale[n * w.groups + g], z = w.zp_neg[n * w.groups + g];
          int64_t k = done;
          if (k & 1) {  // a group starting inside a byte (odd group size)
            bp[k * kNR + j] = (static_cast<float>(int4_code(row, k)) + z) * s;
            ++k;
          }
          for (; k + 1 < g1; k += 2) {  // whole bytes: low nibble then high nibble
            const int8_t b = row[k >> 1];
            bp[k * kNR + j] = (static_cast<float>(static_cast<int8_t>(static_cast<uint8_t>(b) << 4) >> 4) + z) * s;
            bp[(k + 1) * kNR + j] = (static_cast<float>(b >> 4) + z) * s;
          }
          if (k < g1) bp[k * kNR + j] = (static_cast<float>(int4_code(row, k)) + z) * s;
        }
      }
    }
  };
  gemm_f32(M, w.N, K, x, y, pack, [](int64_t, int64_t, int64_t, int64_t) {});
}

// ---------------------------------------------------------------------------------------------
// int8 activations x int8 weights, exact in int32.

struct A8W8 {
  const int8_t* q;  // [N, K]
  const float* scale;  // [N] weight scale
  const float* zp_neg;  // [N] weight zp_neg (integers)
  int64_t N, K;
};

// Activation codes of M rows, encoded for IV and padded with code 0 to a multiple of the
// vector width; plus what the epilogue needs: per-row scale, zero point and code sum.
struct QuantizedRows {
  int64_t M, K, ld;
  std::vector<IV::A> a;
  std::vector<float> scale;
  std::vector<int32_t> zero, sum;
};

inline int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// QuantizedRows::ld for K codes a row: whole GEMV row vectors and whole GEMM k groups.
inline int64_t quantized_row_stride(int64_t K) { return round_up(K, std::max<int64_t>(IV::RW, 4 * IV::KP)); }

// Activations ``x * smooth`` (SmoothQuant's input scale; all ones for layers without) quantized:
// static: code = clamp(rint(v / s) + zp, -128, 127); dynamic (per row): s = max(max|v| / 127,
// 1e-12), code = clamp(rint(v / s), -127, 127). Division, not a reciprocal multiply, and rint in
// the default rounding mode: the MindSpore path's codes, bit for bit.
// One row of K activations (times smooth) to int8 codes; returns the row's scale and sets zp.
inline float quantize_row(const float* x, const float* smooth, int64_t K, bool dynamic, float static_scale, float static_zp, float* v, int8_t* codes, float& zp) {
  for (int64_t k = 0; k < K; ++k) v[k] = x[k] * smooth[k];
  float s = static_scale, lo = -128.0f, hi = 127.0f;
  zp = static_zp;
  if (dynamic) {
    float amax = 0.0f;
    int64_t k = 0;
    if (K >= FV::W) {  // max is exact in any order: vector lanes, then the rest
      FV::V m = FV::zero();
      for (; k + FV::W <= K; k += FV::W) {
        const FV::V x = FV::load(v + k);
        m = FV::max(FV::max(x, FV::sub(FV::zero(), x)), m);  // a NaN lane keeps m, as std::max does
      }
      amax = FV::hmax(m);
    }
    for (; k < K; ++k) amax = std::max(amax, std::fabs(v[k]));
    s = std::max(amax / 127.0f, 1e-12f);
    lo = -127.0f;
    zp = 0.0f;
  }
  int64_t k = 0;
  const FV::V sv = FV::set1(s), zv = FV::set1(zp);
  for (; k + FV::W <= K; k += FV::W) FV::store_codes(FV::clamp(FV::add(FV::round(FV::div(FV::load(v + k), sv)), zv), lo, hi), codes + k);
  for (; k < K; ++k) codes[k] = static_cast<int8_t>(std::min(std::max(std::nearbyint(v[k] / s) + zp, lo), hi));
  return s;
}

// a[k] = the encoding of codes[k], k < K; returns the codes' sum. Restrict pointers let the
// compiler vectorise it: written through the rows' vector in place, every byte reloaded the
// vector's data pointer (a char store may alias anything): three quarters of the time a
// prefill spent quantizing activations.
inline int32_t encode_codes(const int8_t* __restrict codes, int64_t K, IV::A* __restrict a) {
  int32_t total = 0;
  for (int64_t k = 0; k < K; ++k) {
    a[k] = IV::encode(codes[k]);
    total += codes[k];
  }
  return total;
}

inline QuantizedRows quantize_activations(const float* x, const float* smooth, int64_t M, int64_t K, bool dynamic, float static_scale, float static_zp) {
  QuantizedRows r{M, K, quantized_row_stride(K), {}, {}, {}, {}};
  r.a.assign(static_cast<size_t>(M * r.ld), IV::encode(0));
  r.scale.resize(M);
  r.zero.resize(M);
  r.sum.resize(M);
  parallel_for(M, 16, M * K * 4, [&](int64_t first, int64_t last) {
    thread_local std::vector<float> v;  // per-thread rows, kept between calls
    thread_local std::vector<int8_t> codes;
    v.resize(static_cast<size_t>(K));
    codes.resize(static_cast<size_t>(K));
    for (int64_t m = first; m < last; ++m) {
      float zp = 0.0f;
      r.scale[m] = quantize_row(x + m * K, smooth, K, dynamic, static_scale, static_zp, v.data(), codes.data(), zp);
      r.zero[m] = static_cast<int32_t>(zp);
      r.sum[m] = encode_codes(codes.data(), K, r.a.data() + m * r.ld);
    }
  });
  return r;
}

// t = sum_k (xq - xzp)(wq + wzn) expanded into integer terms: sxw = sum_k xq wq, sx = sum_k xq,
// and per channel wzn and wterm = sum_k wq + wzn * K; then float(t) * xs * ws. Summed in doubles,
// exactly (every term is an integer far below 2^53), so a loop over channels vectorises.
inline float a8w8_output(double sxw, double sx, double wzn, double wterm, double xzp, float xs, float ws) {
  const double t = sxw + wzn * sx - xzp * wterm;
  return (static_cast<float>(t) * xs) * ws;
}

template <int MB, int NB>
inline void a8w8_gemv_block(const QuantizedRows& xq, const A8W8& w, int64_t n0, float* y) {
  using V = IV::V;
  const int64_t K = w.K;
  V acc[NB][MB], sw[NB];
  for (int j = 0; j < NB; ++j) {
    sw[j] = IV::zero();
    for (int i = 0; i < MB; ++i) acc[j][i] = IV::zero();
  }
  int64_t k = 0;
  for (; k + IV::RW <= K; k += IV::RW) {
    decltype(IV::row_load_w(nullptr)) wv[NB];
    prefetch_ahead<NB>(w.q, K, n0, w.N, k);
    for (int j = 0; j < NB; ++j) {
      wv[j] = IV::row_load_w(w.q + (n0 + j) * K + k);
      sw[j] = IV::row_sum_w(sw[j], wv[j]);
    }
    for (int i = 0; i < MB; ++i) {
      auto av = IV::row_load_a(xq.a.data() + i * xq.ld + k);
      for (int j = 0; j < NB; ++j) acc[j][i] = IV::row_dot(acc[j][i], av, wv[j]);
    }
  }
  for (int j = 0; j < NB; ++j) {
    const int64_t n = n0 + j;
    const int8_t* row = w.q + n * K;
    int64_t swn = IV::sum(sw[j]);
    int64_t tail_w = 0;
    for (int64_t kk = k; kk < K; ++kk) tail_w += row[kk];
    for (int i = 0; i < MB; ++i) {
      int64_t sxw = static_cast<int64_t>(IV::sum(acc[j][i])) - IV::kBias * swn;
      for (int64_t kk = k; kk < K; ++kk) sxw += static_cast<int64_t>(xq.a[i * xq.ld + kk] - IV::kBias) * row[kk];
      const double wzn = w.zp_neg[n];
      y[i * w.N + n] = a8w8_output(static_cast<double>(sxw), xq.sum[i], wzn, static_cast<double>(swn + tail_w) + wzn * static_cast<double>(K), xq.zero[i], xq.scale[i], w.scale[n]);
    }
  }
}

template <int MB>
void a8w8_gemv(const QuantizedRows& xq, const A8W8& w, float* y) {
  gemv_blocks<MB>(w.N, w.K, kGemvGrain, [&](auto nb, int64_t n0) { a8w8_gemv_block<MB, decltype(nb)::value>(xq, w, n0, y); });
}

// Prefill: int32 C tile += A (encoded codes) x Bp, Bp = kc/KP groups of [2 * NL channels][KP].
// K is split into as few equal blocks of at most kIKC (a multiple of KP) as cover it: each block
// of a micro-tile pays a fixed cost (clearing, then adding its int32 tile to C), and fixed-size
// 512 blocks left SmolLM2's K = 576 a second block of 64.
constexpr int kINR = 2 * IV::NL;
constexpr int64_t kIKC = 768;

template <int MR>
inline void micro_i8(int64_t kgroups, const IV::A* a, int64_t lda, const IV::B* bp, int32_t* c, int64_t ldc, int nr, bool accumulate) {
  using V = IV::V;
  V c0[MR], c1[MR];
  GSK_UNROLL
  for (int i = 0; i < MR; ++i) c0[i] = c1[i] = IV::zero();
  for (int64_t g = 0; g < kgroups; ++g) {
    V b0 = IV::load_b(bp + g * kINR * IV::KP), b1 = IV::load_b(bp + g * kINR * IV::KP + IV::NL * IV::KP);
    GSK_UNROLL
    for (int i = 0; i < MR; ++i) {
      V av = IV::broadcast(a + i * lda + g * IV::KP);
      c0[i] = IV::dot(c0[i], av, b0);
      c1[i] = IV::dot(c1[i], av, b1);
    }
  }
  GSK_UNROLL
  for (int i = 0; i < MR; ++i) {
    int32_t tmp[kINR];
    IV::store(tmp, c0[i]);
    IV::store(tmp + IV::NL, c1[i]);
    int32_t* row = c + i * ldc;
    for (int j = 0; j < nr; ++j) row[j] = accumulate ? row[j] + tmp[j] : tmp[j];
  }
}

inline void micro_i8_rows(int mr, int64_t kg, const IV::A* a, int64_t lda, const IV::B* bp, int32_t* c, int64_t ldc, int nr, bool accumulate) {
  static_assert(IV::MR == 4 || IV::MR == 6, "micro_i8_rows dispatches 4 or 6 rows");
  switch (mr) {
    case 6: micro_i8<IV::MR == 6 ? 6 : 1>(kg, a, lda, bp, c, ldc, nr, accumulate); break;
    case 5: micro_i8<IV::MR == 6 ? 5 : 1>(kg, a, lda, bp, c, ldc, nr, accumulate); break;
    case 4: micro_i8<4>(kg, a, lda, bp, c, ldc, nr, accumulate); break;
    case 3: micro_i8<3>(kg, a, lda, bp, c, ldc, nr, accumulate); break;
    case 2: micro_i8<2>(kg, a, lda, bp, c, ldc, nr, accumulate); break;
    default: micro_i8<1>(kg, a, lda, bp, c, ldc, nr, accumulate); break;
  }
}

// Outputs n0 .. n1 of one row from its int32 sums (a8w8_output per channel; restrict pointers
// let the compiler vectorise the loop).
inline void a8w8_epilogue(const int32_t* __restrict sums, const double* __restrict unbias, const double* __restrict wzn, const double* __restrict wterm, const float* __restrict ws, int32_t row_sum, int32_t row_zero, float xs, int64_t n0, int64_t n1, float* __restrict out) {
  for (int64_t n = n0; n < n1; ++n) out[n] = a8w8_output(static_cast<double>(sums[n]) + unbias[n], row_sum, wzn[n], wterm[n], row_zero, xs, ws[n]);
}

// Rows whose whole K the AMX micro-tile takes (level amx, tile state granted): the largest
// multiple of kAmxRows in the chunk; the VNNI micro-kernel takes the rest. 0 elsewhere.
inline int64_t amx_rows(int64_t rows) {
#if defined(GSK_LEVEL_AMX)
  return amx_ready() ? rows / kAmxRows * kAmxRows : 0;
#else
  (void)rows;
  return 0;
#endif
}

// The int8 GEMM's panels at the AVX2 level ([K / 2][kINR channels][2] int16, kINR = 16):
// rows n .. n+15 for k < the returned multiple of 16, through the same byte transpose as the
// float panels; adds each row's weight sum over those k to sums[0..15]. Elsewhere nothing
// (the caller packs everything).
#if defined(GSK_LEVEL_AVX2)
inline int64_t pack_int8_pairs(const int8_t* q, int64_t K, int64_t n, IV::B* dst, int32_t* sums) {
  static_assert(IV::KP == 2 && kINR == kPackRows, "AVX2 int8 panels: 16 channels of int16 pairs");
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i sum_lo = _mm256_setzero_si256(), sum_hi = _mm256_setzero_si256();
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    __m128i r[16], t[16];
    for (int j = 0; j < 16; ++j) r[j] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + (n + j) * K + k));
    transpose_bytes_16x16(r, t);
    for (int e = 0; e < 8; ++e) {  // k pair (k + 2e, k + 2e + 1): channels 0-7, then 8-15
      const __m256i lo = _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(t[2 * e], t[2 * e + 1]));
      const __m256i hi = _mm256_cvtepi8_epi16(_mm_unpackhi_epi8(t[2 * e], t[2 * e + 1]));
      IV::B* out = dst + (k + 2 * e) * kINR;
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), lo);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 16), hi);
      sum_lo = _mm256_add_epi32(sum_lo, _mm256_madd_epi16(lo, ones));
      sum_hi = _mm256_add_epi32(sum_hi, _mm256_madd_epi16(hi, ones));
    }
  }
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(sums), sum_lo);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(sums + 8), sum_hi);
  return k;
}
#else
inline int64_t pack_int8_pairs(const int8_t*, int64_t, int64_t, IV::B*, int32_t*) { return 0; }
#endif

inline void a8w8_gemm(const QuantizedRows& xq, const A8W8& w, float* y) {
  const int64_t M = xq.M, N = w.N, K = w.K;
#if defined(GSK_LEVEL_AMX)
  const GemmChunks chunks(M, N, kINR);  // kMC-row blocks: whole AMX tiles
#else
  static_assert(kMC % IV::MR == 0, "row blocks hold whole int8 micro-tiles");
  const GemmChunks chunks(M, N, kINR, IV::MR);
#endif
#if defined(GSK_LEVEL_AMX)
  static_assert(IV::RW % kAmxK == 0, "AMX rows read whole 64-byte steps of the padded activations");
  const int64_t Kp = round_up(K, amx_rows(M) ? kAmxK : IV::KP);
#else
  const int64_t Kp = round_up(K, IV::KP);
#endif
  const int64_t ldc = chunks.panels * kINR;  // whole panels: an AMX tile stores all 32 channels
  // pack every panel once: [Kp / KP][kINR channels][KP], a group of KP k values at a time
  IV::B* bp = scratch<IV::B>(static_cast<size_t>(chunks.panels * Kp * kINR), 0);
  // per channel, a8w8_output's terms: -kBias * sw (undoing the activation encoding in the
  // product sum), zp_neg and sw + zp_neg * K
  double* epi = scratch<double>(static_cast<size_t>(3 * ldc), 1);
  double *unbias = epi, *wzn = epi + ldc, *wterm = epi + 2 * ldc;
  parallel_for(chunks.panels, 2, N * K * 8, [&](int64_t first, int64_t last) {
    for (int64_t p = first; p < last; ++p) {
      IV::B* panel = bp + p * Kp * kINR;
      for (int j0 = 0; j0 < kINR; j0 += kPackRows) {
        int32_t sums[kPackRows] = {};
        const int64_t done = p * kINR + j0 + kPackRows <= N ? pack_int8_pairs(w.q, K, p * kINR + j0, panel + j0 * IV::KP, sums) : 0;
        for (int j = j0; j < j0 + kPackRows; ++j) {
          const int64_t n = p * kINR + j;
          const int8_t* row = n < N ? w.q + n * K : nullptr;
          const int64_t whole = row ? K / IV::KP * IV::KP : 0;
          int64_t s = sums[j - j0];
          for (int64_t k = done; k < whole; ++k) s += row[k];
          for (int64_t k = done; k < whole; k += IV::KP) {
            if constexpr (sizeof(IV::B) == 1) {  // KP codes as one word (VNNI: a 32-bit lane)
              std::memcpy(panel + k * kINR + j * IV::KP, row + k, IV::KP);
            } else {
              for (int i = 0; i < IV::KP; ++i) panel[k * kINR + j * IV::KP + i] = row[k + i];
            }
          }
          for (int64_t k = whole; k < Kp; ++k) {
            const int8_t v = (row && k < K) ? row[k] : 0;
            s += v;
            panel[(k / IV::KP) * kINR * IV::KP + j * IV::KP + k % IV::KP] = v;
          }
          const double zn = n < N ? static_cast<double>(w.zp_neg[n]) : 0.0;
          unbias[n] = -static_cast<double>(IV::kBias) * static_cast<double>(s);
          wzn[n] = zn;
          wterm[n] = static_cast<double>(s) + zn * static_cast<double>(K);
        }
      }
    }
  });
  int32_t* acc = scratch<int32_t>(static_cast<size_t>(M * ldc), 0);
  const int64_t kblocks = (Kp + kIKC - 1) / kIKC, kstep = round_up((Kp + kblocks - 1) / kblocks, IV::KP);
  parallel_for(chunks.count(), 1, M * N * K, [&](int64_t first, int64_t last) {
    for (int64_t chunk = first; chunk < last; ++chunk) {
      const int64_t p0 = chunks.first_panel(chunk), p1 = chunks.end_panel(chunk);
      const int64_t m0 = chunks.first_row(chunk), m1 = chunks.end_row(chunk);
      const int64_t tiled = m0 + amx_rows(m1 - m0);
#if defined(GSK_LEVEL_AMX)
      if (tiled > m0) {
        amx_configure();
        for (int64_t m = m0; m < tiled; m += kAmxRows)
          for (int64_t p = p0; p < p1; ++p) micro_amx(Kp / kAmxK, xq.a.data() + m * xq.ld, xq.ld, bp + p * Kp * kINR, acc + m * ldc + p * kINR, ldc);
        amx_release();
      }
#endif
      for (int64_t k0 = 0; k0 < Kp; k0 += kstep) {
        const int64_t kg = std::min(kstep, Kp - k0) / IV::KP;
        for (int64_t p = p0; p < p1; ++p) {
          const int nr = static_cast<int>(std::min<int64_t>(kINR, N - p * kINR));
          for (int64_t m = tiled; m < m1; m += IV::MR) {
            const int mr = static_cast<int>(std::min<int64_t>(IV::MR, m1 - m));
            micro_i8_rows(mr, kg, xq.a.data() + m * xq.ld + k0, xq.ld, bp + (p * Kp + k0) * kINR, acc + m * ldc + p * kINR, ldc, nr, k0 > 0);
          }
        }
      }
      for (int64_t m = m0; m < m1; ++m)
        a8w8_epilogue(acc + m * ldc, unbias, wzn, wterm, w.scale, xq.sum[m], xq.zero[m], xq.scale[m], p0 * kINR, std::min(p1 * kINR, N), y + m * N);
    }
  });
}

// y [M, N] from quantized rows: the GEMM for prefill shapes, the GEMV for decode shapes.
inline void a8w8_rows(const QuantizedRows& xq, const A8W8& w, float* y) {
  if (xq.M > kGemvRows) {
    a8w8_gemm(xq, w, y);
    return;
  }
  with_gemv_rows(xq.M, [&](auto rows) { a8w8_gemv<decltype(rows)::value>(xq, w, y); });
}

inline void a8w8_linear(const float* x, const float* smooth, int64_t M, const A8W8& w, bool dynamic, float xs, float xzp, float* y) {
  a8w8_rows(quantize_activations(x, smooth, M, w.K, dynamic, xs, xzp), w, y);
}

// int8 activations x int4 weights per group: y = ((code - zp) @ W.T) * activation scale.
inline void a8w4_linear(const float* x, const float* smooth, int64_t M, const W4& w, bool dynamic, float xs, float xzp, float* y) {
  const int64_t K = w.K;
  std::vector<float> codes(static_cast<size_t>(M * K)), v(static_cast<size_t>(K)), scale(static_cast<size_t>(M));
  std::vector<int8_t> row(static_cast<size_t>(K));
  for (int64_t m = 0; m < M; ++m) {
    float zp = 0.0f;
    scale[m] = quantize_row(x + m * K, smooth, K, dynamic, xs, xzp, v.data(), row.data(), zp);
    for (int64_t k = 0; k < K; ++k) codes[m * K + k] = static_cast<float>(row[k]) - zp;
  }
  w4_linear(codes.data(), M, w, y);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < w.N; ++n) y[m * w.N + n] *= scale[m];
}

}  // namespace gsk
