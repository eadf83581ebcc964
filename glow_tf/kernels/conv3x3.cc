// Direct 3x3 stride-1 "SAME" convolution, NHWC, float32, for x86-64 CPUs with
// AVX2 + FMA. See glow_tf/kernels/__init__.py for why and when it is used.
//
// y[n, h, w, o] = sum_{i, j, c} x[n, h + i - 1, w + j - 1, c] * k[i, j, c, o]
// with zeros outside the image: the same function as
// tf.nn.conv2d(x, k, 1, "SAME").
//
// Layout of the work: one image at a time per thread (images are the units
// handed to TensorFlow's intra-op thread pool). The image is copied into a
// zero-bordered scratch [H + 2, W + 2, C] (it stays in L2), the kernel is
// repacked once per call as [9, C, O8] with O8 = O rounded up to 8 (zeros in
// the padding), and each register tile of P output pixels (along a row) by
// V vectors of 8 output channels is accumulated over 9 taps x C channels with
// one broadcast of an input value and V fused multiply-adds per pixel.

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace {

using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
namespace shape_inference = ::tensorflow::shape_inference;

// The base of the ops here: refuses CPUs without AVX2 and FMA. A second line
// of defence only: this file is compiled with -mavx2 -mfma, so code that runs
// before this check may already use those instructions; glow_tf.kernels reads
// the CPU's flags before it loads the library at all.
class AvxOpKernel : public OpKernel {
 public:
  explicit AvxOpKernel(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES(ctx, __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"),
                absl::FailedPreconditionError(
                    std::string(ctx->def().op()) +
                    " needs a CPU with AVX2 and FMA; set GLOW_TF_KERNELS=0 to use "
                    "TensorFlow's ops instead."));
  }
};

// The forward and filter ops index their scratch images with int32 offsets.
inline bool FitsInt32(int64_t floats) { return floats < (int64_t{1} << 31); }

// Floats of packed kernel one sweep keeps in use (half of a 32 KiB L1).
constexpr int64_t kL1Floats = 4096;

// Lanes [0, n) set, for a masked store of the last, partial vector.
inline __m256i LaneMask(int n) {
  alignas(32) int32_t m[8];
  for (int i = 0; i < 8; ++i) m[i] = i < n ? -1 : 0;
  return _mm256_load_si256(reinterpret_cast<const __m256i*>(m));
}

// The last vector of a row of output channels: whole (`last` == 8) or the
// first `last` lanes. AMD CPUs run masked stores slowly, so whole vectors use
// plain loads and stores.
inline __m256 LoadLast(const float* p, int last, __m256i mask) {
  return last == 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, mask);
}
inline void StoreLast(float* p, int last, __m256i mask, __m256 v) {
  if (last == 8) {
    _mm256_storeu_ps(p, v);
  } else {
    _mm256_maskstore_ps(p, mask, v);
  }
}

// A register tile of P rows (stride ld) x V vectors: read from t (or zeros),
// and written back to t. The last vector holds `last` lanes.
template <int P, int V>
inline void LoadTile(__m256 (&acc)[P][V], const float* t, int64_t ld, int last, __m256i mask,
                     bool accumulate) {
#pragma GCC unroll 16
  for (int p = 0; p < P; ++p) {
#pragma GCC unroll 16
    for (int v = 0; v < V - 1; ++v)
      acc[p][v] = accumulate ? _mm256_loadu_ps(t + p * ld + 8 * v) : _mm256_setzero_ps();
    acc[p][V - 1] = accumulate ? LoadLast(t + p * ld + 8 * (V - 1), last, mask)
                               : _mm256_setzero_ps();
  }
}

template <int P, int V>
inline void StoreTile(const __m256 (&acc)[P][V], float* t, int64_t ld, int last, __m256i mask) {
#pragma GCC unroll 16
  for (int p = 0; p < P; ++p) {
#pragma GCC unroll 16
    for (int v = 0; v < V - 1; ++v) _mm256_storeu_ps(t + p * ld + 8 * v, acc[p][v]);
    StoreLast(t + p * ld + 8 * (V - 1), last, mask, acc[p][V - 1]);
  }
}

