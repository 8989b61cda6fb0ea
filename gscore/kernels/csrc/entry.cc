// Entry points: MindSpore AOT custom operators (ops.Custom("lib.so:name", ..., func_type="aot"))
// and plain C functions for ctypes.
//
// An AOT operator receives every input then every output as (pointer, rank, shape, dtype
// name); returning non-zero makes MindSpore raise. Inputs arrive contiguous. Shapes are
// checked again here (the Python wrappers check them first, with clear messages), so a
// mismatch fails instead of reading out of bounds.
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "attention.h"
#include "elementwise.h"
#include "fake_quant.h"
#include "gptq.h"
#include "int8_layer.h"
#include "linear.h"
#include "simd.h"

namespace {

struct Arg {
  void* data;
  int ndim;
  const int64_t* shape;
  const char* dtype;

  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < ndim; ++i) n *= shape[i];
    return n;
  }
  int64_t dim(int i) const { return shape[i < 0 ? ndim + i : i]; }
  bool is(const char* name) const { return std::strcmp(dtype, name) == 0; }
};

struct Args {
  int n;
  void** params;
  int* ndims;
  int64_t** shapes;
  const char** dtypes;
  Arg operator[](int i) const { return Arg{params[i], ndims[i], shapes[i], dtypes[i]}; }
};

// A float32 view of a float32 or float16 tensor (float16 is converted into `storage`).
const float* as_f32(const Arg& a, std::vector<float>& storage) {
  if (a.is("float32")) return static_cast<const float*>(a.data);
  const int64_t n = a.numel();
  storage.resize(static_cast<size_t>(n));
  const uint16_t* h = static_cast<const uint16_t*>(a.data);
  for (int64_t i = 0; i < n; ++i) storage[i] = gsk::half_to_float(h[i]);
  return storage.data();
}

bool is_float(const Arg& a) { return a.is("float32") || a.is("float16"); }

// Output in the dtype of `out`: computed straight into it (float32) or converted (float16).
struct Output {
  Arg out;
  std::vector<float> storage;
  float* data() {
    if (out.is("float32")) return static_cast<float*>(out.data);
    storage.resize(static_cast<size_t>(out.numel()));
    return storage.data();
  }
  void finish() {
    if (out.is("float32")) return;
    uint16_t* h = static_cast<uint16_t*>(out.data);
    for (size_t i = 0; i < storage.size(); ++i) h[i] = gsk::float_to_half(storage[i]);
  }
};

constexpr int kOk = 0, kBadArgs = 1;

float scalar(const Arg& a) { return *static_cast<const float*>(a.data); }

const float* f32(const Arg& a) { return static_cast<const float*>(a.data); }

// The quantized linear kinds, in the order of the plan's kind field of gsk_linear_group.
enum LinearKind { kW8 = 0, kW4, kA8W8Static, kA8W8Dynamic, kA8W4Static, kA8W4Dynamic, kLinearKinds };

// Inputs of each kind after x (weight, scale, zp_neg, then group size, static input scale and
// zero point, smooth scale where the kind has them).
constexpr int kLinearInputs[kLinearKinds] = {3, 4, 6, 4, 7, 5};

// y [M, N] = linear of `kind` on x [M, K] float32, its inputs a[at ..] (as the single-linear
// entries below take them after x). Sets N; false (nothing computed) on inputs that do not fit.
bool run_linear(int kind, const float* x, int64_t M, int64_t K, const Args& a, int at, float* y, int64_t& N) {
  const Arg q = a[at], scale = a[at + 1], zp = a[at + 2];
  if (!q.is("int8") || q.ndim != 2 || !is_float(scale) || !is_float(zp)) return false;
  const bool int4 = kind == kW4 || kind == kA8W4Static || kind == kA8W4Dynamic;
  const bool quantized_input = kind >= kA8W8Static, dynamic = kind == kA8W8Dynamic || kind == kA8W4Dynamic;
  N = q.dim(0);
  int next = at + 3;
  int64_t G = 0, groups = 1;
  if (int4) {
    const Arg group = a[next++];
    if (!group.is("int32") || 2 * q.dim(1) != K) return false;
    G = *static_cast<const int32_t*>(group.data);
    if (G <= 0) return false;
    groups = (K + G - 1) / G;
  } else if (q.dim(1) != K) {
    return false;
  }
  if (scale.numel() != N * groups || zp.numel() != N * groups) return false;
  float xs = 0.0f, xzp = 0.0f;
  if (quantized_input && !dynamic) {
    const Arg s = a[next++], z = a[next++];
    if (!s.is("float32") || !z.is("float32") || s.numel() != 1 || z.numel() != 1) return false;
    xs = *static_cast<const float*>(s.data);
    xzp = *static_cast<const float*>(z.data);
  }
  std::vector<float> ss, zs, sm;
  const float* smooth = nullptr;
  if (quantized_input) {
    const Arg s = a[next++];
    if (!is_float(s) || s.numel() != K) return false;
    smooth = as_f32(s, sm);
  }
  const int8_t* codes = static_cast<const int8_t*>(q.data);
  const float *sc = as_f32(scale, ss), *zn = as_f32(zp, zs);
  if (int4) {
    const gsk::W4 w{codes, sc, zn, N, K, G, groups};
    if (quantized_input) {
      gsk::a8w4_linear(x, smooth, M, w, dynamic, xs, xzp, y);
    } else {
      gsk::w4_linear(x, M, w, y);
    }
  } else if (quantized_input) {
    gsk::a8w8_linear(x, smooth, M, gsk::A8W8{codes, sc, zn, N, K}, dynamic, xs, xzp, y);
  } else {
    gsk::w8_linear(x, M, gsk::W8{codes, sc, zn, N, K}, y);
  }
  return true;
}

// One linear: x [.., K] float32 or float16, then the kind's inputs -> y [.., N] in x's dtype.
int single_linear(const Args& a, int kind) {
  if (a.n != 2 + kLinearInputs[kind] || !is_float(a[0])) return kBadArgs;
  const Arg x = a[0];
  const int64_t K = x.dim(-1);
  std::vector<float> xs;
  Output y{a[a.n - 1], {}};
  int64_t N = 0;
  if (K <= 0 || !run_linear(kind, as_f32(x, xs), x.numel() / K, K, a, 1, y.data(), N)) return kBadArgs;
  y.finish();
  return kOk;
}

// A decoder block as one operator (gsk_decoder_layer) calls the entry points below on argument
// lists it assembles: some of its own inputs plus float32 scratch tensors it owns.
using Entry = int (*)(int, void**, int*, int64_t**, const char**, void*, void*);

struct Step {
  // Fixed storage: a decode step assembles five of these per block, and growing vectors cost
  // more in malloc than the block's small GEMVs leave to spare.
  static constexpr int kMaxArgs = 64;
  void* params[kMaxArgs];
  int ndims[kMaxArgs];
  int64_t* shapes[kMaxArgs];
  const char* dtypes[kMaxArgs];
  int n = 0;
  bool overflow = false;  // more than kMaxArgs added: run() refuses

