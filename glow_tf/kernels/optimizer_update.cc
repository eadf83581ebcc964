// One op that updates every weight of a model: the original's Adamax or Adam
// step, the weight decay and the Polyak average, for N float32 resource
// variables at once. See glow_tf/optim.py (the arithmetic) and
// glow_tf/kernels/__init__.py (when it is used).
//
// Per element, in float32, in the order of TensorFlow's own kernels
// (ResourceApplyAdaMax, ResourceApplyAdam, ResourceApplyGradientDescent),
// which the per-variable path of glow_tf.optim calls, so both paths give the
// same bits:
//
//   w  = weight_decay * w                      (only when weight_decay != 1)
//   m += (g - m) * (1 - beta1)
//   adamax: u = max(beta2 * u, |g|);   w -= lr / (1 - beta1^t) * (m / (u + eps))
//   adam:   u += (g^2 - u) * (1 - beta2);
//           w -= (m * alpha) / (sqrt(u) + eps),
//           alpha = lr * sqrt(1 - beta2^t) / (1 - beta1^t)
//   avg -= (avg - w) * polyak_rate             (only with averages)
//
// and nothing at all where the input `apply` is false (a skipped step).
//
// Floating-point contraction is off in this file: a fused multiply-add would
// round differently from TensorFlow's kernels. Division and square root are
// the IEEE ones (no reciprocal approximations). Variables are locked and
// copied-on-write exactly as TensorFlow's training ops do
// (training_op_helpers.h), so reads of a weight that are still in flight keep
// their value.

#pragma GCC optimize("fp-contract=off")

#define EIGEN_USE_THREADS

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/resource_var.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/resource_mgr.h"
#include "tensorflow/core/kernels/training_op_helpers.h"