// One register tile: P output pixels x V * 8 output channels.
//   xp: scratch at the top-left tap of the tile's first pixel.
//   xoff: [K] offsets in the scratch of (tap, channel) from xp, for the
//     group of K / C taps being summed.
//   C: input channels (the scratch's pixel stride).
//   w: packed kernel at the tile's first output channel; o8: its row stride.
//   y: output at the tile's first pixel and channel; o: output row stride.
//   last: valid lanes of the tile's last vector (8 when it is full).
// What a sweep over the last group of taps adds before storing: the bias map
// (at the tile's first pixel and channel, same strides as y) and the ReLU.
struct Epilogue {
  const float* bias;  // nullptr before the last group of taps
  bool relu;
};

template <int P, int V>
inline void Tile(const float* xp, const int32_t* xoff, int64_t K, int64_t C, const float* w,
                 int64_t o8, float* y, int64_t o, int last, bool accumulate, Epilogue e) {
  const __m256i mask = LaneMask(last);
  __m256 acc[P][V];
  LoadTile<P, V>(acc, y, o, last, mask, accumulate);
  for (int64_t t = 0; t < K; ++t) {
    const float* xt = xp + xoff[t];
    const float* wt = w + t * o8;
    __m256 wv[V];
#pragma GCC unroll 16
    for (int v = 0; v < V; ++v) wv[v] = _mm256_loadu_ps(wt + 8 * v);
#pragma GCC unroll 16
    for (int p = 0; p < P; ++p) {
      const __m256 b = _mm256_broadcast_ss(xt + p * C);
#pragma GCC unroll 16
      for (int v = 0; v < V; ++v) acc[p][v] = _mm256_fmadd_ps(b, wv[v], acc[p][v]);
    }
  }
  if (e.bias != nullptr) {
#pragma GCC unroll 16
    for (int p = 0; p < P; ++p) {
#pragma GCC unroll 16
      for (int v = 0; v < V - 1; ++v)
        acc[p][v] = _mm256_add_ps(acc[p][v], _mm256_loadu_ps(e.bias + p * o + 8 * v));
      acc[p][V - 1] = _mm256_add_ps(acc[p][V - 1],
                                    LoadLast(e.bias + p * o + 8 * (V - 1), last, mask));
    }
  }
  if (e.relu) {
    const __m256 zero = _mm256_setzero_ps();
#pragma GCC unroll 16
    for (int p = 0; p < P; ++p)
#pragma GCC unroll 16
      for (int v = 0; v < V; ++v) acc[p][v] = _mm256_max_ps(acc[p][v], zero);
  }
  StoreTile<P, V>(acc, y, o, last, mask);
}

// All pixels of one image for V vectors of output channels starting at o0.
// The 9 taps are taken in groups whose slice of the packed kernel fits in L1,
// each group sweeping the whole image (adding to what the previous left); the
// last group adds the bias map [H, W, O] (or nothing) and applies the ReLU.
template <int P, int V>
void Sweep(const float* scratch, const int32_t* xoff, int64_t H, int64_t W, int64_t C,
           const float* wpack, int64_t o8, const float* bias, bool relu, float* y,
           int64_t O, int64_t o0) {
  const int64_t rs = (W + 2) * C;
  const int last = static_cast<int>(std::min<int64_t>(8, O - (o0 + 8 * (V - 1))));
  const int64_t taps = std::max<int64_t>(1, std::min<int64_t>(9, kL1Floats / (C * 8 * V)));
  for (int64_t t0 = 0; t0 < 9; t0 += taps) {
    const int64_t k0 = t0 * C, k = (std::min<int64_t>(9, t0 + taps) - t0) * C;
    const bool final_group = t0 + taps >= 9;
    const float* w = wpack + k0 * o8 + o0;
    for (int64_t h = 0; h < H; ++h) {
      const float* xrow = scratch + h * rs;
      float* yrow = y + h * W * O + o0;
      auto at = [&](int64_t x) {
        return Epilogue{final_group && bias != nullptr ? bias + (h * W + x) * O + o0 : nullptr,
                        final_group && relu};
      };
      int64_t x = 0;
      for (; x + P <= W; x += P)
        Tile<P, V>(xrow + x * C, xoff + k0, k, C, w, o8, yrow + x * O, O, last, t0 > 0, at(x));
      for (; x + 4 <= W; x += 4)
        Tile<4, V>(xrow + x * C, xoff + k0, k, C, w, o8, yrow + x * O, O, last, t0 > 0, at(x));
      for (; x < W; ++x)
        Tile<1, V>(xrow + x * C, xoff + k0, k, C, w, o8, yrow + x * O, O, last, t0 > 0, at(x));
    }
  }
}