  void add(const Arg& x) {
    if (n == kMaxArgs) {
      overflow = true;
      return;
    }
    params[n] = x.data;
    ndims[n] = x.ndim;
    shapes[n] = const_cast<int64_t*>(x.shape);
    dtypes[n++] = x.dtype;
  }
  void add(const Args& a, int from, int count) {
    for (int i = from; i < from + count; ++i) add(a[i]);
  }
  Args args() { return Args{overflow ? -1 : n, params, ndims, shapes, dtypes}; }
  int run(Entry entry) { return overflow ? kBadArgs : entry(n, params, ndims, shapes, dtypes, nullptr, nullptr); }
};

// A float32 [rows, cols] tensor passed between the steps of a block (left uninitialised: the
// step that outputs it writes every element).
struct Scratch {
  std::unique_ptr<float[]> data;
  int64_t shape[2];
  Scratch(int64_t rows, int64_t cols) : data(new float[static_cast<size_t>(rows * cols)]), shape{rows, cols} {}
  Arg arg() { return Arg{data.get(), 2, shape, "float32"}; }
};

// The inputs of the factored Hadamard: x [.., a * b], left [a, a], right [b, b], all float32.
bool hadamard_args(const Arg& x, const Arg& left, const Arg& right) {
  if (!x.is("float32") || !left.is("float32") || !right.is("float32") || x.ndim < 1 || left.ndim != 2 || right.ndim != 2) return false;
  return left.dim(0) == left.dim(1) && right.dim(0) == right.dim(1) && left.dim(0) * right.dim(0) == x.dim(-1);
}

// Where each linear's weight codes sit among a linear group's inputs (at most three linears).
struct WeightSlots {
  int at[3];
  int n = 0;
};

// The number of inputs a linear group with `plan` takes after its x and residual (-1 for a bad
// plan); records the index among them of each linear's weight codes in `weights` if given.
int group_inputs(const int32_t* plan, WeightSlots* weights = nullptr) {
  const int kind = plan[0], L = plan[1];
  if (kind < 0 || kind >= kLinearKinds || L < 1 || L > 3) return -1;
  int at = 2 * (plan[2] == 1) + 2 * (plan[5] != 0);
  for (int l = 0; l < L; ++l) {
    if (weights) weights->at[weights->n++] = at;
    at += kLinearInputs[kind] + ((plan[4] >> l) & 1);
  }
  return at;
}

bool is_int4(int kind) { return kind == kW4 || kind == kA8W4Static || kind == kA8W4Dynamic; }

// gsk_decoder_layer's meta: its size, where the eps bits and the group sizes start, and the
// mask of linears without zero point inputs.
constexpr int kBlockMeta = 36, kBlockMetaEps = 26, kBlockMetaGroups = 28, kBlockMetaSymmetric = 35;

// `n` float zeros, valid for the life of the calling thread: the zero points of a symmetric
// linear, which a block is not given (a buffer outgrown is kept, so earlier pointers stay valid).
const float* zeros(int64_t n) {
  thread_local std::vector<std::unique_ptr<float[]>> kept;
  thread_local int64_t size = 0;
  if (n > size) {
    size = std::max(n, 2 * size);
    kept.emplace_back(new float[static_cast<size_t>(size)]());
  }
  return kept.back().get();
}

// group_inputs for a group of gsk_decoder_layer, which takes its norm's eps and its int4 group
// sizes from its meta instead, and no zero points for the linears of `symmetric` (bit l: the
// group's linear l): the count of the block's own inputs (weights as group_inputs).
int block_group_inputs(const int32_t* plan, int symmetric, WeightSlots* weights) {
  const int all = group_inputs(plan, weights);
  int dropped = 0;
  for (int l = 0; l < plan[1]; ++l) dropped += (symmetric >> l) & 1;
  return all < 0 ? all : all - (plan[2] == 1) - (is_int4(plan[0]) ? plan[1] : 0) - dropped;
}

// Appends the inputs of a linear group after its x and residual to `step`: the `count` block
// inputs from a[at] on, with `eps` after the norm weight, sizes[l] as linear l's group size and
// zeros as the zero points of the linears of `symmetric` (bit l: linear l). False when they do
// not add up (a plan that disagrees with the inputs).
bool add_block_group_inputs(Step& step, const Args& a, int at, int count, const int32_t* plan, int symmetric, const Arg& eps, const Arg* sizes) {
  const int end = at + count, kind = plan[0];
  auto take = [&] {
    if (at >= end) return false;
    step.add(a[at++]);
    return true;
  };
  if (plan[2] == 1) {
    if (!take()) return false;
    step.add(eps);
  }
  if (plan[5] && !(take() && take())) return false;
  for (int l = 0; l < plan[1]; ++l) {
    for (int i = 0; i < kLinearInputs[kind]; ++i) {
      if (i == 3 && is_int4(kind)) {
        step.add(sizes[l]);
      } else if (i == 2 && ((symmetric >> l) & 1)) {
        const Arg scale = a[at - 1];  // the zero points take the scales' shape
        step.add(Arg{const_cast<float*>(zeros(scale.numel())), scale.ndim, scale.shape, "float32"});
      } else if (!take()) {
        return false;
      }
    }
    if (((plan[4] >> l) & 1) && !take()) return false;
  }
  return at == end;
}

}  // namespace

