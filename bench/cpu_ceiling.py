"""The CPU's ceiling for a Glow step: its multiply-add peak against what TensorFlow's kernels reach.

Prints, on this CPU:

1. the float32 peak of its fused multiply-add units, from a small C program
   (built here with g++, as `glow_tf.kernels` is, with AVX2 + FMA) that
   runs independent 8-float (AVX2) and 16-float (AVX-512, where the CPU has
   it) FMAs on 1 thread and on every core;
2. what a plain register-tiled matrix product in the same program (6 rows x
   16 columns of accumulators, OpenMP over row blocks, outside TensorFlow)
   reaches on the coupling network's 1x1 layer at configuration (a)'s first
   level, `[8192, 128] x [128, 128]`;
3. TensorFlow's own ops at configuration (a)'s shapes (batch 32, width 128):
   the 1x1 layer's matmul forward and both gradients at the three levels,
   a wide 3x3 convolution (128 -> 128) for comparison, and the thin 3x3
   layers (first convolution 6 -> 128, zero convolution 128 -> 12) at the
   first level; each as GFLOP/s and as a share of the peak.

  python bench/cpu_ceiling.py
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

C_SOURCE = r"""
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}

/* Independent FMAs, 12 chains per thread: GFLOP/s over all threads. */
static double peak_avx2(int threads) {
  const long n = 100000000;
  double t = now();
  float sink = 0;
#pragma omp parallel num_threads(threads) reduction(+ : sink)
  {
    __m256 a[12], b = _mm256_set1_ps(0.999f), c = _mm256_set1_ps(1e-4f);
    for (int i = 0; i < 12; ++i) a[i] = _mm256_set1_ps(1e-3f * i);
    for (long k = 0; k < n / 12; ++k)
#pragma GCC unroll 12
      for (int i = 0; i < 12; ++i) a[i] = _mm256_fmadd_ps(a[i], b, c);
    for (int i = 0; i < 12; ++i) sink += a[i][0];
  }
  t = now() - t;
  if (sink == 12345.f) puts("");
  return 16.0 * n * threads / t / 1e9;
}

__attribute__((target("avx512f"))) static double peak_avx512(int threads) {
  const long n = 100000000;
  double t = now();
  float sink = 0;
#pragma omp parallel num_threads(threads) reduction(+ : sink)
  {
    __m512 a[12], b = _mm512_set1_ps(0.999f), c = _mm512_set1_ps(1e-4f);
    for (int i = 0; i < 12; ++i) a[i] = _mm512_set1_ps(1e-3f * i);
    for (long k = 0; k < n / 12; ++k)
#pragma GCC unroll 12
      for (int i = 0; i < 12; ++i) a[i] = _mm512_fmadd_ps(a[i], b, c);
    for (int i = 0; i < 12; ++i) sink += a[i][0];
  }
  t = now() - t;
  if (sink == 12345.f) puts("");
  return 32.0 * n * threads / t / 1e9;
}

/* c[6 rows, 16 columns] = a[6, K] @ panel[K][16]: 12 accumulators, named so
   that they stay in registers. */
#define ROW(r)                                          \
  x = _mm256_broadcast_ss(a + (r) * K + k);             \
  lo##r = _mm256_fmadd_ps(x, w0, lo##r);                \
  hi##r = _mm256_fmadd_ps(x, w1, hi##r);