// ---------------------------------------------------------------------------
// The kernel's gradient dk[i, j, c, o] = sum_{n, h, w} x[n, h + i - 1, w + j - 1, c]
// * dy[n, h, w, o] (zero outside the image) for few input channels: the first
// convolution of a coupling network, where TensorFlow's Conv2DBackpropFilter
// is slow. Rows r = (3 i + j) C + c of dk are tiled P at a time with V
// vectors of o; each tile is accumulated over every pixel of an image with one
// broadcast of x and V fused multiply-adds per row and pixel. Images are split
// into one chunk per thread, each summing its own partial dk.

template <int P, int V>
inline void FilterTile(const float* scratch, const int32_t* xoff, int64_t H, int64_t W,
                       int64_t C, const float* dy, int64_t O, float* dk, int last,
                       bool accumulate) {
  const __m256i mask = LaneMask(last);
  __m256 acc[P][V];
  LoadTile<P, V>(acc, dk, O, last, mask, accumulate);
  int32_t off[P];
#pragma GCC unroll 16
  for (int p = 0; p < P; ++p) off[p] = xoff[p];
  for (int64_t h = 0; h < H; ++h) {
    const float* srow = scratch + h * (W + 2) * C;
    const float* drow = dy + h * W * O;
    for (int64_t w = 0; w < W; ++w) {
      const float* sp = srow + w * C;
      const float* dp = drow + w * O;
      __m256 g[V];
#pragma GCC unroll 16
      for (int v = 0; v < V - 1; ++v) g[v] = _mm256_loadu_ps(dp + 8 * v);
      g[V - 1] = LoadLast(dp + 8 * (V - 1), last, mask);
#pragma GCC unroll 16
      for (int p = 0; p < P; ++p) {
        const __m256 b = _mm256_broadcast_ss(sp + off[p]);
#pragma GCC unroll 16
        for (int v = 0; v < V; ++v) acc[p][v] = _mm256_fmadd_ps(b, g[v], acc[p][v]);
      }
    }
  }
  StoreTile<P, V>(acc, dk, O, last, mask);
}

// All rows of dk [9 C, O] for V vectors of o from o0, over one image.
template <int P, int V>
void FilterColumns(const float* scratch, const int32_t* xoff, int64_t H, int64_t W, int64_t C,
                   const float* dy, int64_t O, float* dk, int64_t o0, bool accumulate) {
  const int last = static_cast<int>(std::min<int64_t>(8, O - (o0 + 8 * (V - 1))));
  const int64_t rows = 9 * C;
  int64_t r = 0;
  for (; r + P <= rows; r += P)
    FilterTile<P, V>(scratch, xoff + r, H, W, C, dy + o0, O, dk + r * O + o0, last, accumulate);
  for (; r < rows; ++r)
    FilterTile<1, V>(scratch, xoff + r, H, W, C, dy + o0, O, dk + r * O + o0, last, accumulate);
}

