// GPTQ's column loop inside one sub-block, for gscore.quant.gptq: the numpy loop spends about
// 50 us of interpreter time per column (a dozen small array operations), 100 000 columns in a
// SmolLM2 calibration. Here each column costs what its arithmetic costs.
//
// The operations are numpy's, one for one and in the same order, so the results are identical
// bit for bit (the build disables FMA contraction): the column cast to float32 and divided by
// its rows' scales, the zero point added (asymmetric), rounded half to even, clipped; the
// dequantized value (codes - zero) * scale in float32; the error (w - dequantized) / U[j, j] in
// float64; then every later column k of the sub-block moves by U[j, k] * error.
#pragma once

#include <cmath>
#include <cstdint>

namespace gsk {

// np.clip's float arithmetic, signed zeros included: max as (x > lo ? x : lo), then min as
// (x < hi ? x : hi). (std::max would keep -0.0 where numpy gives the bound 0.0.) Finite or
// infinite x only; GPTQ's inputs are checked finite.
inline float clip_like_numpy(float x, float lo, float hi) {
  const float above = x > lo ? x : lo;
  return above < hi ? above : hi;
}

struct GptqGrids {
  const float* scale;     // [groups][out]
  const float* zero;      // [groups][out]
  const int64_t* group;   // [n]: the grid row of each (permuted) column
  float qmin, qmax;
  bool symmetric;
};

// work [n][out] (the weight transposed, float64, updated in place), upper [n][n] (U, upper
// Cholesky factor of H^-1); columns first .. last; writes their rows of codes and dequant
// (float32) and errors (float64).
inline void gptq_columns(double* work, const double* upper, int64_t n, int64_t out, const GptqGrids& g, int64_t first, int64_t last,
                         float* codes, float* dequant, double* errors) {
  for (int64_t j = first; j < last; ++j) {
    const float* __restrict s = g.scale + g.group[j] * out;
    const float* __restrict z = g.zero + g.group[j] * out;
    const double* __restrict w = work + j * out;
    float* __restrict c = codes + j * out;
    float* __restrict d = dequant + j * out;
    double* __restrict e = errors + j * out;
    const double diagonal = upper[j * n + j];
    if (g.symmetric) {
      for (int64_t r = 0; r < out; ++r) {
        const float q = clip_like_numpy(std::nearbyint(static_cast<float>(w[r]) / s[r]), g.qmin, g.qmax);
        c[r] = q;
        d[r] = q * s[r];
      }
    } else {
      for (int64_t r = 0; r < out; ++r) {
        const float q = clip_like_numpy(std::nearbyint(static_cast<float>(w[r]) / s[r] + z[r]), g.qmin, g.qmax);
        c[r] = q;
        d[r] = (q - z[r]) * s[r];
      }
    }
    for (int64_t r = 0; r < out; ++r) e[r] = (w[r] - static_cast<double>(d[r])) / diagonal;
    for (int64_t k = j + 1; k < last; ++k) {
      const double u = upper[j * n + k];
      double* __restrict later = work + k * out;
      for (int64_t r = 0; r < out; ++r) later[r] -= u * e[r];
    }
  }
}

}  // namespace gsk
