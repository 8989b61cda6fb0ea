// Integer Conv2d and Dense layers for quantization-aware-trained networks (SimQAT deploy):
// int8 activation codes times int8 weight codes, summed exactly in int32 by the A8W8 kernels of
// linear.h, rescaled once per output.
//
// The activation codes are the simulated network's, operation for operation (fake_quant.h):
// u = x / scale + zero in float32, code = clamp(rint(u), qmin, qmax). An unsigned range
// (0 .. 255) is stored minus 128 together with its zero point, which leaves every code - zero,
// and so every product sum, unchanged. The weight is w = (q - zero_w) * scale_w per output
// channel. Only the final float rescale and the summation order differ from the simulated
// float convolution of the dequantised values: the integer sums here are exact.
//
// A convolution (NCHW input, OIHW weight, one group) becomes the GEMM of its im2col rows: row
// (b, oh, ow) holds the codes its output reads in the weight's (c, i, j) order, and padding
// reads the code of 0.0, which is the zero point. A Dense layer is the same with a 1 x 1
// kernel over a 1 x 1 image.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "linear.h"
#include "pool.h"

namespace gsk {

// How a layer's float input becomes int8 codes (see the top of the file). A NaN input takes
// code qmin, as in the vector path (a vector max returns its second operand on NaN) and in the
// A8W8 linear kernels.
struct ActQuant {
  float scale, zero, qmin, qmax;
  int32_t offset;  // 128 for ranges above 127 (unsigned codes), else 0

  int8_t code(float x) const {
    const float u = x / scale + zero;
    return static_cast<int8_t>(static_cast<int32_t>(std::min(std::max(qmin, std::nearbyint(u)), qmax)) - offset);
  }
  int32_t stored_zero() const { return static_cast<int32_t>(zero) - offset; }
};

// Input [B, C, H, W], weight [O, C, KH, KW], output [B, O, HO, WO]; pads on each side.
struct ConvShape {
  int64_t B, C, H, W, O, KH, KW;
  int64_t stride_h, stride_w, dil_h, dil_w, pad_top, pad_left, HO, WO;