class GlowConv3x3BackpropFilterOp : public AvxOpKernel {
 public:
  using AvxOpKernel::AvxOpKernel;

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& dy = ctx->input(1);
    OP_REQUIRES(ctx, x.dims() == 4 && dy.dims() == 4 && x.dim_size(0) == dy.dim_size(0) &&
                         x.dim_size(1) == dy.dim_size(1) && x.dim_size(2) == dy.dim_size(2),
                absl::InvalidArgumentError(
                    "x and dy must be [batch, height, width, channels] and "
                    "[batch, height, width, out]"));
    const int64_t N = x.dim_size(0), H = x.dim_size(1), W = x.dim_size(2), C = x.dim_size(3);
    const int64_t O = dy.dim_size(3);
    Tensor* dk = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({3, 3, C, O}), &dk));
    float* dkd = dk->flat<float>().data();
    if (dk->NumElements() == 0) return;
    if (x.NumElements() == 0) {
      std::fill_n(dkd, dk->NumElements(), 0.f);
      return;
    }
    OP_REQUIRES(ctx, FitsInt32((H + 2) * (W + 2) * C),
                absl::InvalidArgumentError("image too large for GlowConv3x3BackpropFilter"));
    std::vector<int32_t> xoff(9 * C);
    for (int64_t i = 0; i < 3; ++i)
      for (int64_t j = 0; j < 3; ++j)
        for (int64_t c = 0; c < C; ++c)
          xoff[(3 * i + j) * C + c] = static_cast<int32_t>((i * (W + 2) + j) * C + c);
    const float* xd = x.flat<float>().data();
    const float* dyd = dy.flat<float>().data();
    const int64_t nv = (O + 7) / 8;
    auto* pool = ctx->device()->tensorflow_cpu_worker_threads()->workers;
    const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(pool->NumThreads(), N));
    const int64_t per = (N + chunks - 1) / chunks;
    std::vector<float> partial((chunks - 1) * 9 * C * O);
    auto work = [&](int64_t begin, int64_t end) {
      std::vector<float> scratch((H + 2) * (W + 2) * C, 0.f);
      for (int64_t t = begin; t < end; ++t) {
        float* out = t == 0 ? dkd : partial.data() + (t - 1) * 9 * C * O;
        const int64_t n0 = std::min(N, t * per), n1 = std::min(N, (t + 1) * per);
        if (n0 == n1) std::fill_n(out, 9 * C * O, 0.f);
        for (int64_t n = n0; n < n1; ++n) {
          for (int64_t h = 0; h < H; ++h)
            std::memcpy(&scratch[((h + 1) * (W + 2) + 1) * C], xd + ((n * H + h) * W) * C,
                        W * C * sizeof(float));
          const float* dyn = dyd + n * H * W * O;
          const bool acc = n > n0;
          int64_t v = 0;
          for (; v + 3 <= nv; v += 3)
            FilterColumns<4, 3>(scratch.data(), xoff.data(), H, W, C, dyn, O, out, 8 * v, acc);
          if (nv - v == 2)
            FilterColumns<6, 2>(scratch.data(), xoff.data(), H, W, C, dyn, O, out, 8 * v, acc);
          if (nv - v == 1)
            FilterColumns<12, 1>(scratch.data(), xoff.data(), H, W, C, dyn, O, out, 8 * v, acc);
        }
      }
    };
    pool->ParallelFor(chunks, 1 << 30, work);
    for (int64_t t = 1; t < chunks; ++t) {
      const float* p = partial.data() + (t - 1) * 9 * C * O;
      for (int64_t i = 0; i < 9 * C * O; ++i) dkd[i] += p[i];
    }
  }
};

// ---------------------------------------------------------------------------
// The input's gradient dx[n, h, w, c] = sum_{i, j, o} dy[n, h + 1 - i, w + 1 - j, o]
// * k[i, j, c, o] (zero outside the image) for few input channels c and many
// o: the first convolution of a coupling network, where TensorFlow's
// Conv2DBackpropInput is slow. The sum runs over o, so the vectors run along
// o: each register tile of P pixels x Q input channels holds one vector of
// partial sums per pair, accumulated over 9 taps x O / 8 vectors of dy and k
// (both contiguous in o), then summed across its 8 lanes.