extern "C" {

const char* gsk_level() { return gsk::kLevel; }

// x [.., K] float, q [N, K] int8, scale [N], zp_neg [N] -> y [.., N] (x's dtype)
int gsk_w8_linear(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void*, void*) {
  return single_linear(Args{nparam, params, ndims, shapes, dtypes}, kW8);
}

// x [.., K] float, q [N, K/2] int8 (two int4 per byte), scale [N, G], zp_neg [N, G],
// group [1] int32 -> y [.., N]
int gsk_w4_linear(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void*, void*) {
  return single_linear(Args{nparam, params, ndims, shapes, dtypes}, kW4);
}

// x [.., K] float, w [N, K] float32 -> y [.., N] (x's dtype): a float linear layer without bias
int gsk_f32_linear(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void*, void*) {
  const Args a{nparam, params, ndims, shapes, dtypes};
  if (a.n != 3 || !is_float(a[0]) || !a[1].is("float32") || a[1].ndim != 2) return kBadArgs;
  const Arg x = a[0], w = a[1];
  const int64_t K = x.dim(-1);
  if (K <= 0 || w.dim(1) != K) return kBadArgs;
  std::vector<float> xs;
  Output y{a[2], {}};
  gsk::f32_linear(as_f32(x, xs), x.numel() / K, gsk::F32{f32(w), w.dim(0), K}, y.data());
  y.finish();
  return kOk;
}

// x, q [N, K] int8, scale [N], zp_neg [N], x_scale [1], x_zp [1], smooth [K] (input scale,
// ones when none) -> y
int gsk_a8w8_static_linear(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void*, void*) {
  return single_linear(Args{nparam, params, ndims, shapes, dtypes}, kA8W8Static);
}

// x, q [N, K] int8, scale [N], zp_neg [N], smooth [K] -> y (activation scale per row, computed inside)
int gsk_a8w8_dynamic_linear(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void*, void*) {
  return single_linear(Args{nparam, params, ndims, shapes, dtypes}, kA8W8Dynamic);
}

// x [.., K], q [N, K/2] (two int4 per byte), scale [N, G], zp_neg [N, G], group [1] int32,
// x_scale [1], x_zp [1], smooth [K] -> y
int gsk_a8w4_static_linear(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void*, void*) {
  return single_linear(Args{nparam, params, ndims, shapes, dtypes}, kA8W4Static);
}

// x, q, scale, zp_neg, group, smooth [K] -> y (activation scale per row, computed inside)
int gsk_a8w4_dynamic_linear(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void*, void*) {
  return single_linear(Args{nparam, params, ndims, shapes, dtypes}, kA8W4Dynamic);
}

// Up to three linears of one kind on one input as one operator: a decode step launches one
// operator where it launched up to six (each launch costs more than a small GEMV computes).
// plan [6] int32: kind (LinearKind), count L (1..3), prologue (0 none, 1 rms_norm of x),
// epilogue (0 none, 1 add a residual, 2 silu_mul of two outputs), bias mask (bit l: linear l
// has a bias), rope (1: rotate-half RoPE on outputs 0 and 1, the queries and keys).
// inputs: plan, x [B * T, K] float32, [norm weight [K], eps [1]] (rms_norm), [cos, sin [T, D]]
// (rope), [residual [B * T, N]] (add), then per linear its kind's inputs after x followed by
// its bias [N] if it has one.
// outputs: y_0 .. y_{L-1} [B * T, N_l] (no epilogue), or one: y_0 + residual (add, L = 1),
// silu(y_0) * y_1 (silu_mul, L = 2). Every step runs the function its own operator runs, in
// the same order (the bias added like MindSpore's BiasAdd), so results are bit-identical.
int gsk_linear_group(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void*, void*) {
  Args a{nparam, params, ndims, shapes, dtypes};
  if (nparam < 3 || !a[0].is("int32") || a[0].numel() != 6 || !a[1].is("float32")) return kBadArgs;
  const int32_t* plan = static_cast<const int32_t*>(a[0].data);
  const int kind = plan[0], L = plan[1], prologue = plan[2], epilogue = plan[3], biases = plan[4], rope = plan[5];
  if (kind < 0 || kind >= kLinearKinds || L < 1 || L > 3 || prologue < 0 || prologue > 1 || epilogue < 0 || epilogue > 2) return kBadArgs;
  if ((epilogue == 1 && L != 1) || (epilogue == 2 && L != 2) || (rope && (epilogue || L < 2))) return kBadArgs;
  const Arg x = a[1];
  const int64_t K = x.dim(-1), M = K > 0 ? x.numel() / K : 0;
  int at = 2;
  const float* in = f32(x);
  std::vector<float> normed;
  if (prologue == 1) {
    const Arg w = a[at++], eps = a[at++];
    if (!w.is("float32") || w.numel() != K || !eps.is("float32") || eps.numel() != 1) return kBadArgs;
    normed.resize(static_cast<size_t>(M * K));
    gsk::rms_norm(in, f32(w), scalar(eps), M, K, normed.data());
    in = normed.data();
  }
  const float *cos = nullptr, *sin = nullptr;
  int64_t T = 0, D = 0;
  if (rope) {
    const Arg c = a[at++], s = a[at++];
    if (!c.is("float32") || !s.is("float32") || c.ndim != 2 || s.numel() != c.numel()) return kBadArgs;
    T = c.dim(0), D = c.dim(1);
    if (T <= 0 || D <= 0 || D % 2 || M % T) return kBadArgs;
    cos = f32(c), sin = f32(s);
  }
  const Arg* residual = nullptr;
  Arg residual_arg{};
  if (epilogue == 1) {
    residual_arg = a[at++];
    residual = &residual_arg;
  }
  const int outputs = epilogue == 0 ? L : 1;
  if (nparam != 2 + (epilogue == 1) + group_inputs(plan) + outputs) return kBadArgs;
  std::vector<float> scratch[2];  // outputs the epilogue (silu_mul) or RoPE reads
  float* results[3];
  for (int l = 0; l < L; ++l) {
    int64_t N = 0;
    float* y;
    float* rotated = nullptr;
    if (epilogue == 2 || (rope && l < 2)) {
      scratch[l].resize(static_cast<size_t>(M * a[at].dim(0)));
      y = scratch[l].data();
    } else {
      const Arg out = a[nparam - outputs + l];
      if (!out.is("float32") || out.numel() != M * a[at].dim(0)) return kBadArgs;
      y = static_cast<float*>(out.data);
    }
    if (rope && l < 2) {
      const Arg out = a[nparam - outputs + l];
      if (!out.is("float32") || out.numel() != M * a[at].dim(0) || a[at].dim(0) % D) return kBadArgs;
      rotated = static_cast<float*>(out.data);
    }
    if (!run_linear(kind, in, M, K, a, at, y, N)) return kBadArgs;
    at += kLinearInputs[kind];
    if ((biases >> l) & 1) {
      const Arg bias = a[at++];
      if (!bias.is("float32") || bias.numel() != N) return kBadArgs;
      const float* b = f32(bias);
      for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < N; ++n) y[m * N + n] += b[n];
    }
    if (rotated) {
      gsk::rotary_tokens(y, cos, sin, M, T, N / D, D, rotated);
      y = rotated;
    }
    results[l] = y;
  }
  const Arg out = a[nparam - 1];
  if (epilogue == 1) {
    if (!residual->is("float32") || residual->numel() != out.numel()) return kBadArgs;
    gsk::add(f32(*residual), results[0], out.numel(), static_cast<float*>(out.data));
  } else if (epilogue == 2) {
    if (scratch[0].size() != scratch[1].size() || !out.is("float32") || static_cast<size_t>(out.numel()) != scratch[0].size()) return kBadArgs;
    gsk::silu_mul(results[0], results[1], out.numel(), static_cast<float*>(out.data));
  }
  return kOk;
}

