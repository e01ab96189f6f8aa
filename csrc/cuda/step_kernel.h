// The CUDA fused step's kernel body and launch shape, one source for the device (step.cu wraps the
// body in a __global__) and for the host emulation (emulate.cpp loops the grid on the CPU). Each
// thread owns 4 consecutive elements of one sample, read with one vector access when every row is
// aligned (VEC); tiles of kStepThreads * 4 elements go to blocks in a grid-stride loop.
#pragma once
#include <cstdint>

#include "../philox.h"
#include "../step.h"
#include "portable.h"

namespace mridpm {

constexpr int kStepThreads = 256;
constexpr int kStepVec = 4;
constexpr std::int64_t kStepTile = kStepThreads * kStepVec;

template <int DT, bool VEC>
MRIDPM_HD void step_load4(const Buffer& buf, std::int64_t b, std::int64_t i, std::int64_t n, float* v) {
  using E = Elem<DT>;
  const auto* p = reinterpret_cast<const typename E::T*>(buf.ptr) + b * buf.batch_stride + i;
  if (VEC) {
    typename E::T e[kStepVec];
    ld4(p, e);
    for (int j = 0; j < kStepVec; ++j) v[j] = E::load(e[j]);
  } else {
    for (int j = 0; j < kStepVec; ++j) v[j] = i + j < n ? E::load(ld(p + j)) : 0.0f;
  }
}

template <int DT, bool VEC>
MRIDPM_HD void step_store4(const Buffer& buf, std::int64_t b, std::int64_t i, std::int64_t n, const float* v) {
  using E = Elem<DT>;
  auto* p = reinterpret_cast<typename E::T*>(buf.ptr) + b * buf.batch_stride + i;
  if (VEC) {
    typename E::T e[kStepVec];
    for (int j = 0; j < kStepVec; ++j) e[j] = E::store(v[j]);
    st4(p, e);
  } else {
    for (int j = 0; j < kStepVec; ++j)
      if (i + j < n) st(p + j, E::store(v[j]));
  }
}

// One thread's whole share of the launch: tiles blockIdx.x, blockIdx.x + gridDim.x, ...
template <int DT, bool VEC>
MRIDPM_HD void step_body(const ThreadCtx& ctx, const StepArgs& a, std::int64_t tiles_per_row, std::int64_t tiles) {
  const int K = a.K;
  std::uint64_t seed, offset;
  step_rng(a, &seed, &offset);  // once per thread, not per tile
  for (std::int64_t t = ctx.blockIdx.x; t < tiles; t += ctx.gridDim.x) {
    const std::int64_t b = t / tiles_per_row;
    const std::int64_t i = (t % tiles_per_row) * kStepTile + static_cast<std::int64_t>(ctx.threadIdx.x) * kStepVec;
    if (i >= a.inner) continue;
    const float* p = step_row(a, b);  // __grid_constant__: a.uniform is read in place
    float acc[kStepVec], x0[kStepVec], v[kStepVec];
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
    for (int k = 0; k < 4; ++k) {
      if (k >= K) break;
      step_load4<DT, VEC>(a.in[k], b, i, a.inner, v);
      const float c = step_param(a, p, k), ak = step_param(a, p, K + k);
      for (int e = 0; e < kStepVec; ++e) {
        acc[e] = k == 0 ? c * v[e] : acc[e] + c * v[e];
        x0[e] = k == 0 ? ak * v[e] : x0[e] + ak * v[e];
      }
    }
    if (a.flags & kHasX0) {
      const float w = step_param(a, p, 2 * K), lo = step_param(a, p, 2 * K + 1);
      const float hi = step_param(a, p, 2 * K + 2), m = step_param(a, p, 2 * K + 3);
      const bool clamp = a.flags & kClamp;
      for (int e = 0; e < kStepVec; ++e) {
        float t0 = x0[e];
        if (clamp) {  // selects, not fminf/fmaxf (which return the other operand for NaN): NaN stays NaN
          t0 = t0 < lo ? lo : t0;
          t0 = t0 > hi ? hi : t0;
        }
        x0[e] = m * t0;
        acc[e] = acc[e] + w * x0[e];
      }
      if (a.flags & kWriteX0) step_store4<DT, VEC>(a.x0, b, i, a.inner, x0);
    }
    if (a.flags & kNoise) {
      const float s = step_param(a, p, 2 * K + 4);
      const std::uint64_t base = offset + static_cast<std::uint64_t>(b * a.inner + i);
      for (int e = 0; e < kStepVec; ++e) acc[e] = acc[e] + s * philox_normal(seed, base + e);
    }
    step_store4<DT, VEC>(a.out, b, i, a.inner, acc);
  }
}

// The launch of one call: grid blocks of kStepThreads over `tiles` tiles, and whether every row is
// aligned for vector accesses. grid_cap: kGridCap on the device; smaller in the emulation's tests.
struct StepLaunch {
  std::int64_t tiles_per_row = 0, tiles = 0, grid = 0;
  bool vec = false;
};

inline bool vec_aligned(const Buffer& buf, int bytes, int elem) {
  return buf.ptr % bytes == 0 && (buf.batch_stride * elem) % bytes == 0;
}

inline StepLaunch step_launch(const StepArgs& a, std::int64_t grid_cap) {
  StepLaunch l;
  l.tiles_per_row = (a.inner + kStepTile - 1) / kStepTile;
  l.tiles = a.batch * l.tiles_per_row;
  l.grid = l.tiles < grid_cap ? l.tiles : grid_cap;
  const int elem = a.dtype == kFloat32 ? 4 : 2, bytes = elem * kStepVec;
  bool vec = a.inner % kStepVec == 0 && vec_aligned(a.out, bytes, elem);
  if (a.flags & kWriteX0) vec = vec && vec_aligned(a.x0, bytes, elem);
  for (int k = 0; k < a.K; ++k) vec = vec && vec_aligned(a.in[k], bytes, elem);
  l.vec = vec;
  return l;
}

}  // namespace mridpm