namespace {

using ::tensorflow::OpInputList;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using CPUDevice = ::Eigen::ThreadPoolDevice;

struct Hyper {
  bool adam;
  bool decay;
  float weight_decay;
  float one_minus_beta1;
  float beta2;
  float one_minus_beta2;
  float epsilon;
  float step;  // adamax: lr / (1 - beta1^t); adam: alpha
  float polyak_rate;
};

// One contiguous piece of one variable.
struct Span {
  float* w;
  float* m;
  float* u;
  float* avg;  // nullptr without averages
  const float* g;
  int64_t n;
};

// One pass over a span, 8 floats at a time, then the rest one by one; the
// same operations in the same order either way.
template <bool kAdam, bool kDecay, bool kAverage>
void UpdateSpan(const Hyper& h, const Span& s) {
  float* __restrict w = s.w;
  float* __restrict m = s.m;
  float* __restrict u = s.u;
  float* __restrict a = s.avg;
  const float* __restrict g = s.g;
  const __m256 wd = _mm256_set1_ps(h.weight_decay), c1 = _mm256_set1_ps(h.one_minus_beta1),
               b2 = _mm256_set1_ps(h.beta2), c2 = _mm256_set1_ps(h.one_minus_beta2),
               eps = _mm256_set1_ps(h.epsilon), step = _mm256_set1_ps(h.step),
               rate = _mm256_set1_ps(h.polyak_rate),
               sign = _mm256_castsi256_ps(_mm256_set1_epi32(0x80000000));
  int64_t i = 0;
  for (; i + 8 <= s.n; i += 8) {
    const __m256 gi = _mm256_loadu_ps(g + i);
    __m256 wi = _mm256_loadu_ps(w + i), mi = _mm256_loadu_ps(m + i), ui = _mm256_loadu_ps(u + i);
    if (kDecay) wi = _mm256_mul_ps(wi, wd);
    mi = _mm256_add_ps(mi, _mm256_mul_ps(_mm256_sub_ps(gi, mi), c1));
    if (kAdam) {
      ui = _mm256_add_ps(ui, _mm256_mul_ps(_mm256_sub_ps(_mm256_mul_ps(gi, gi), ui), c2));
      wi = _mm256_sub_ps(wi, _mm256_div_ps(_mm256_mul_ps(mi, step),
                                           _mm256_add_ps(_mm256_sqrt_ps(ui), eps)));
    } else {
      ui = _mm256_max_ps(_mm256_andnot_ps(sign, gi), _mm256_mul_ps(b2, ui));
      wi = _mm256_sub_ps(wi, _mm256_mul_ps(step, _mm256_div_ps(mi, _mm256_add_ps(ui, eps))));
    }
    _mm256_storeu_ps(m + i, mi);
    _mm256_storeu_ps(u + i, ui);
    _mm256_storeu_ps(w + i, wi);
    if (kAverage) {
      const __m256 ai = _mm256_loadu_ps(a + i);
      _mm256_storeu_ps(a + i, _mm256_sub_ps(ai, _mm256_mul_ps(_mm256_sub_ps(ai, wi), rate)));
    }
  }
  for (; i < s.n; ++i) {
    float wi = w[i], mi = m[i], ui = u[i];
    if (kDecay) wi = wi * h.weight_decay;
    mi = mi + (g[i] - mi) * h.one_minus_beta1;
    if (kAdam) {
      ui = ui + (g[i] * g[i] - ui) * h.one_minus_beta2;
      wi = wi - (mi * h.step) / (std::sqrt(ui) + h.epsilon);
    } else {
      ui = std::max(h.beta2 * ui, std::fabs(g[i]));
      wi = wi - h.step * (mi / (ui + h.epsilon));
    }
    m[i] = mi;
    u[i] = ui;
    w[i] = wi;
    if (kAverage) a[i] = a[i] - (a[i] - wi) * h.polyak_rate;
  }
}

using SpanFn = void (*)(const Hyper&, const Span&);

template <bool kAdam>
SpanFn PickSpanFn(bool decay, bool average) {
  if (decay) return average ? UpdateSpan<kAdam, true, true> : UpdateSpan<kAdam, true, false>;
  return average ? UpdateSpan<kAdam, false, true> : UpdateSpan<kAdam, false, false>;
}

// Pieces of at most this many floats are the units of the thread pool.
constexpr int64_t kSpanFloats = 1 << 13;

class GlowOptimizerUpdateOp : public OpKernel {
 public:
  explicit GlowOptimizerUpdateOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    std::string kind;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("kind", &kind));
    adam_ = kind == "adam";
    OP_REQUIRES_OK(ctx, ctx->GetAttr("N", &n_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("M", &n_avg_));
    OP_REQUIRES(ctx, n_avg_ == 0 || n_avg_ == n_,
                absl::InvalidArgumentError("GlowOptimizerUpdate: avg must hold 0 or N variables"));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& apply = ctx->input(4 * n_ + n_avg_ + 8);
    OP_REQUIRES(ctx, apply.NumElements() == 1,
                absl::InvalidArgumentError("GlowOptimizerUpdate: apply must be a scalar"));
    if (!apply.flat<bool>()(0)) return;  // a skipped step: nothing changes
    Hyper h;
    OP_REQUIRES_OK(ctx, ReadHyper(ctx, &h));
    // Inputs: var[N], m[N], u[N], avg[M], grad[N], then the scalars.
    // Each variable is looked up once and locked (in address order, each
    // mutex once) for the whole update, then copied if a read still holds
    // its buffer: TensorFlow's training ops' protocol, without their
    // quadratic search for duplicate mutexes.
    const int n_vars = 3 * n_ + n_avg_;
    std::vector<::tensorflow::core::RefCountPtr<::tensorflow::Var>> vars(n_vars);
    std::vector<::tsl::mutex*> mutexes(n_vars);
    for (int i = 0; i < n_vars; ++i) {
      OP_REQUIRES_OK(ctx, ::tensorflow::LookupResource(ctx, ::tensorflow::HandleFromInput(ctx, i),
                                                       &vars[i]));
      mutexes[i] = vars[i]->mu();
    }
    std::sort(mutexes.begin(), mutexes.end());
    mutexes.erase(std::unique(mutexes.begin(), mutexes.end()), mutexes.end());
    std::vector<::tsl::mutex_lock> locks;
    locks.reserve(mutexes.size());
    for (::tsl::mutex* mu : mutexes) locks.emplace_back(*mu);
    std::vector<Tensor> tensors(n_vars);
    for (int i = 0; i < n_vars; ++i) {
      Tensor* t = vars[i]->tensor();
      OP_REQUIRES(ctx, vars[i]->is_initialized && t->dtype() == ::tensorflow::DT_FLOAT,
                  absl::InvalidArgumentError(
                      "GlowOptimizerUpdate: input " + std::to_string(i) +
                      " is not an initialised float32 variable"));
      OP_REQUIRES_OK(ctx, (::tensorflow::PrepareToUpdateVariable<CPUDevice, float>(
                              ctx, t, vars[i]->copy_on_read_mode.load())));
      tensors[i] = *t;
    }
    std::vector<Span> spans;
    for (int v = 0; v < n_; ++v) {
      const Tensor& grad = ctx->input(n_vars + v);
      for (int slot = 0; slot < 3 + (n_avg_ ? 1 : 0); ++slot) {
        const Tensor& t = tensors[slot * n_ + v];
        OP_REQUIRES(ctx, t.dtype() == ::tensorflow::DT_FLOAT && t.shape() == grad.shape(),
                    absl::InvalidArgumentError(
                        "GlowOptimizerUpdate: variable " + std::to_string(v) + " (slot " +
                        std::to_string(slot) + ") is " + t.shape().DebugString() +
                        " where its gradient is " + grad.shape().DebugString()));
      }
      const int64_t size = grad.NumElements();
      for (int64_t begin = 0; begin < size; begin += kSpanFloats) {
        const int64_t end = std::min(size, begin + kSpanFloats);
        auto at = [&](int slot) { return tensors[slot * n_ + v].flat<float>().data() + begin; };
        spans.push_back({at(0), at(1), at(2), n_avg_ ? at(3) : nullptr,
                         grad.flat<float>().data() + begin, end - begin});
      }
    }
    const SpanFn update = h.adam ? PickSpanFn<true>(h.decay, n_avg_ > 0)
                                 : PickSpanFn<false>(h.decay, n_avg_ > 0);
    auto work = [&h, &spans, update](int64_t first, int64_t last) {
      for (int64_t i = first; i < last; ++i) update(h, spans[i]);
    };
    auto* pool = ctx->device()->tensorflow_cpu_worker_threads()->workers;
    // About 10 bytes moved per float and step: memory-bound, so a span is
    // worth a thread when it is long.
    pool->ParallelFor(static_cast<int64_t>(spans.size()), kSpanFloats * 40, work);
  }

