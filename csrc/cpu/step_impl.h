// The CPU step kernel, compiled once per instruction set by the files that include
// it (MRIDPM_ISA names the variant). Work is cut into tiles of one sample each;
// every loop over a tile is plain enough for the compiler to vectorize.
#pragma once
#include <algorithm>
#include <cstdint>

#include "../elem.h"
#include "../step.h"
#include "vmath.h"

#if defined(__F16C__)
#include <immintrin.h>
#endif

namespace mridpm {
namespace MRIDPM_ISA {

constexpr std::int64_t kTile = 1024;

// A tile of row elements as floats: float32 rows are read in place, half rows converted
// into buf (with F16C when the instruction set has it).
template <int DT>
const float* tile_as_float(const typename Elem<DT>::T* v, float* buf, std::int64_t n) {
  if constexpr (DT == kFloat32) {
    return v;
  } else {
    std::int64_t j = 0;
#if defined(__F16C__)
    if constexpr (DT == kFloat16)
      for (; j + 8 <= n; j += 8)
        _mm256_storeu_ps(buf + j, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(v + j))));
#endif
    for (; j < n; ++j) buf[j] = Elem<DT>::load(v[j]);
    return buf;
  }
}

template <int DT>
void store_tile(const float* src, typename Elem<DT>::T* dst, std::int64_t n) {
  std::int64_t j = 0;
#if defined(__F16C__)
  if constexpr (DT == kFloat16)
    for (; j + 8 <= n; j += 8)
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + j),
                       _mm256_cvtps_ph(_mm256_loadu_ps(src + j), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#endif
  for (; j < n; ++j) dst[j] = Elem<DT>::store(src[j]);
}

// x0 handling, fixed per call: none, the linear x0, or x0 clamped to [lo, hi].
enum X0Mode : int { kNoX0 = 0, kX0 = 1, kX0Clamp = 2 };

// One tile of one sample: the linear parts in a single pass over the elements (K and the x0
// mode fixed at compile time, so the loop vectorizes), then noise, then the stores.
template <int DT, int K, int X0>
void step_tile(const StepArgs& a, std::int64_t b, std::int64_t i0, std::int64_t n) {
  using T = typename Elem<DT>::T;
  const float* p = step_row(a, b);
  alignas(64) float conv[K][DT == kFloat32 ? 1 : kTile];
  alignas(64) float acc[kTile], x0[kTile], u1[kTile], z[kTile];
  const float* v[K];
  float c[K], ak[K];
  for (int k = 0; k < K; ++k) {
    v[k] = tile_as_float<DT>(reinterpret_cast<const T*>(a.in[k].ptr) + b * a.in[k].batch_stride + i0, conv[k], n);
    c[k] = p[k];
    ak[k] = p[K + k];
  }
  const float w = p[2 * K], lo = p[2 * K + 1], hi = p[2 * K + 2], m = p[2 * K + 3], s = p[2 * K + 4];
  for (std::int64_t j = 0; j < n; ++j) {  // summed in the reference's order (no contraction)
    float o = c[0] * v[0][j];
    for (int k = 1; k < K; ++k) o = o + c[k] * v[k][j];
    if constexpr (X0 != kNoX0) {
      float e = ak[0] * v[0][j];
      for (int k = 1; k < K; ++k) e = e + ak[k] * v[k][j];
      if constexpr (X0 == kX0Clamp) {  // selects, not std::min/max branches: NaN stays NaN
        e = e < lo ? lo : e;
        e = e > hi ? hi : e;
      }
      e = m * e;
      x0[j] = e;
      o = o + w * e;
    }
    acc[j] = o;
  }
  if constexpr (X0 != kNoX0)
    if (a.flags & kWriteX0) store_tile<DT>(x0, reinterpret_cast<T*>(a.x0.ptr) + b * a.x0.batch_stride + i0, n);
  if (a.flags & kNoise) {
    philox_normals(a.seed, a.offset + static_cast<std::uint64_t>(b * a.inner + i0), n, u1, z);
    for (std::int64_t j = 0; j < n; ++j) acc[j] = acc[j] + s * z[j];
  }
  store_tile<DT>(acc, reinterpret_cast<T*>(a.out.ptr) + b * a.out.batch_stride + i0, n);
}

template <int DT, int K, int X0>
void step_all(const StepArgs& a) {
  const std::int64_t tiles_per_row = (a.inner + kTile - 1) / kTile;
  const std::int64_t tiles = a.batch * tiles_per_row;
  // below these sizes a fork/join costs more than it saves (noise is ~20x the work of a combination)
  const bool parallel = a.nthreads > 1 && a.batch * a.inner >= ((a.flags & kNoise) ? 8 : 64) * kTile;
#pragma omp parallel for num_threads(a.nthreads) schedule(static) if (parallel)
  for (std::int64_t t = 0; t < tiles; ++t) {
    const std::int64_t b = t / tiles_per_row, i0 = (t % tiles_per_row) * kTile;
    step_tile<DT, K, X0>(a, b, i0, std::min(kTile, a.inner - i0));
  }
}

template <int DT, int K>
void step_k(const StepArgs& a) {
  if (!(a.flags & kHasX0))
    step_all<DT, K, kNoX0>(a);
  else if (a.flags & kClamp)
    step_all<DT, K, kX0Clamp>(a);
  else
    step_all<DT, K, kX0>(a);
}

template <int DT>
void step_dtype(const StepArgs& a) {
  switch (a.K) {
    case 1: step_k<DT, 1>(a); break;
    case 2: step_k<DT, 2>(a); break;
    case 3: step_k<DT, 3>(a); break;
    default: step_k<DT, 4>(a); break;
  }
}

void step(const StepArgs& a) {
  switch (a.dtype) {
    case kFloat32: step_dtype<kFloat32>(a); break;
    case kFloat16: step_dtype<kFloat16>(a); break;
    default: step_dtype<kBFloat16>(a); break;
  }
}

}  // namespace MRIDPM_ISA
}  // namespace mridpm