inline float HorizontalSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// P pixels x Q channels of dx from the zero-bordered dy scratch [H + 2, W + 2, O8]
// and the packed kernel kp[9][C][O8] (taps reversed, o padded to O8 with zeros).
//   sp: scratch at the tile's first pixel (tap (0, 0)); rs: scratch row stride.
template <int P, int Q>
inline void InputTile(const float* sp, int64_t rs, int64_t o8, const float* kp, int64_t C,
                      float* dx, int64_t ldx) {
  __m256 acc[P][Q];
#pragma GCC unroll 16
  for (int p = 0; p < P; ++p)
#pragma GCC unroll 16
    for (int q = 0; q < Q; ++q) acc[p][q] = _mm256_setzero_ps();
  for (int t = 0; t < 9; ++t) {
    const float* st = sp + (t / 3) * rs + (t % 3) * o8;
    const float* kt = kp + t * C * o8;
    for (int64_t o = 0; o < o8; o += 8) {
      __m256 g[P];
#pragma GCC unroll 16
      for (int p = 0; p < P; ++p) g[p] = _mm256_loadu_ps(st + p * o8 + o);
#pragma GCC unroll 16
      for (int q = 0; q < Q; ++q) {
        const __m256 w = _mm256_loadu_ps(kt + q * o8 + o);
#pragma GCC unroll 16
        for (int p = 0; p < P; ++p) acc[p][q] = _mm256_fmadd_ps(g[p], w, acc[p][q]);
      }
    }
  }
#pragma GCC unroll 16
  for (int p = 0; p < P; ++p)
#pragma GCC unroll 16
    for (int q = 0; q < Q; ++q) dx[p * ldx + q] = HorizontalSum(acc[p][q]);
}

// Channels [c0, c0 + Q) of dx for every pixel of one image.
template <int P, int Q>
void InputSweep(const float* scratch, int64_t H, int64_t W, int64_t o8, const float* kp,
                int64_t C, float* dx, int64_t c0) {
  const int64_t rs = (W + 2) * o8;
  for (int64_t h = 0; h < H; ++h) {
    int64_t w = 0;
    for (; w + P <= W; w += P)
      InputTile<P, Q>(scratch + h * rs + w * o8, rs, o8, kp + c0 * o8, C,
                      dx + (h * W + w) * C + c0, C);
    for (; w < W; ++w)
      InputTile<1, Q>(scratch + h * rs + w * o8, rs, o8, kp + c0 * o8, C,
                      dx + (h * W + w) * C + c0, C);
  }
}

class GlowConv3x3BackpropInputOp : public AvxOpKernel {
 public:
  using AvxOpKernel::AvxOpKernel;

  void Compute(OpKernelContext* ctx) override {
    const Tensor& dy = ctx->input(0);
    const Tensor& k = ctx->input(1);
    OP_REQUIRES(ctx, dy.dims() == 4,
                absl::InvalidArgumentError("dy must be [batch, height, width, out]"));
    const int64_t N = dy.dim_size(0), H = dy.dim_size(1), W = dy.dim_size(2), O = dy.dim_size(3);
    OP_REQUIRES(ctx, k.dims() == 4 && k.dim_size(0) == 3 && k.dim_size(1) == 3 &&
                         k.dim_size(3) == O,
                absl::InvalidArgumentError("kernel must be [3, 3, channels, out]"));
    const int64_t C = k.dim_size(2);
    const int64_t o8 = (O + 7) / 8 * 8;
    Tensor* dx = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({N, H, W, C}), &dx));
    if (dx->NumElements() == 0) return;
    if (O == 0) {  // no output channels: nothing flows back
      std::fill_n(dx->flat<float>().data(), dx->NumElements(), 0.f);
      return;
    }
    // kp[t][c][o] = k[2 - i, 2 - j, c, o] for t = 3 i + j, o padded with zeros.
    std::vector<float> kp(9 * C * o8, 0.f);
    const float* kd = k.flat<float>().data();
    for (int64_t t = 0; t < 9; ++t)
      for (int64_t c = 0; c < C; ++c)
        std::memcpy(&kp[(t * C + c) * o8], kd + ((8 - t) * C + c) * O, O * sizeof(float));
    const float* dyd = dy.flat<float>().data();
    float* dxd = dx->flat<float>().data();
    auto work = [&](int64_t begin, int64_t end) {
      std::vector<float> scratch((H + 2) * (W + 2) * o8, 0.f);
      for (int64_t n = begin; n < end; ++n) {
        for (int64_t h = 0; h < H; ++h)
          for (int64_t w = 0; w < W; ++w)
            std::memcpy(&scratch[((h + 1) * (W + 2) + w + 1) * o8],
                        dyd + ((n * H + h) * W + w) * O, O * sizeof(float));
        float* dxn = dxd + n * H * W * C;
        int64_t c = 0;
        for (; c + 6 <= C; c += 6) InputSweep<2, 6>(scratch.data(), H, W, o8, kp.data(), C, dxn, c);
        for (; c + 3 <= C; c += 3) InputSweep<4, 3>(scratch.data(), H, W, o8, kp.data(), C, dxn, c);
        for (; c < C; ++c) InputSweep<8, 1>(scratch.data(), H, W, o8, kp.data(), C, dxn, c);
      }
    };
    auto* pool = ctx->device()->tensorflow_cpu_worker_threads()->workers;
    pool->ParallelFor(N, 2 * H * W * 9 * C * o8, work);
  }
};