  int64_t rows() const { return B * HO * WO; }
  int64_t depth() const { return C * KH * KW; }
};

// The row stride of im2col rows of K codes: the GEMV reads any row length (whole vectors, then
// a scalar tail) and the VNNI / AVX2 GEMM whole k groups, so rows need not be padded to the
// 64-byte vectors of quantized_row_stride, which more than doubled a row of K = 25 (LeNet5's
// first convolution); AMX tiles read whole 64-byte rows.
inline int64_t conv_row_stride(int64_t K) {
#if defined(GSK_LEVEL_AMX)
  return quantized_row_stride(K);
#else
  return round_up(K, 4 * IV::KP);
#endif
}

// codes[i] = aq.code(x[i]) for i < n, a vector at a time with the same operations (division,
// addition, rounding half to even, clamp; the offset subtracted is an integer, exact).
inline void quantize_codes(const float* x, int64_t n, const ActQuant& aq, int8_t* codes) {
  const FV::V sv = FV::set1(aq.scale), zv = FV::set1(aq.zero), off = FV::set1(static_cast<float>(aq.offset));
  int64_t i = 0;
  for (; i + FV::W <= n; i += FV::W) FV::store_codes(FV::sub(FV::clamp(FV::round(FV::add(FV::div(FV::load(x + i), sv), zv)), aq.qmin, aq.qmax), off), codes + i);
  for (; i < n; ++i) codes[i] = aq.code(x[i]);
}

// The im2col rows of output row oh of image b (rows m0 .. m0 + WO, m0 = (b * HO + oh) * WO):
// row ow holds the encoded codes its output reads, in the weight's (c, i, j) order, `pad` where
// it reads the padding. Each (c, i) finds its input row once for all WO outputs. The shape is
// taken by value: through a reference, every byte stored made the compiler reload its fields (a
// byte store may alias anything). FixedKW: the kernel width when known at compile time (0:
// s.KW), so a run of KW codes is a few moves, not a call to memmove.
template <int FixedKW>
inline void conv_output_row(const IV::A* __restrict enc, const ConvShape s, const IV::A pad, int64_t b, int64_t oh, IV::A* __restrict rows, int64_t ld) {
  const int64_t KW = FixedKW ? FixedKW : s.KW, WO = s.WO, sw = s.stride_w, dw = s.dil_w, left = s.pad_left, W = s.W;
  // outputs [lo, hi) read no horizontal padding
  int64_t lo = 0, hi = WO;
  while (lo < WO && lo * sw - left < 0) ++lo;
  while (hi > lo && (hi - 1) * sw - left + dw * (KW - 1) >= W) --hi;
  for (int64_t c = 0; c < s.C; ++c) {
    for (int64_t i = 0; i < s.KH; ++i) {
      const int64_t ih = oh * s.stride_h - s.pad_top + i * s.dil_h, k0 = (c * s.KH + i) * KW;
      IV::A* dst = rows + k0;
      if (ih < 0 || ih >= s.H) {
        for (int64_t ow = 0; ow < WO; ++ow)
          for (int64_t j = 0; j < KW; ++j) dst[ow * ld + j] = pad;
        continue;
      }
      const IV::A* src = enc + ((b * s.C + c) * s.H + ih) * W - left;
      for (int64_t ow = 0; ow < WO; ++ow) {
        const IV::A* from = src + ow * sw;
        IV::A* to = dst + ow * ld;
        if (ow >= lo && ow < hi) {
          for (int64_t j = 0; j < KW; ++j) to[j] = from[j * dw];
        } else {
          for (int64_t j = 0; j < KW; ++j) {
            const int64_t iw = ow * sw - left + j * dw;
            to[j] = iw >= 0 && iw < W ? from[j * dw] : pad;
          }
        }
      }
    }
  }
}

// r = the im2col rows of the quantized input, in the form the A8W8 kernels take (every row has
// the same scale and zero point); r's buffers are reused between calls (a prefill-sized batch
// is tens of MB, which a fresh allocation page-faults in every time). The input is quantized
// and encoded once: each value is read by up to KH * KW rows.
inline void conv_rows(const float* x, const ConvShape& s, const ActQuant& aq, QuantizedRows& r) {
  using A = IV::A;
  const int64_t M = s.rows(), K = s.depth(), n = s.B * s.C * s.H * s.W;
  thread_local std::vector<int8_t> codes;
  thread_local std::vector<A> encoded;
  codes.resize(static_cast<size_t>(n));
  encoded.resize(static_cast<size_t>(n));
  int8_t* code = codes.data();  // a lambda run by a pool thread would name that thread's own vectors
  A* enc = encoded.data();
  parallel_for(n, 1 << 16, n * 4, [&](int64_t first, int64_t last) {
    quantize_codes(x + first, last - first, aq, code + first);
    for (int64_t i = first; i < last; ++i) enc[i] = IV::encode(code[i]);
  });
  r.M = M;
  r.K = K;
  r.ld = conv_row_stride(K);
  r.a.resize(static_cast<size_t>(M * r.ld));
  r.scale.assign(static_cast<size_t>(M), aq.scale);
  r.zero.assign(static_cast<size_t>(M), aq.stored_zero());
  r.sum.resize(static_cast<size_t>(M));
  const A pad = IV::encode(static_cast<int8_t>(aq.stored_zero())), none = IV::encode(0);
  A* const rows = r.a.data();
  int32_t* const sums = r.sum.data();
  const int64_t ld = r.ld;
  parallel_for(s.B * s.HO, 4, M * K, [&](int64_t first, int64_t last) {
    for (int64_t bh = first; bh < last; ++bh) {
      A* block = rows + bh * s.WO * ld;
      switch (s.KW) {
        case 1: conv_output_row<1>(enc, s, pad, bh / s.HO, bh % s.HO, block, ld); break;
        case 3: conv_output_row<3>(enc, s, pad, bh / s.HO, bh % s.HO, block, ld); break;
        case 5: conv_output_row<5>(enc, s, pad, bh / s.HO, bh % s.HO, block, ld); break;
        default: conv_output_row<0>(enc, s, pad, bh / s.HO, bh % s.HO, block, ld); break;
      }
      for (int64_t ow = 0; ow < s.WO; ++ow) {
        A* row = block + ow * ld;
        std::fill(row + K, row + ld, none);  // the GEMM reads whole vectors: code 0 past K
        int32_t total = 0;  // over the whole padded row, in whole vectors (K alone left a scalar tail)
        for (int64_t k = 0; k < ld; ++k) total += row[k];
        sums[bh * s.WO + ow] = total - static_cast<int32_t>(ld) * IV::kBias;
      }
    }
  });
}

// Images per im2col chunk: the rows of a whole batch can take far more memory than the layer's
// input (a 3 x 3 convolution copies each code 9 times), so a batch is done a few images at a
// time, each chunk's rows at most about kIm2colBytes (one image at least).
constexpr int64_t kIm2colBytes = int64_t{16} << 20;

// y [B, O, HO, WO] (NCHW) of the convolution; w holds the weight as [O, C * KH * KW] with its
// zp_neg (minus the zero points).
inline void int8_conv(const float* x, const ConvShape& s, const ActQuant& aq, const A8W8& w, float* y) {
  const int64_t P = s.HO * s.WO, N = s.O, ld = conv_row_stride(s.depth());
  const int64_t per_chunk = std::max<int64_t>(1, kIm2colBytes / std::max<int64_t>(1, P * ld * static_cast<int64_t>(sizeof(IV::A))));
  thread_local QuantizedRows xq;
  thread_local std::vector<float> rows;  // [images * P, O], transposed into [images, O, P]
  for (int64_t b0 = 0; b0 < s.B; b0 += per_chunk) {
    ConvShape chunk = s;
    chunk.B = std::min(per_chunk, s.B - b0);
    conv_rows(x + b0 * s.C * s.H * s.W, chunk, aq, xq);
    float* out = y + b0 * N * P;
    if (P == 1) {  // a Dense layer, or a 1 x 1 output: row-major [B, O] is already NCHW
      a8w8_rows(xq, w, out);
      continue;
    }
    rows.resize(static_cast<size_t>(chunk.rows() * N));
    float* gemm_out = rows.data();  // a lambda run by a pool thread would name that thread's own vector
    a8w8_rows(xq, w, gemm_out);
    parallel_for(chunk.B * N, 16, chunk.B * N * P, [&](int64_t first, int64_t last) {
      for (int64_t bo = first; bo < last; ++bo) {
        const int64_t b = bo / N, o = bo % N;
        const float* from = gemm_out + b * P * N + o;
        float* to = out + bo * P;
        for (int64_t p = 0; p < P; ++p) to[p] = from[p * N];
      }
    });
  }
}

}  // namespace gsk