// q is [B, Hq, T, D]; with a token-major cache k (the preallocated buffer [S, B, Hkv, D]) it may
// also be token rows [B * T, Hq * D], as the q projection gives them (sh.token_rows).
static bool attention_shape(const Arg& q, const Arg& k, const Arg& mask, bool token_major, gsk::AttentionShape& sh) {
  if (!q.is("float32") || k.ndim != 4 || mask.ndim != 2 || !mask.is("float32")) return false;
  const int64_t B = token_major ? k.dim(1) : k.dim(0), H = token_major ? k.dim(2) : k.dim(1), S = token_major ? k.dim(0) : k.dim(2);
  if (token_major && q.ndim == 2) {
    const int64_t D = k.dim(3);
    if (B <= 0 || D <= 0 || q.dim(0) % B != 0 || q.dim(1) % D != 0) return false;
    sh = {B, q.dim(1) / D, H, q.dim(0) / B, S, D, S};
    sh.token_rows = true;
  } else {
    if (q.ndim != 4) return false;
    sh = {q.dim(0), q.dim(1), H, q.dim(2), S, q.dim(3), S};
  }
  return B == sh.B && k.dim(3) == sh.D && sh.Hkv > 0 && sh.Hq % sh.Hkv == 0 && mask.dim(0) == sh.T;
}

// An attention entry takes `inputs` inputs, optionally followed by a float prefix (keys and
// values [1, Hkv, P, D] float32), then its output. Sets sh.P and prefix, and checks that the
// mask has P + S columns.
static bool attention_prefix(const Args& a, int inputs, const Arg& mask, gsk::AttentionShape& sh, gsk::Prefix& prefix) {
  sh.P = 0;
  if (a.n == inputs + 1) return mask.dim(1) == sh.S;
  if (a.n != inputs + 3) return false;
  const Arg pk = a[inputs], pv = a[inputs + 1];
  if (!pk.is("float32") || !pv.is("float32") || pk.ndim != 4 || pv.ndim != 4) return false;
  if (pk.dim(0) != 1 || pk.dim(1) != sh.Hkv || pk.dim(3) != sh.D || pv.numel() != pk.numel() || pv.dim(2) != pk.dim(2)) return false;
  sh.P = pk.dim(2);
  prefix = {f32(pk), f32(pv)};
  return mask.dim(1) == sh.P + sh.S;
}

// Attention over a cache given whole, [B, Hkv, S, D] (grown by concatenation). Every
// attention entry may take a float prefix (prefix keys, prefix values) after its inputs.
// float: q, k, v, mask, softmax_scale -> out [B, T, Hq * D]
int gsk_attention_float(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void*, void*) {
  Args a{nparam, params, ndims, shapes, dtypes};
  gsk::AttentionShape sh;
  gsk::Prefix prefix;
  if (nparam < 6 || !attention_shape(a[0], a[1], a[3], false, sh) || !attention_prefix(a, 5, a[3], sh, prefix)) return kBadArgs;
  if (!a[1].is("float32") || !a[2].is("float32") || a[2].numel() != a[1].numel()) return kBadArgs;
  const gsk::Strides rows = gsk::Strides::batch_major(sh.Hkv, sh.S);
  gsk::KVView k{gsk::CacheKind::kFloat, a[1].data, nullptr, nullptr, rows}, v{gsk::CacheKind::kFloat, a[2].data, nullptr, nullptr, rows};
  gsk::attention(f32(a[0]), k, v, f32(a[3]), scalar(a[4]), sh, static_cast<float*>(a[nparam - 1].data), prefix);
  return kOk;
}

// channel: q, k codes, k_scale [Hkv, 1, D], k_zp, v codes, v_scale, v_zp, mask, softmax_scale -> out
int gsk_attention_channel(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void*, void*) {
  Args a{nparam, params, ndims, shapes, dtypes};
  gsk::AttentionShape sh;
  gsk::Prefix prefix;
  if (nparam < 10 || !attention_shape(a[0], a[1], a[7], false, sh) || !attention_prefix(a, 9, a[7], sh, prefix)) return kBadArgs;
  if (!a[1].is("int8") || !a[4].is("int8")) return kBadArgs;
  const int64_t per = sh.Hkv * sh.D;
  if (a[4].numel() != a[1].numel() || a[2].numel() != per || a[3].numel() != per || a[5].numel() != per || a[6].numel() != per) return kBadArgs;
  const gsk::Strides rows = gsk::Strides::batch_major(sh.Hkv, sh.S);
  gsk::KVView k{gsk::CacheKind::kChannel, a[1].data, f32(a[2]), f32(a[3]), rows};
  gsk::KVView v{gsk::CacheKind::kChannel, a[4].data, f32(a[5]), f32(a[6]), rows};
  gsk::attention(f32(a[0]), k, v, f32(a[7]), scalar(a[8]), sh, static_cast<float*>(a[nparam - 1].data), prefix);
  return kOk;
}

// token: q, k codes, k_scale [B, Hkv, S, 1], v codes, v_scale, mask, softmax_scale -> out
int gsk_attention_token(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void*, void*) {
  Args a{nparam, params, ndims, shapes, dtypes};
  gsk::AttentionShape sh;
  gsk::Prefix prefix;
  if (nparam < 8 || !attention_shape(a[0], a[1], a[5], false, sh) || !attention_prefix(a, 7, a[5], sh, prefix)) return kBadArgs;
  if (!a[1].is("int8") || !a[3].is("int8")) return kBadArgs;
  const int64_t per = sh.B * sh.Hkv * sh.S;
  if (a[3].numel() != a[1].numel() || a[2].numel() != per || a[4].numel() != per) return kBadArgs;
  const gsk::Strides rows = gsk::Strides::batch_major(sh.Hkv, sh.S);
  gsk::KVView k{gsk::CacheKind::kToken, a[1].data, f32(a[2]), nullptr, rows};
  gsk::KVView v{gsk::CacheKind::kToken, a[3].data, f32(a[4]), nullptr, rows};
  gsk::attention(f32(a[0]), k, v, f32(a[5]), scalar(a[6]), sh, static_cast<float*>(a[nparam - 1].data), prefix);
  return kOk;
}