class GlowConv3x3Op : public AvxOpKernel {
 public:
  explicit GlowConv3x3Op(OpKernelConstruction* ctx) : AvxOpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("relu", &relu_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& k = ctx->input(1);
    const Tensor& bias = ctx->input(2);
    OP_REQUIRES(ctx, x.dims() == 4,
                absl::InvalidArgumentError("x must be [batch, height, width, channels]"));
    const int64_t N = x.dim_size(0), H = x.dim_size(1), W = x.dim_size(2), C = x.dim_size(3);
    OP_REQUIRES(ctx, k.dims() == 4 && k.dim_size(0) == 3 && k.dim_size(1) == 3 &&
                         k.dim_size(2) == C,
                absl::InvalidArgumentError("kernel must be [3, 3, channels, out]"));
    const int64_t O = k.dim_size(3);
    OP_REQUIRES(ctx, bias.dims() == 3 && bias.dim_size(0) == H && bias.dim_size(1) == W &&
                         bias.dim_size(2) == O,
                absl::InvalidArgumentError("bias must be [height, width, out]"));
    Tensor* y = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({N, H, W, O}), &y));
    if (y->NumElements() == 0) return;

    const int64_t o8 = (O + 7) / 8 * 8;
    const int64_t cp = std::max<int64_t>(C, 1);  // a zero-channel input sees a zero kernel
    OP_REQUIRES(ctx, FitsInt32((H + 2) * (W + 2) * cp),
                absl::InvalidArgumentError("image too large for GlowConv3x3"));
    std::vector<float> wpack(9 * cp * o8, 0.f);
    const float* kd = k.flat<float>().data();
    for (int64_t t = 0; t < 9 * C; ++t) std::memcpy(&wpack[t * o8], kd + t * O, O * sizeof(float));
    // Offset in the scratch of tap (i, j), channel c, from the tap (0, 0) of a pixel.
    std::vector<int32_t> xoff(9 * cp);
    for (int64_t i = 0; i < 3; ++i)
      for (int64_t j = 0; j < 3; ++j)
        for (int64_t c = 0; c < cp; ++c)
          xoff[(3 * i + j) * cp + c] = static_cast<int32_t>((i * (W + 2) + j) * cp + c);
    const float* xd = x.flat<float>().data();
    const float* bd = bias.flat<float>().data();
    float* yd = y->flat<float>().data();
    const int64_t nv = o8 / 8;
    const bool relu = relu_;

    auto work = [&](int64_t begin, int64_t end) {
      std::vector<float> scratch((H + 2) * (W + 2) * cp, 0.f);
      const float* s = scratch.data();
      for (int64_t n = begin; n < end; ++n) {
        for (int64_t h = 0; h < H; ++h)
          std::memcpy(&scratch[((h + 1) * (W + 2) + 1) * cp], xd + ((n * H + h) * W) * C,
                      W * C * sizeof(float));
        float* yn = yd + n * H * W * O;
        int64_t v = 0;
        for (; v + 3 <= nv; v += 3)
          Sweep<4, 3>(s, xoff.data(), H, W, cp, wpack.data(), o8, bd, relu, yn, O, 8 * v);
        if (nv - v == 2)
          Sweep<6, 2>(s, xoff.data(), H, W, cp, wpack.data(), o8, bd, relu, yn, O, 8 * v);
        if (nv - v == 1)
          Sweep<12, 1>(s, xoff.data(), H, W, cp, wpack.data(), o8, bd, relu, yn, O, 8 * v);
      }
    };
    auto* pool = ctx->device()->tensorflow_cpu_worker_threads()->workers;
    pool->ParallelFor(N, 2 * H * W * 9 * cp * O, work);
  }

 private:
  bool relu_;
};

}  // namespace