 private:
  absl::Status ReadHyper(OpKernelContext* ctx, Hyper* h) {
    const int first = 4 * n_ + n_avg_;
    const char* names[] = {"lr", "beta1_power", "beta2_power", "beta1", "beta2",
                           "epsilon", "polyak_rate", "weight_decay"};
    float x[8];
    for (int i = 0; i < 8; ++i) {
      const Tensor& t = ctx->input(first + i);
      if (t.NumElements() != 1) {
        return absl::InvalidArgumentError(std::string("GlowOptimizerUpdate: ") + names[i] +
                                          " must be a scalar, got " + t.shape().DebugString());
      }
      x[i] = t.flat<float>()(0);
    }
    const float lr = x[0], beta1_power = x[1], beta2_power = x[2], beta1 = x[3], beta2 = x[4];
    h->adam = adam_;
    h->weight_decay = x[7];
    h->decay = x[7] != 1.f;
    h->one_minus_beta1 = 1.f - beta1;
    h->beta2 = beta2;
    h->one_minus_beta2 = 1.f - beta2;
    h->epsilon = x[5];
    // The scalar expressions of TensorFlow's ApplyAdam and ApplyAdaMax.
    h->step = adam_ ? lr * std::sqrt(1.f - beta2_power) / (1.f - beta1_power)
                    : lr / (1.f - beta1_power);
    h->polyak_rate = x[6];
    return absl::OkStatus();
  }

  bool adam_ = false;
  int n_ = 0;
  int n_avg_ = 0;
};

}  // namespace

REGISTER_OP("GlowOptimizerUpdate")
    .Input("var: N * resource")
    .Input("m: N * resource")
    .Input("u: N * resource")
    .Input("avg: M * resource")
    .Input("grad: N * float")
    .Input("lr: float")
    .Input("beta1_power: float")
    .Input("beta2_power: float")
    .Input("beta1: float")
    .Input("beta2: float")
    .Input("epsilon: float")
    .Input("polyak_rate: float")
    .Input("weight_decay: float")
    .Input("apply: bool")
    .Attr("N: int >= 1")
    .Attr("M: int >= 0")
    .Attr("kind: {'adamax', 'adam'}")
    .SetIsStateful()
    .SetShapeFn(::tensorflow::shape_inference::NoOutputs)
    .Doc("The original's Adamax/Adam step with weight decay and Polyak averages, for N variables.");

REGISTER_KERNEL_BUILDER(Name("GlowOptimizerUpdate").Device(::tensorflow::DEVICE_CPU),
                        GlowOptimizerUpdateOp);
