// Thin SIMD traits: the only code that differs between dispatch levels.
//
// Every kernel is written once as a template over these traits, so the logic that indexes,
// blocks and handles tails is the same (and tested the same) at every level; a level only
// supplies how to load, convert and multiply one vector. The build compiles this file once
// per level with a GSK_LEVEL_* macro (gscore/kernels/build.py):
//
//   GSK_LEVEL_AVX512VNNI  16 float lanes (zmm), int8 dot products with vpdpbusd (u8 x s8, 4 per lane)
//   GSK_LEVEL_AMX         with GSK_LEVEL_AVX512VNNI: the same traits, and the int8 prefill GEMM on
//                         AMX tiles (amx.h)
//   GSK_LEVEL_AVX2        8 float lanes (ymm), int8 dot products as int16 pairs with vpmaddwd
//   (neither)             portable C++: 8-lane structs of plain arrays, loops the compiler may vectorise
//
// Float traits FV: V (vector of W floats), zero/set1/load/store/fma/add/mul/max, sum (horizontal),
// from_i8 (W int8 -> W floats), from_i4 (W packed bytes -> even and odd nibbles as floats).
// Integer traits IV: A (activation element type), KP (k values per 32-bit lane), NL (int32 lanes
// per vector); B vectors hold NL channels x KP k values; dot(acc, a, b) adds the KP-term dot
// products lane by lane, exactly, in int32.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(GSK_LEVEL_AVX512VNNI) || defined(GSK_LEVEL_AVX2)
#include <immintrin.h>
#endif

// Put before a loop over a GEMM micro-tile's rows (a compile-time trip count): unrolled, the
// tile's accumulator arrays live in registers. Left to itself GCC kept them on the stack
// (cleared with rep stos, stored back after the loop): the prefill GEMMs ran 3-21 % slower.
#define GSK_UNROLL _Pragma("GCC unroll 16")

namespace gsk {

#if defined(GSK_LEVEL_AMX)
constexpr const char* kLevel = "amx";
#elif defined(GSK_LEVEL_AVX512VNNI)
constexpr const char* kLevel = "avx512vnni";
#elif defined(GSK_LEVEL_AVX2)
constexpr const char* kLevel = "avx2";
#else
constexpr const char* kLevel = "cpp";
#endif

#if defined(GSK_LEVEL_AVX512VNNI)

struct FV {
  using V = __m512;
  static constexpr int W = 16;
  static V zero() { return _mm512_setzero_ps(); }
  static V set1(float a) { return _mm512_set1_ps(a); }
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V max(V a, V b) { return _mm512_max_ps(a, b); }
  static V min(V a, V b) { return _mm512_min_ps(a, b); }
  static float hmax(V v) { return _mm512_reduce_max_ps(v); }
  static float hmin(V v) { return _mm512_reduce_min_ps(v); }
  static float sum(V v) { return _mm512_reduce_add_ps(v); }
  static V from_i8(const int8_t* p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  }
  // vpermps reads only the low 4 bits of each index lane, so a 16-entry table turns a nibble
  // into its signed code as a float in one instruction: 4 per 32 codes instead of 6 shifts and
  // conversions (the int4 GEMV is bound by these instructions, not by memory).
  static void from_i4(const int8_t* p, V& even, V& odd) {
    const __m512 codes = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, -8, -7, -6, -5, -4, -3, -2, -1);
    const __m512i b = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    even = _mm512_permutexvar_ps(b, codes);
    odd = _mm512_permutexvar_ps(_mm512_srli_epi32(b, 4), codes);
  }
  // 2^n for integer-valued n in [-126, 127], and n = round(x)
  static V round(V x) { return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static V pow2(V n) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23)); }
  static V clamp(V x, float lo, float hi) { return _mm512_min_ps(_mm512_max_ps(x, set1(lo)), set1(hi)); }
  static V div(V a, V b) { return _mm512_div_ps(a, b); }
  static V sub(V a, V b) { return _mm512_sub_ps(a, b); }
  // W integer-valued floats in the range of the destination type, stored as W codes
  static void store_codes(V v, int8_t* p) { _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(v))); }
  static void store_codes(V v, uint8_t* p) { _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(v))); }
};