// A preallocated cache: token-major buffers [cap, B, Hkv, D] (token scales [cap, B, Hkv, 1]) and
// `length` [1] int32, the number of rows written. q, k, v are [B, H, T, D], or all three token rows
// [B * T, H * D] as the projections give them (the output is then [B * T, Hq * D]). One call stores
// the new keys and values at rows length .. length + T, attends over rows [0, length + T) with mask
// [T, cap], and advances length: the buffers and length are updated in place (they are the cache
// cell's parameters, which nothing else writes while the network runs). A float prefix may follow
// softmax_scale, as for the other attention entries (the mask is then [T, P + cap]).
static int cache_attention(const Args& a, gsk::CacheKind kind) {
  const bool channel = kind == gsk::CacheKind::kChannel, token = kind == gsk::CacheKind::kToken;
  const int extra = channel ? 2 : (token ? 1 : 0);  // per-side inputs besides the buffer
  const int kbuf = 3, vbuf = kbuf + 1 + extra, len = vbuf + 1 + extra, mask = len + 1, out = a.n - 1;
  if (a.n < mask + 3) return kBadArgs;
  const Arg q = a[0], k = a[1], v = a[2], kb = a[kbuf], vb = a[vbuf], length = a[len];
  gsk::AttentionShape sh;
  gsk::Prefix prefix;
  if (!attention_shape(q, kb, a[mask], true, sh) || !attention_prefix(a, mask + 2, a[mask], sh, prefix)) return kBadArgs;
  if (!length.is("int32") || length.numel() != 1) return kBadArgs;
  if (!k.is("float32") || !v.is("float32") || k.ndim != q.ndim || v.ndim != q.ndim) return kBadArgs;
  if (k.numel() != sh.B * sh.Hkv * sh.T * sh.D || v.numel() != k.numel()) return kBadArgs;
  const char* want = kind == gsk::CacheKind::kFloat ? "float32" : "int8";
  if (!kb.is(want) || !vb.is(want) || vb.numel() != kb.numel()) return kBadArgs;
  int32_t* filled = static_cast<int32_t*>(length.data);
  const int64_t pos = *filled;
  if (pos < 0 || pos + sh.T > sh.S) return kBadArgs;  // the buffer is full
  const float *ks = nullptr, *kz = nullptr, *vs = nullptr, *vz = nullptr;
  if (channel) {
    ks = f32(a[kbuf + 1]), kz = f32(a[kbuf + 2]), vs = f32(a[vbuf + 1]), vz = f32(a[vbuf + 2]);
    const int64_t per = sh.Hkv * sh.D;
    if (a[kbuf + 1].numel() != per || a[kbuf + 2].numel() != per || a[vbuf + 1].numel() != per || a[vbuf + 2].numel() != per) return kBadArgs;
  }
  if (token) {
    ks = f32(a[kbuf + 1]), vs = f32(a[vbuf + 1]);
    const int64_t per = sh.S * sh.B * sh.Hkv;
    if (a[kbuf + 1].numel() != per || a[vbuf + 1].numel() != per) return kBadArgs;
  }
  float* kts = token ? static_cast<float*>(a[kbuf + 1].data) : nullptr;
  float* vts = token ? static_cast<float*>(a[vbuf + 1].data) : nullptr;
  gsk::cache_write(f32(k), kind, kb.data, kts, ks, kz, sh, pos);
  gsk::cache_write(f32(v), kind, vb.data, vts, vs, vz, sh, pos);
  sh.valid = pos + sh.T;
  const gsk::Strides rows = gsk::Strides::token_major(sh.B, sh.Hkv);
  gsk::KVView kv{kind, kb.data, ks, kz, rows}, vv{kind, vb.data, vs, vz, rows};
  gsk::attention(f32(q), kv, vv, f32(a[mask]), scalar(a[mask + 1]), sh, static_cast<float*>(a[out].data), prefix);
  *filled = static_cast<int32_t>(pos + sh.T);
  return kOk;
}

// q, k, v, key buffer, value buffer, length, mask, softmax_scale -> out
int gsk_cache_attention_float(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void*, void*) {
  return cache_attention(Args{nparam, params, ndims, shapes, dtypes}, gsk::CacheKind::kFloat);
}

// q, k, v, key codes, k_scale [Hkv, 1, D], k_zp, value codes, v_scale, v_zp, length, mask, softmax_scale -> out
int gsk_cache_attention_channel(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void*, void*) {
  return cache_attention(Args{nparam, params, ndims, shapes, dtypes}, gsk::CacheKind::kChannel);
}

// q, k, v, key codes, key scales [cap, B, Hkv, 1], value codes, value scales, length, mask, softmax_scale -> out
int gsk_cache_attention_token(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void*, void*) {
  return cache_attention(Args{nparam, params, ndims, shapes, dtypes}, gsk::CacheKind::kToken);
}

// A whole pre-norm decoder block as one operator: a decode step launches one operator per block
// instead of five (on a 2-core AMD EPYC that made a SmolLM2 decode step 1.08-1.15x faster:
// bench/results/decode_fusion.md). It runs the entry points the block would launch, in the same
// order, so its result is bit-identical:
//   q, k, v = linear_group(attention_in plan, x, ...)       norm + q/k/v + RoPE
//   a       = cache_attention(q, k, v, ...)                  stores k and v, attends
//   x1      = linear_group(attention_out plan, a, x, ...)    o_proj + residual
//   h       = linear_group(mlp_in plan, x1, ...)             norm + gate/up + SiLU gate
//   y       = linear_group(mlp_out plan, h, x1, ...)         down_proj + residual
// With an online rotation before down_proj, h is replaced by hadamard(h, left, right) first.
// inputs: meta [36] int32 (the four plans, 6 each, the cache kind: 0 float, 1 channel, 2 token,
// 1 if the block rotates h, the float32 bits of the two norms' eps, then the group size of each
// of q, k, v, o, gate, up, down: 0 for 8-bit weights, then a mask of those seven without zero
// points, bit 0 for q), x [B * T, K] float32, each group's inputs after its x and residual (the
// block supplies those) in the order above except the norm's eps, the int4 group sizes and the
// zero points of the linears the mask names, all zero (meta holds the rest: MindSpore charges
// about 1.6 us per input, and per parameter of the graph, at every launch,
// bench/results/launch_inputs.md), the rotation's left and right factors
// if it has one, then the cache's inputs after q, k, v (buffers, length, mask, softmax scale,
// optional prefix: all the inputs that remain).
// output: y [B * T, K]. The cache buffers and length are updated in place, as by cache_attention.
int gsk_decoder_layer(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void*, void*) {
  Args a{nparam, params, ndims, shapes, dtypes};
  if (nparam < 4 || !a[0].is("int32") || a[0].numel() != kBlockMeta || !a[1].is("float32") || a[1].ndim != 2) return kBadArgs;
  const int32_t* meta = static_cast<const int32_t*>(a[0].data);
  const int cache_kind = meta[24], rotated = meta[25];
  const Arg x = a[1], out = a[nparam - 1];
  const int64_t M = x.dim(0), K = x.dim(1);
  if (cache_kind < 0 || cache_kind > 2 || rotated < 0 || rotated > 1 || !out.is("float32") || out.numel() != M * K) return kBadArgs;
  if (meta[kBlockMetaSymmetric] < 0 || meta[kBlockMetaSymmetric] > 127) return kBadArgs;
  // each group's first linear among q, k, v, o, gate, up, down
  constexpr int kGroupLinear[4] = {0, 3, 4, 6};
  int first[4], count[4], symmetric[4];
  WeightSlots weights[4];
  int at = 2;
  for (int g = 0; g < 4; ++g) {
    first[g] = at;
    symmetric[g] = (meta[kBlockMetaSymmetric] >> kGroupLinear[g]) & 7;
    count[g] = block_group_inputs(meta + 6 * g, symmetric[g], &weights[g]);
    if (count[g] < 0 || at + count[g] > nparam - 1) return kBadArgs;
    at += count[g];
  }
  if (weights[0].n != 3 || weights[1].n != 1 || weights[2].n != 2 || weights[3].n != 1) return kBadArgs;
  const int rotation = at;
  if (rotated) at += 2;
  if (at + 1 > nparam - 1) return kBadArgs;
  const int64_t one = 1, plan_shape = 6;
  auto plan = [&](int g) { return Arg{const_cast<int32_t*>(meta + 6 * g), 1, &plan_shape, "int32"}; };
  float eps[2];
  std::memcpy(eps, meta + kBlockMetaEps, sizeof eps);
  const Arg eps_args[2] = {Arg{&eps[0], 1, &one, "float32"}, Arg{&eps[1], 1, &one, "float32"}};
  Arg sizes[7];
  for (int l = 0; l < 7; ++l) sizes[l] = Arg{const_cast<int32_t*>(meta + kBlockMetaGroups + l), 1, &one, "int32"};
  // Step index of linear l's weight codes: after plan, x (and the residual of groups 1 and 3).
  auto width = [&](const Step& step, int g, int l) { return step.shapes[2 + (g % 2) + weights[g].at[l]][0]; };
  auto inputs = [&](Step& step, int g) {
    return add_block_group_inputs(step, a, first[g], count[g], meta + 6 * g, symmetric[g], eps_args[g / 2], sizes + kGroupLinear[g]);
  };

  Step attention_in;
  attention_in.add(plan(0));
  attention_in.add(x);
  if (!inputs(attention_in, 0)) return kBadArgs;
  Scratch q(M, width(attention_in, 0, 0)), k(M, width(attention_in, 0, 1)), v(M, width(attention_in, 0, 2));
  for (Scratch* s : {&q, &k, &v}) attention_in.add(s->arg());
  if (attention_in.run(gsk_linear_group) != kOk) return kBadArgs;

  Scratch attended(M, q.shape[1]);
  Step cache;
  for (Scratch* s : {&q, &k, &v}) cache.add(s->arg());
  cache.add(a, at, nparam - 1 - at);
  cache.add(attended.arg());
  const gsk::CacheKind kinds[3] = {gsk::CacheKind::kFloat, gsk::CacheKind::kChannel, gsk::CacheKind::kToken};
  if (cache_attention(cache.args(), kinds[cache_kind]) != kOk) return kBadArgs;

  Scratch x1(M, K);
  Step attention_out;
  attention_out.add(plan(1));
  attention_out.add(attended.arg());
  attention_out.add(x);
  if (!inputs(attention_out, 1)) return kBadArgs;
  attention_out.add(x1.arg());
  if (attention_out.run(gsk_linear_group) != kOk) return kBadArgs;

  Step mlp_in;
  mlp_in.add(plan(2));
  mlp_in.add(x1.arg());
  if (!inputs(mlp_in, 2)) return kBadArgs;
  Scratch h(M, width(mlp_in, 2, 0));
  mlp_in.add(h.arg());
  if (mlp_in.run(gsk_linear_group) != kOk) return kBadArgs;
  if (rotated) {
    const Arg left = a[rotation], right = a[rotation + 1];
    if (!hadamard_args(h.arg(), left, right)) return kBadArgs;
    Scratch turned(M, h.shape[1]);
    gsk::hadamard_rows(h.data.get(), f32(left), f32(right), M, left.dim(0), right.dim(0), turned.data.get());
    std::swap(h.data, turned.data);
  }

  Step mlp_out;
  mlp_out.add(plan(3));
  mlp_out.add(h.arg());
  mlp_out.add(x1.arg());
  if (!inputs(mlp_out, 3)) return kBadArgs;
  mlp_out.add(out);
  return mlp_out.run(gsk_linear_group);
}