#define STORE(r)                                        \
  _mm256_storeu_ps(c + (r) * M, lo##r);                 \
  _mm256_storeu_ps(c + (r) * M + 8, hi##r);
static void tile(const float* a, int K, const float* p, float* c, int M) {
  __m256 lo0 = _mm256_setzero_ps(), lo1 = lo0, lo2 = lo0, lo3 = lo0, lo4 = lo0, lo5 = lo0;
  __m256 hi0 = lo0, hi1 = lo0, hi2 = lo0, hi3 = lo0, hi4 = lo0, hi5 = lo0, x;
  for (int k = 0; k < K; ++k) {
    __m256 w0 = _mm256_load_ps(p + 16 * k), w1 = _mm256_load_ps(p + 16 * k + 8);
    ROW(0) ROW(1) ROW(2) ROW(3) ROW(4) ROW(5)
  }
  STORE(0) STORE(1) STORE(2) STORE(3) STORE(4) STORE(5)
}

/* [N, K] x [K, M] with the panels packed once per call: GFLOP/s, and the largest error. */
static double gemm(int threads, int N, int K, int M, double* err) {
  float *a = aligned_alloc(64, 4L * N * K), *b = aligned_alloc(64, 4L * K * M);
  float *p = aligned_alloc(64, 4L * K * M), *c = aligned_alloc(64, 4L * N * M);
  for (long i = 0; i < (long)N * K; ++i) a[i] = (rand() % 1000) / 1000.f - .5f;
  for (long i = 0; i < (long)K * M; ++i) b[i] = (rand() % 1000) / 1000.f - .5f;
  const int reps = 50, rb = 96;
  double best = 1e9;
  for (int round = 0; round < 3; ++round) {
    double t = now();
    for (int rep = 0; rep < reps; ++rep) {
      for (int j = 0; j < M / 16; ++j)
        for (int k = 0; k < K; ++k) memcpy(p + (j * K + k) * 16, b + k * M + 16 * j, 64);
#pragma omp parallel for num_threads(threads) schedule(static)
      for (int i0 = 0; i0 < N; i0 += rb)
        for (int j = 0; j < M / 16; ++j)
          for (int i = i0; i + 6 <= i0 + rb && i + 6 <= N; i += 6)
            tile(a + (long)i * K, K, p + j * K * 16, c + (long)i * M + 16 * j, M);
    }
    t = (now() - t) / reps;
    if (t < best) best = t;
  }
  *err = 0;
  for (int i = 0; i < 12; ++i)
    for (int j = 0; j < M; ++j) {
      double s = 0;
      for (int k = 0; k < K; ++k) s += a[i * K + k] * b[k * M + j];
      double e = s > c[i * M + j] ? s - c[i * M + j] : c[i * M + j] - s;
      if (e > *err) *err = e;
    }
  free(a); free(b); free(p); free(c);
  return 2.0 * N * K * M / best / 1e9;
}

int main(int argc, char** argv) {
  int cores = atoi(argv[1]);
  double err;
  peak_avx2(cores);  /* warm-up: the first parallel region measured ~30% low */
  printf("avx2 %.1f %.1f\n", peak_avx2(1), peak_avx2(cores));
  if (__builtin_cpu_supports("avx512f")) printf("avx512 %.1f %.1f\n", peak_avx512(1), peak_avx512(cores));
  double one = gemm(1, 8190, 128, 128, &err), all = gemm(cores, 8190, 128, 128, &err);
  printf("gemm %.1f %.1f %.2g\n", one, all, err);
  return 0;
}
"""


def native_figures(cores):
  """{"avx2": (1 thread, all), ["avx512": ...,] "gemm": (1, all, error)} from the C program."""
  cxx = os.environ.get("CXX", "g++")
  if shutil.which(cxx) is None:
    raise SystemExit(f"cpu_ceiling.py: no C++ compiler {cxx!r} (install g++ or set CXX)")
  with tempfile.TemporaryDirectory() as tmp:
    src, exe = os.path.join(tmp, "peak.c"), os.path.join(tmp, "peak")
    with open(src, "w") as f:
      f.write(C_SOURCE)
    subprocess.run([cxx, "-x", "c", "-O3", "-mavx2", "-mfma", "-fopenmp", src, "-o", exe],
                   check=True)
    out = subprocess.run([exe, str(cores)], check=True, capture_output=True, text=True).stdout
  return {line.split()[0]: tuple(float(v) for v in line.split()[1:]) for line in out.splitlines()}


def tf_figures():
  """[(what, FLOPs, seconds)] of TensorFlow's ops at configuration (a)'s shapes."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  import numpy as np
  import tensorflow as tf

  def timed(fn, repeats=40):
    fn(), fn()
    times = []
    for _ in range(5):
      start = time.perf_counter()
      for _ in range(repeats):
        fn()
      times.append((time.perf_counter() - start) / repeats)
    return float(np.median(times))

  rows = []
  for level, side in enumerate((16, 8, 4), 1):
    n = 32 * side * side
    x, w = tf.random.normal([n, 128]), tf.random.normal([128, 128])
    dy, b = tf.random.normal([n, 128]), tf.random.normal([128])
    flops = 2 * n * 128 * 128
    rows += [
        (f"1x1 layer, level {level}: relu(x W + b)", flops,
         timed(tf.function(lambda: tf.nn.relu(tf.matmul(x, w) + b)))),
        (f"1x1 layer, level {level}: dy W^T", flops,
         timed(tf.function(lambda: tf.matmul(dy, w, transpose_b=True)))),
        (f"1x1 layer, level {level}: x^T dy", flops,
         timed(tf.function(lambda: tf.matmul(x, dy, transpose_a=True)))),
    ]
  conv = lambda cin, cout: (tf.random.normal([32, 16, 16, cin]), tf.random.normal([3, 3, cin, cout]))
  for cin, cout, what in ((128, 128, "wide 3x3 conv 128 -> 128"),
                          (6, 128, "first conv 6 -> 128"), (128, 12, "zero conv 128 -> 12")):
    xi, k = conv(cin, cout)
    rows.append((f"{what}, level 1", 2 * 8192 * 9 * cin * cout,
                 timed(tf.function(lambda: tf.nn.conv2d(xi, k, 1, "SAME")))))
  return rows


def main():
  import vs_tfp_glow
  cores = os.cpu_count() or 1
  print(f"CPU: {vs_tfp_glow.cpu_description()}")
  native = native_figures(cores)
  peak = max(v[1] for k, v in native.items() if k != "gemm")
  print(f"FMA peak, float32 (GFLOP/s, 1 thread / {cores} threads):")
  for isa in ("avx2", "avx512"):
    if isa in native:
      print(f"  {isa:7s} {native[isa][0]:7.1f} / {native[isa][1]:7.1f}")
  g = native["gemm"]
  print(f"hand-written 6x16 GEMM [8190, 128] x [128, 128], outside TensorFlow: "
        f"{g[0]:.1f} / {g[1]:.1f} GFLOP/s ({g[1] / peak:.0%} of peak; max error {g[2]:.1g})")
  print("TensorFlow's ops at configuration (a)'s shapes (batch 32, width 128):")
  print(f"  {'op':46s} {'ms':>7s} {'GFLOP/s':>8s} {'of peak':>8s}")
  for what, flops, seconds in tf_figures():
    print(f"  {what:46s} {seconds * 1e3:7.3f} {flops / seconds / 1e9:8.1f} "
          f"{flops / seconds / 1e9 / peak:8.0%}")


if __name__ == "__main__":
  main()