// vpdpbusd: unsigned 8-bit activations (code + 128) times signed 8-bit weights, 4 per lane.
struct IV {
  using A = uint8_t;
  using B = int8_t;
  using V = __m512i;
  static constexpr int KP = 4;
  static constexpr int NL = 16;
  static constexpr int MR = 6;  // GEMM micro-tile rows: dpbusd accumulates in place, 32 registers
  static constexpr int32_t kBias = 128;  // A = code + kBias
  static A encode(int8_t code) { return static_cast<A>(code + kBias); }
  static V zero() { return _mm512_setzero_si512(); }
  static V broadcast(const A* p) {
    int32_t v;
    std::memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
  }
  static V load_b(const int8_t* p) { return _mm512_loadu_si512(p); }
  static V dot(V acc, V a, V b) { return _mm512_dpbusd_epi32(acc, a, b); }
  static void store(int32_t* p, V v) { _mm512_storeu_si512(p, v); }
  static int32_t sum(V v) { return _mm512_reduce_add_epi32(v); }
  // Row dot product over n (multiple of RW) elements: activations a (encoded) times int8 weights.
  static constexpr int RW = 64;
  static V row_load_a(const A* p) { return _mm512_loadu_si512(p); }
  static V row_load_w(const int8_t* p) { return _mm512_loadu_si512(p); }
  static V row_dot(V acc, V a, V w) { return _mm512_dpbusd_epi32(acc, a, w); }
  static V row_sum_w(V acc, V w) { return _mm512_dpbusd_epi32(acc, _mm512_set1_epi8(1), w); }
};

#elif defined(GSK_LEVEL_AVX2)

struct FV {
  using V = __m256;
  static constexpr int W = 8;
  static V zero() { return _mm256_setzero_ps(); }
  static V set1(float a) { return _mm256_set1_ps(a); }
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V max(V a, V b) { return _mm256_max_ps(a, b); }
  static V min(V a, V b) { return _mm256_min_ps(a, b); }
  static float hmax(V v) {
    float t[W];
    store(t, v);
    float m = t[0];
    for (float x : t) m = x > m ? x : m;
    return m;
  }
  static float hmin(V v) {
    float t[W];
    store(t, v);
    float m = t[0];
    for (float x : t) m = x < m ? x : m;
    return m;
  }
  static float sum(V v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static V from_i8(const int8_t* p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
  }
  static void from_i4(const int8_t* p, V& even, V& odd) {
    __m256i b = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
    even = _mm256_cvtepi32_ps(_mm256_srai_epi32(_mm256_slli_epi32(b, 28), 28));
    odd = _mm256_cvtepi32_ps(_mm256_srai_epi32(b, 4));
  }
  static V round(V x) { return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static V pow2(V n) { return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23)); }
  static V clamp(V x, float lo, float hi) { return _mm256_min_ps(_mm256_max_ps(x, set1(lo)), set1(hi)); }
  static V div(V a, V b) { return _mm256_div_ps(a, b); }
  static V sub(V a, V b) { return _mm256_sub_ps(a, b); }
  static void store_codes(V v, int8_t* p) {
    const __m256i i = _mm256_cvtps_epi32(v);
    const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(p), _mm_packs_epi16(w, w));
  }
  static void store_codes(V v, uint8_t* p) {
    const __m256i i = _mm256_cvtps_epi32(v);
    const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(p), _mm_packus_epi16(w, w));
  }
};