// x [.., H] float32, w [H] float32, eps [1] float32 -> y [.., H]
int gsk_rms_norm(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void*, void*) {
  Args a{nparam, params, ndims, shapes, dtypes};
  if (nparam != 4 || !a[0].is("float32") || !a[1].is("float32") || !a[2].is("float32")) return kBadArgs;
  const int64_t H = a[0].dim(-1);
  if (a[1].numel() != H || a[2].numel() != 1 || a[3].numel() != a[0].numel()) return kBadArgs;
  gsk::rms_norm(f32(a[0]), f32(a[1]), scalar(a[2]), a[0].numel() / H, H, static_cast<float*>(a[3].data));
  return kOk;
}

// x [B, H, T, D] float32, cos [T, D], sin [T, D] -> y [B, H, T, D]
int gsk_rotary(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void*, void*) {
  Args a{nparam, params, ndims, shapes, dtypes};
  if (nparam != 4 || !a[0].is("float32") || !a[1].is("float32") || !a[2].is("float32") || a[0].ndim != 4) return kBadArgs;
  const int64_t T = a[0].dim(2), D = a[0].dim(3);
  if (D % 2 || a[1].numel() != T * D || a[2].numel() != T * D) return kBadArgs;
  gsk::rotary(f32(a[0]), f32(a[1]), f32(a[2]), a[0].dim(0) * a[0].dim(1), T, D, static_cast<float*>(a[3].data));
  return kOk;
}

// gate, up (same shape) float32 -> silu(gate) * up
int gsk_silu_mul(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void*, void*) {
  Args a{nparam, params, ndims, shapes, dtypes};
  if (nparam != 3 || !a[0].is("float32") || !a[1].is("float32") || a[1].numel() != a[0].numel()) return kBadArgs;
  gsk::silu_mul(f32(a[0]), f32(a[1]), a[0].numel(), static_cast<float*>(a[2].data));
  return kOk;
}

// x [rows, n] float32, left [a, a], right [b, b] float32 with a * b = n -> y [rows, n]
int gsk_hadamard(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void*, void*) {
  Args a{nparam, params, ndims, shapes, dtypes};
  if (nparam != 4 || !hadamard_args(a[0], a[1], a[2]) || a[3].numel() != a[0].numel()) return kBadArgs;
  gsk::hadamard_rows(f32(a[0]), f32(a[1]), f32(a[2]), a[0].numel() / a[0].dim(-1), a[1].dim(0), a[2].dim(0), static_cast<float*>(a[3].data));
  return kOk;
}

// a, b float32 of the same size -> a + b
int gsk_add(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void*, void*) {
  Args a{nparam, params, ndims, shapes, dtypes};
  if (nparam != 3 || !a[0].is("float32") || !a[1].is("float32") || a[1].numel() != a[0].numel() || a[2].numel() != a[0].numel()) return kBadArgs;
  gsk::add(f32(a[0]), f32(a[1]), a[0].numel(), static_cast<float*>(a[2].data));
  return kOk;
}

static bool fake_quant_shape(const Arg& x, const Arg& scale, const Arg& zp, const Arg& bounds, gsk::FakeQuantShape& sh) {
  if (!x.is("float32") || !scale.is("float32") || !zp.is("float32") || !bounds.is("float32") || bounds.numel() != 2 || x.ndim < 1) return false;
  const int64_t n = x.numel(), c = scale.numel();
  if (zp.numel() != c || (c != 1 && c != x.dim(0))) return false;
  sh = {c, c ? n / c : 0, c == 1};
  if (sh.broadcast) sh = {1, n, true};
  return true;
}