REGISTER_OP("GlowConv3x3")
    .Input("x: float")
    .Input("kernel: float")
    .Input("bias: float")
    .Output("y: float")
    .Attr("relu: bool = false")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      shape_inference::ShapeHandle x, k, b, y;
      shape_inference::DimensionHandle d;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &x));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 4, &k));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 3, &b));
      TF_RETURN_IF_ERROR(c->WithValue(c->Dim(k, 0), 3, &d));
      TF_RETURN_IF_ERROR(c->WithValue(c->Dim(k, 1), 3, &d));
      TF_RETURN_IF_ERROR(c->Merge(c->Dim(x, 3), c->Dim(k, 2), &d));
      TF_RETURN_IF_ERROR(c->Merge(c->Dim(x, 1), c->Dim(b, 0), &d));
      TF_RETURN_IF_ERROR(c->Merge(c->Dim(x, 2), c->Dim(b, 1), &d));
      TF_RETURN_IF_ERROR(c->Merge(c->Dim(k, 3), c->Dim(b, 2), &d));
      TF_RETURN_IF_ERROR(c->ReplaceDim(x, 3, c->Dim(k, 3), &y));
      c->set_output(0, y);
      return absl::OkStatus();
    })
    .Doc(R"doc(
y = conv2d(x, kernel, strides=1, padding="SAME") + bias, then max(y, 0) if relu.
x: [batch, height, width, channels]. kernel: [3, 3, channels, out].
bias: [height, width, out], added to every image. float32, CPUs with AVX2 + FMA.
)doc");

REGISTER_KERNEL_BUILDER(Name("GlowConv3x3").Device(::tensorflow::DEVICE_CPU), GlowConv3x3Op);

REGISTER_OP("GlowConv3x3BackpropFilter")
    .Input("x: float")
    .Input("dy: float")
    .Output("dk: float")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      shape_inference::ShapeHandle x, dy;
      shape_inference::DimensionHandle d;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &x));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 4, &dy));
      for (int i = 0; i < 3; ++i) TF_RETURN_IF_ERROR(c->Merge(c->Dim(x, i), c->Dim(dy, i), &d));
      c->set_output(0, c->MakeShape({3, 3, c->Dim(x, 3), c->Dim(dy, 3)}));
      return absl::OkStatus();
    })
    .Doc(R"doc(
The gradient of conv2d(x, k, strides=1, padding="SAME") with respect to the 3x3
kernel k, for the output gradient dy. x: [batch, height, width, channels],
dy: [batch, height, width, out], dk: [3, 3, channels, out]. float32, AVX2 + FMA.
)doc");

REGISTER_KERNEL_BUILDER(Name("GlowConv3x3BackpropFilter").Device(::tensorflow::DEVICE_CPU),
                        GlowConv3x3BackpropFilterOp);

REGISTER_OP("GlowConv3x3BackpropInput")
    .Input("dy: float")
    .Input("kernel: float")
    .Output("dx: float")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      shape_inference::ShapeHandle dy, k, dx;
      shape_inference::DimensionHandle d;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &dy));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 4, &k));
      TF_RETURN_IF_ERROR(c->WithValue(c->Dim(k, 0), 3, &d));
      TF_RETURN_IF_ERROR(c->WithValue(c->Dim(k, 1), 3, &d));
      TF_RETURN_IF_ERROR(c->Merge(c->Dim(dy, 3), c->Dim(k, 3), &d));
      TF_RETURN_IF_ERROR(c->ReplaceDim(dy, 3, c->Dim(k, 2), &dx));
      c->set_output(0, dx);
      return absl::OkStatus();
    })
    .Doc(R"doc(
The gradient of conv2d(x, kernel, strides=1, padding="SAME") with respect to x
for the output gradient dy. dy: [batch, height, width, out], kernel:
[3, 3, channels, out], dx: [batch, height, width, channels]. float32, AVX2 + FMA.
)doc");

REGISTER_KERNEL_BUILDER(Name("GlowConv3x3BackpropInput").Device(::tensorflow::DEVICE_CPU),
                        GlowConv3x3BackpropInputOp);