// vpmaddwd: int16 activations times int16 weights, 2 per lane, summed exactly into int32.
struct IV {
  using A = int16_t;
  using B = int16_t;
  using V = __m256i;
  static constexpr int KP = 2;
  static constexpr int NL = 8;
  static constexpr int MR = 4;  // 8 accumulators + 2 B + broadcast + product fit 16 ymm registers
  static constexpr int32_t kBias = 0;
  static A encode(int8_t code) { return code; }
  static V zero() { return _mm256_setzero_si256(); }
  static V broadcast(const A* p) {
    int32_t v;
    std::memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
  }
  static V load_b(const int16_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static V dot(V acc, V a, V b) { return _mm256_add_epi32(acc, _mm256_madd_epi16(a, b)); }
  static void store(int32_t* p, V v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v); }
  static int32_t sum(V v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
  }
  static constexpr int RW = 16;
  static V row_load_a(const A* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static V row_load_w(const int8_t* p) { return _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
  static V row_dot(V acc, V a, V w) { return _mm256_add_epi32(acc, _mm256_madd_epi16(a, w)); }
  static V row_sum_w(V acc, V w) { return _mm256_add_epi32(acc, _mm256_madd_epi16(w, _mm256_set1_epi16(1))); }
};

#else

struct FV {
  struct V {
    float v[8];
  };
  static constexpr int W = 8;
  static V zero() { return set1(0.0f); }
  static V set1(float a) {
    V r;
    for (float& x : r.v) x = a;
    return r;
  }
  static V load(const float* p) {
    V r;
    std::memcpy(r.v, p, sizeof r.v);
    return r;
  }
  static void store(float* p, V v) { std::memcpy(p, v.v, sizeof v.v); }
  static V fma(V a, V b, V c) {
    for (int i = 0; i < W; ++i) c.v[i] += a.v[i] * b.v[i];
    return c;
  }
  static V add(V a, V b) {
    for (int i = 0; i < W; ++i) a.v[i] += b.v[i];
    return a;
  }
  static V mul(V a, V b) {
    for (int i = 0; i < W; ++i) a.v[i] *= b.v[i];
    return a;
  }
  static V max(V a, V b) {
    for (int i = 0; i < W; ++i) a.v[i] = a.v[i] > b.v[i] ? a.v[i] : b.v[i];
    return a;
  }
  static V min(V a, V b) {
    for (int i = 0; i < W; ++i) a.v[i] = a.v[i] < b.v[i] ? a.v[i] : b.v[i];
    return a;
  }
  static float hmax(V v) {
    float m = v.v[0];
    for (float x : v.v) m = x > m ? x : m;
    return m;
  }
  static float hmin(V v) {
    float m = v.v[0];
    for (float x : v.v) m = x < m ? x : m;
    return m;
  }
  static float sum(V v) {
    float s = 0.0f;
    for (float x : v.v) s += x;
    return s;
  }
  static V from_i8(const int8_t* p) {
    V r;
    for (int i = 0; i < W; ++i) r.v[i] = static_cast<float>(p[i]);
    return r;
  }
  static void from_i4(const int8_t* p, V& even, V& odd) {
    for (int i = 0; i < W; ++i) {
      even.v[i] = static_cast<float>(static_cast<int8_t>(static_cast<uint8_t>(p[i]) << 4) >> 4);
      odd.v[i] = static_cast<float>(p[i] >> 4);
    }
  }
  static V round(V x) {
    for (float& v : x.v) v = std::nearbyint(v);
    return x;
  }
  static V pow2(V n) {
    for (float& v : n.v) v = std::ldexp(1.0f, static_cast<int>(v));
    return n;
  }
  static V clamp(V x, float lo, float hi) {  // min(max(x, lo), hi) as the SIMD levels take it: NaN -> lo
    for (float& v : x.v) {
      const float m = v > lo ? v : lo;
      v = m < hi ? m : hi;
    }
    return x;
  }
  static V div(V a, V b) {
    for (int i = 0; i < W; ++i) a.v[i] /= b.v[i];
    return a;
  }
  static V sub(V a, V b) {
    for (int i = 0; i < W; ++i) a.v[i] -= b.v[i];
    return a;
  }
  template <class Code>
  static void store_codes(V v, Code* p) {
    for (int i = 0; i < W; ++i) p[i] = static_cast<Code>(static_cast<int32_t>(v.v[i]));
  }
};

struct IV {
  using A = int16_t;
  using B = int16_t;
  struct V {
    int32_t v[8];
  };
  static constexpr int KP = 2;
  static constexpr int NL = 8;
  static constexpr int MR = 4;
  static constexpr int32_t kBias = 0;
  static A encode(int8_t code) { return code; }
  static V zero() {
    V r;
    for (int32_t& x : r.v) x = 0;
    return r;
  }
  // A broadcast pair and a B vector are both kept as int16 pairs in an 8 x int32 layout.
  static V broadcast(const A* p) {
    int32_t v;
    std::memcpy(&v, p, 4);
    V r;
    for (int32_t& x : r.v) x = v;
    return r;
  }
  static V load_b(const int16_t* p) {
    V r;
    std::memcpy(r.v, p, sizeof r.v);
    return r;
  }
  static V dot(V acc, V a, V b) {
    for (int i = 0; i < NL; ++i) {
      int16_t a2[2], b2[2];
      std::memcpy(a2, &a.v[i], 4);
      std::memcpy(b2, &b.v[i], 4);
      acc.v[i] += static_cast<int32_t>(a2[0]) * b2[0] + static_cast<int32_t>(a2[1]) * b2[1];
    }
    return acc;
  }
  static void store(int32_t* p, V v) { std::memcpy(p, v.v, sizeof v.v); }
  static int32_t sum(V v) {
    int32_t s = 0;
    for (int32_t x : v.v) s += x;
    return s;
  }
  static constexpr int RW = 16;
  struct R {
    int32_t v[16];
  };
  static R row_load_a(const A* p) {
    R r;
    for (int i = 0; i < RW; ++i) r.v[i] = p[i];
    return r;
  }
  static R row_load_w(const int8_t* p) {
    R r;
    for (int i = 0; i < RW; ++i) r.v[i] = p[i];
    return r;
  }
  static V row_dot(V acc, R a, R w) {
    for (int i = 0; i < NL; ++i) acc.v[i] += a.v[2 * i] * w.v[2 * i] + a.v[2 * i + 1] * w.v[2 * i + 1];
    return acc;
  }
  static V row_sum_w(V acc, R w) {
    for (int i = 0; i < NL; ++i) acc.v[i] += w.v[2 * i] + w.v[2 * i + 1];
    return acc;
  }
};

#endif

// e^x for a vector, relative error about 2 ulp: x = n ln2 + r with |r| <= ln2 / 2 (ln2 split in
// two parts so r is exact), e^r by its degree-6 Taylor polynomial, times 2^n. Inputs are clamped
// to [-87.3, 88.7] (results stay normal floats; e^-87.3 ~ 1e-38 underflows nothing that matters
// after a softmax or a sigmoid).
inline FV::V exp_v(FV::V x) {
  x = FV::clamp(x, -87.3f, 88.7f);
  const FV::V n = FV::round(FV::mul(x, FV::set1(1.44269504088896341f)));
  FV::V r = FV::sub(x, FV::mul(n, FV::set1(0.693359375f)));
  r = FV::sub(r, FV::mul(n, FV::set1(-2.12194440e-4f)));
  FV::V p = FV::set1(1.0f / 720.0f);
  p = FV::fma(p, r, FV::set1(1.0f / 120.0f));
  p = FV::fma(p, r, FV::set1(1.0f / 24.0f));
  p = FV::fma(p, r, FV::set1(1.0f / 6.0f));
  p = FV::fma(p, r, FV::set1(0.5f));
  p = FV::fma(p, r, FV::set1(1.0f));
  p = FV::fma(p, r, FV::set1(1.0f));
  return FV::mul(p, FV::pow2(n));
}

// IEEE half <-> float, bit exact (round to nearest even on the way down), no F16C needed.
inline float half_to_float(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else {  // subnormal half: normalise
      int e = -1;
      do {
        ++e;
        man <<= 1;
      } while (!(man & 0x400u));
      bits = sign | (static_cast<uint32_t>(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
    }
  } else if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (man << 13);
  } else {
    bits = sign | ((exp + 112u) << 23) | (man << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline uint16_t float_to_half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t absx = x & 0x7fffffffu;
  if (absx >= 0x7f800000u) return static_cast<uint16_t>(sign | 0x7c00u | (absx > 0x7f800000u ? 0x200u : 0u));
  if (absx >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to >= 65520: inf
  if (absx < 0x38800000u) {  // result is subnormal (or zero) in half
    if (absx < 0x33000000u) return static_cast<uint16_t>(sign);
    uint32_t man = (absx & 0x7fffffu) | 0x800000u;
    int shift = 126 - static_cast<int>(absx >> 23);  // 14 .. 24
    uint32_t q = man >> shift;
    uint32_t rem = man & ((1u << shift) - 1u), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1u))) ++q;
    return static_cast<uint16_t>(sign | q);
  }
  uint32_t q = ((absx >> 13) - (112u << 10));
  uint32_t rem = absx & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (q & 1u))) ++q;
  return static_cast<uint16_t>(sign | q);
}

}  // namespace gsk