// x float32, scale and zp [1] or [x.shape[0], 1, ...], bounds [qmin, qmax] -> fake-quantized x
int gsk_fake_quant(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void*, void*) {
  Args a{nparam, params, ndims, shapes, dtypes};
  gsk::FakeQuantShape sh;
  if (nparam != 5 || !fake_quant_shape(a[0], a[1], a[2], a[3], sh) || a[4].numel() != a[0].numel()) return kBadArgs;
  gsk::fake_quant(f32(a[0]), f32(a[1]), f32(a[2]), f32(a[3])[0], f32(a[3])[1], sh, static_cast<float*>(a[4].data));
  return kOk;
}

// x float32, scale [1], zp [1], bounds [qmin, qmax] -> x fake-quantized as a static input quantizer does
int gsk_static_act_fake_quant(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void*, void*) {
  Args a{nparam, params, ndims, shapes, dtypes};
  if (nparam != 5 || !a[0].is("float32") || !a[1].is("float32") || !a[2].is("float32") || !a[3].is("float32") || a[1].numel() != 1 || a[2].numel() != 1 || a[3].numel() != 2 || a[4].numel() != a[0].numel()) return kBadArgs;
  gsk::static_act_fake_quant(f32(a[0]), a[0].numel(), f32(a[1])[0], f32(a[2])[0], f32(a[3])[0], f32(a[3])[1], static_cast<float*>(a[4].data));
  return kOk;
}

// x, scale, zp, bounds, dout -> dx (straight-through: dout where x quantizes without clipping)
int gsk_fake_quant_grad(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void*, void*) {
  Args a{nparam, params, ndims, shapes, dtypes};
  gsk::FakeQuantShape sh;
  if (nparam != 6 || !fake_quant_shape(a[0], a[1], a[2], a[3], sh) || !a[4].is("float32") || a[4].numel() != a[0].numel() || a[5].numel() != a[0].numel()) return kBadArgs;
  gsk::fake_quant_grad(f32(a[0]), f32(a[1]), f32(a[2]), f32(a[3])[0], f32(a[3])[1], sh, f32(a[4]), static_cast<float*>(a[5].data));
  return kOk;
}

// gsk_int8_layer's geometry: kind, the activation code range, then the convolution's stride,
// dilation, 'same' flag and explicit pads (ignored when 'same', whose pads follow from the
// input size as in MindSpore: the output is ceil(in / stride), the total pad split with the
// smaller half first).
enum Int8LayerMeta { kI8Kind = 0, kI8Qmin, kI8Qmax, kI8StrideH, kI8StrideW, kI8DilH, kI8DilW, kI8Same, kI8PadTop, kI8PadBottom, kI8PadLeft, kI8PadRight, kI8Meta };

// One spatial axis: output size and the pad before it; false when the output would be empty.
static bool conv_axis(int64_t in, int64_t kernel, int64_t stride, int64_t dil, bool same, int64_t pad_before, int64_t pad_after, int64_t& out, int64_t& before) {
  if (kernel <= 0 || stride <= 0 || dil <= 0) return false;
  const int64_t span = dil * (kernel - 1) + 1;
  if (same) {
    out = (in + stride - 1) / stride;
    before = std::max<int64_t>(0, (out - 1) * stride + span - in) / 2;
  } else {
    if (pad_before < 0 || pad_after < 0 || in + pad_before + pad_after < span) return false;
    out = (in + pad_before + pad_after - span) / stride + 1;
    before = pad_before;
  }
  return out > 0;
}

// x float32 [B, C, H, W] (conv) or [.., K] (dense), q int8 [O, C, KH, KW] or [O, K], w_scale [O],
// w_zero [O] (integers: w = (q - w_zero) * w_scale), x_scale [1], x_zero [1], meta [12] int32
// (Int8LayerMeta; kind 0 dense, 1 conv) -> y float32 [B, O, HO, WO] or [.., O]
int gsk_int8_layer(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void*, void*) {
  Args a{nparam, params, ndims, shapes, dtypes};
  if (nparam != 8) return kBadArgs;
  const Arg x = a[0], q = a[1], ws = a[2], wz = a[3], xs = a[4], xz = a[5], meta = a[6];
  if (!x.is("float32") || !q.is("int8") || !ws.is("float32") || !wz.is("float32") || !xs.is("float32") || !xz.is("float32") || xs.numel() != 1 || xz.numel() != 1) return kBadArgs;
  if (!meta.is("int32") || meta.numel() != kI8Meta) return kBadArgs;
  const int32_t* m = static_cast<const int32_t*>(meta.data);
  const bool conv = m[kI8Kind] == 1;
  const int32_t offset = m[kI8Qmax] > 127 ? 128 : 0;
  if ((m[kI8Kind] != 0 && !conv) || m[kI8Qmin] > m[kI8Qmax] || m[kI8Qmin] - offset < -128 || m[kI8Qmax] - offset > 127) return kBadArgs;
  const gsk::ActQuant aq{scalar(xs), scalar(xz), static_cast<float>(m[kI8Qmin]), static_cast<float>(m[kI8Qmax]), offset};
  if (aq.zero < aq.qmin || aq.zero > aq.qmax || aq.zero != std::nearbyint(aq.zero)) return kBadArgs;
  gsk::ConvShape s{};
  if (conv) {
    if (x.ndim != 4 || q.ndim != 4 || q.dim(1) != x.dim(1)) return kBadArgs;
    s = {x.dim(0), x.dim(1), x.dim(2), x.dim(3), q.dim(0), q.dim(2), q.dim(3), m[kI8StrideH], m[kI8StrideW], m[kI8DilH], m[kI8DilW], 0, 0, 0, 0};
    if (!conv_axis(s.H, s.KH, s.stride_h, s.dil_h, m[kI8Same], m[kI8PadTop], m[kI8PadBottom], s.HO, s.pad_top) ||
        !conv_axis(s.W, s.KW, s.stride_w, s.dil_w, m[kI8Same], m[kI8PadLeft], m[kI8PadRight], s.WO, s.pad_left))
      return kBadArgs;
  } else {
    if (x.ndim < 1 || q.ndim != 2 || q.dim(1) != x.dim(-1) || x.dim(-1) <= 0) return kBadArgs;
    s = {x.numel() / x.dim(-1), x.dim(-1), 1, 1, q.dim(0), 1, 1, 1, 1, 1, 1, 0, 0, 1, 1};
  }
  const int64_t N = s.O, K = s.depth();
  if (ws.numel() != N || wz.numel() != N || a[7].numel() != s.rows() * N) return kBadArgs;
  if (s.rows() == 0 || N == 0) return kOk;
  thread_local std::vector<float> zp_neg;
  zp_neg.resize(static_cast<size_t>(N));
  for (int64_t n = 0; n < N; ++n) zp_neg[n] = -f32(wz)[n];
  gsk::int8_conv(f32(x), s, aq, gsk::A8W8{static_cast<const int8_t*>(q.data), f32(ws), zp_neg.data(), N, K}, static_cast<float*>(a[7].data));
  return kOk;
}

// x float32 -> [2]: (min, max) of all of x
int gsk_minmax(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void*, void*) {
  Args a{nparam, params, ndims, shapes, dtypes};
  if (nparam != 2 || !a[0].is("float32") || a[0].numel() == 0 || a[1].numel() != 2) return kBadArgs;
  gsk::minmax(f32(a[0]), 1, a[0].numel(), static_cast<float*>(a[1].data));
  return kOk;
}

// packed uint8 [O, B] (gscore.quant.bitpack: 8 / bits codes a byte, the first in the lowest
// bits, each row padded to whole bytes), levels float32 [2^bits] -> q int8 [O, ...] (k = numel / O
// weights a row): q = rint(levels[code] * (2^bits - 1)), SLB's levels as odd integers. Refused
// (kBadArgs) when bits is not 1, 2 or 4, B does not match k, or a level times 2^bits - 1 is
// outside the int8 range.
int gsk_unpack_levels(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void*, void*) {
  Args a{nparam, params, ndims, shapes, dtypes};
  if (nparam != 3 || !a[0].is("uint8") || a[0].ndim != 2 || !a[1].is("float32") || !a[2].is("int8") || a[2].ndim < 2) return kBadArgs;
  const int64_t levels = a[1].numel(), O = a[0].dim(0), B = a[0].dim(1);
  const int bits = levels == 2 ? 1 : levels == 4 ? 2 : levels == 16 ? 4 : 0;
  if (bits == 0 || a[2].dim(0) != O || O == 0) return kBadArgs;
  const int64_t k = a[2].numel() / O, per_byte = 8 / bits;
  if ((k + per_byte - 1) / per_byte != B) return kBadArgs;
  int8_t table[16];
  const float steps = static_cast<float>(levels - 1);
  for (int64_t c = 0; c < levels; ++c) {
    const float v = std::nearbyint(f32(a[1])[c] * steps);
    if (!(v >= -127.0f && v <= 127.0f)) return kBadArgs;
    table[c] = static_cast<int8_t>(v);
  }
  const uint8_t* packed = static_cast<const uint8_t*>(a[0].data);
  int8_t* q = static_cast<int8_t*>(a[2].data);
  const int mask = (1 << bits) - 1;
  for (int64_t o = 0; o < O; ++o)
    for (int64_t i = 0; i < k; ++i) q[o * k + i] = table[(packed[o * B + i / per_byte] >> (bits * (i % per_byte))) & mask];
  return kOk;
}

// x float32 [C, ...] -> [C, 2]: (min, max) of each leading-axis channel
int gsk_channel_minmax(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void*, void*) {
  Args a{nparam, params, ndims, shapes, dtypes};
  if (nparam != 2 || !a[0].is("float32") || a[0].ndim < 1 || a[0].numel() == 0 || a[1].numel() != 2 * a[0].dim(0)) return kBadArgs;
  gsk::minmax(f32(a[0]), a[0].dim(0), a[0].numel() / a[0].dim(0), static_cast<float*>(a[1].data));
  return kOk;
}

// x [R, C] float32, scale [R] or [1], zp [R] or [1], bounds [qmin, qmax] -> codes [R, C] int8 or
// uint8, nonfinite [1] int32 (count of NaN/Inf in x; the codes are then not valid)
int gsk_quantize(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void*, void*) {
  Args a{nparam, params, ndims, shapes, dtypes};
  if (nparam != 6 || !a[0].is("float32") || a[0].ndim != 2 || !a[1].is("float32") || !a[2].is("float32") || !a[3].is("float32") || a[3].numel() != 2) return kBadArgs;
  const int64_t R = a[0].dim(0), C = a[0].dim(1), n = a[1].numel();
  if ((n != 1 && n != R) || a[2].numel() != n || a[4].numel() != R * C || !a[5].is("int32") || a[5].numel() != 1) return kBadArgs;
  const float qmin = f32(a[3])[0], qmax = f32(a[3])[1];
  int64_t bad;
  if (a[4].is("int8")) {
    bad = gsk::quantize_rows(f32(a[0]), R, C, f32(a[1]), f32(a[2]), n != 1, qmin, qmax, static_cast<int8_t*>(a[4].data));
  } else if (a[4].is("uint8")) {
    bad = gsk::quantize_rows(f32(a[0]), R, C, f32(a[1]), f32(a[2]), n != 1, qmin, qmax, static_cast<uint8_t*>(a[4].data));
  } else {
    return kBadArgs;
  }
  *static_cast<int32_t*>(a[5].data) = static_cast<int32_t>(std::min<int64_t>(bad, INT32_MAX));
  return kOk;
}

// GPTQ's column loop over columns first .. last (gscore.quant.gptq; called through ctypes only,
// since it updates its input `work` in place). Inputs: work [n, out] float64, upper [n, n]
// float64, scale and zero [groups, out] float32, group [n] int64 (each column's grid row, in
// [0, groups)), bounds [qmin, qmax, symmetric (0 or 1)] float32, span [first, last] int64.
// Outputs: codes [n, out] float32, dequant [n, out] float32, errors [n, out] float64 (rows
// first .. last written).
int gsk_gptq_columns(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void*, void*) {
  Args a{nparam, params, ndims, shapes, dtypes};
  if (nparam != 10 || !a[0].is("float64") || a[0].ndim != 2 || !a[1].is("float64") || !a[2].is("float32") || !a[3].is("float32") || a[2].ndim != 2 ||
      !a[4].is("int64") || !a[5].is("float32") || a[5].numel() != 3 || !a[6].is("int64") || a[6].numel() != 2 || !a[7].is("float32") || !a[8].is("float32") ||
      !a[9].is("float64"))
    return kBadArgs;
  const int64_t n = a[0].dim(0), out = a[0].dim(1), groups = a[2].dim(0);
  if (a[1].numel() != n * n || a[2].dim(1) != out || a[3].numel() != groups * out || a[4].numel() != n || a[7].numel() != n * out || a[8].numel() != n * out ||
      a[9].numel() != n * out)
    return kBadArgs;
  const int64_t* span = static_cast<const int64_t*>(a[6].data);
  const int64_t* group = static_cast<const int64_t*>(a[4].data);
  if (span[0] < 0 || span[0] > span[1] || span[1] > n) return kBadArgs;
  for (int64_t j = span[0]; j < span[1]; ++j)
    if (group[j] < 0 || group[j] >= groups) return kBadArgs;
  const float* bounds = f32(a[5]);
  const gsk::GptqGrids grids{f32(a[2]), f32(a[3]), group, bounds[0], bounds[1], bounds[2] != 0.0f};
  gsk::gptq_columns(static_cast<double*>(a[0].data), static_cast<const double*>(a[1].data), n, out, grids, span[0], span[1], static_cast<float*>(a[7].data),
                    static_cast<float*>(a[8].data), static_cast<double*>(a[9].data));
  return kOk;
}

}  // extern "C"
