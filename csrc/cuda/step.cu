// CUDA fused sampler step: each thread owns 4 consecutive elements of one sample,
// read with one vector load when every row is aligned; noise is made in registers.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <string>

#include "../philox.h"
#include "../step.h"

namespace mridpm {
namespace {

thread_local std::string g_last_error;

template <int DT> struct DevIO;
template <> struct DevIO<kFloat32> {
  using T = float;
  using V = float4;
  __device__ static float load(T v) { return v; }
  __device__ static T store(float v) { return v; }
};
template <> struct DevIO<kFloat16> {
  using T = __half;
  using V = uint2;
  __device__ static float load(T v) { return __half2float(v); }
  __device__ static T store(float v) { return __float2half_rn(v); }
};
template <> struct DevIO<kBFloat16> {
  using T = __nv_bfloat16;
  using V = uint2;
  __device__ static float load(T v) { return __bfloat162float(v); }
  __device__ static T store(float v) { return __float2bfloat16_rn(v); }
};

constexpr int kThreads = 256;
constexpr int kVec = 4;
constexpr std::int64_t kTileElems = kThreads * kVec;

__device__ __forceinline__ float philox_normal(std::uint64_t seed, std::uint64_t counter) {
  const Words2 w = philox_2x(seed, counter);
  const float u1 = fmaxf(1.0e-7f, uint_to_uniform(w.a));
  const float th = 6.283185307179586f * uint_to_uniform(w.b);
  return sqrtf(-2.0f * logf(u1)) * cosf(th);
}

template <int DT, bool VEC>
__device__ __forceinline__ void load4(const Buffer& buf, std::int64_t b, std::int64_t i, std::int64_t n, float* v) {
  using IO = DevIO<DT>;
  const auto* p = reinterpret_cast<const typename IO::T*>(buf.ptr) + b * buf.batch_stride + i;
  if (VEC) {
    union { typename IO::V vec; typename IO::T e[kVec]; } u;
    u.vec = *reinterpret_cast<const typename IO::V*>(p);
#pragma unroll
    for (int e = 0; e < kVec; ++e) v[e] = IO::load(u.e[e]);
  } else {
#pragma unroll
    for (int e = 0; e < kVec; ++e) v[e] = i + e < n ? IO::load(p[e]) : 0.0f;
  }
}

template <int DT, bool VEC>
__device__ __forceinline__ void store4(const Buffer& buf, std::int64_t b, std::int64_t i, std::int64_t n, const float* v) {
  using IO = DevIO<DT>;
  auto* p = reinterpret_cast<typename IO::T*>(buf.ptr) + b * buf.batch_stride + i;
  if (VEC) {
    union { typename IO::V vec; typename IO::T e[kVec]; } u;
#pragma unroll
    for (int e = 0; e < kVec; ++e) u.e[e] = IO::store(v[e]);
    *reinterpret_cast<typename IO::V*>(p) = u.vec;
  } else {
#pragma unroll
    for (int e = 0; e < kVec; ++e)
      if (i + e < n) p[e] = IO::store(v[e]);
  }
}

template <int DT, bool VEC>
__global__ void __launch_bounds__(kThreads)
    step_kernel(const __grid_constant__ StepArgs a, std::int64_t tiles_per_row, std::int64_t tiles) {
  const int K = a.K;
  std::uint64_t seed, offset;
  step_rng(a, &seed, &offset);  // once per thread, not per tile
  for (std::int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    const std::int64_t b = t / tiles_per_row;
    const std::int64_t i = (t % tiles_per_row) * kTileElems + threadIdx.x * kVec;
    if (i >= a.inner) continue;
    const float* p = step_row(a, b);  // __grid_constant__: a.uniform is read in place
    float acc[kVec], x0[kVec], v[kVec];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      if (k >= K) break;
      load4<DT, VEC>(a.in[k], b, i, a.inner, v);
      const float c = p[k], ak = p[K + k];
#pragma unroll
      for (int e = 0; e < kVec; ++e) {
        acc[e] = k == 0 ? c * v[e] : acc[e] + c * v[e];
        x0[e] = k == 0 ? ak * v[e] : x0[e] + ak * v[e];
      }
    }
    if (a.flags & kHasX0) {
      const float w = p[2 * K], lo = p[2 * K + 1], hi = p[2 * K + 2], m = p[2 * K + 3];
      const bool clamp = a.flags & kClamp;
#pragma unroll
      for (int e = 0; e < kVec; ++e) {
        float t0 = x0[e];
        if (clamp) t0 = fminf(fmaxf(t0, lo), hi);
        x0[e] = m * t0;
        acc[e] = acc[e] + w * x0[e];
      }
      if (a.flags & kWriteX0) store4<DT, VEC>(a.x0, b, i, a.inner, x0);
    }
    if (a.flags & kNoise) {
      const float s = p[2 * K + 4];
      const std::uint64_t base = offset + static_cast<std::uint64_t>(b * a.inner + i);
#pragma unroll
      for (int e = 0; e < kVec; ++e) acc[e] = acc[e] + s * philox_normal(seed, base + e);
    }
    store4<DT, VEC>(a.out, b, i, a.inner, acc);
  }
}

bool aligned(const Buffer& buf, int bytes, int elem) {
  return buf.ptr % bytes == 0 && (buf.batch_stride * elem) % bytes == 0;
}

template <int DT>
void launch(const StepArgs& a, cudaStream_t stream) {
  const std::int64_t tiles_per_row = (a.inner + kTileElems - 1) / kTileElems;
  const std::int64_t tiles = a.batch * tiles_per_row;
  const unsigned grid = static_cast<unsigned>(tiles < (1 << 20) ? tiles : (1 << 20));
  const int elem = DT == kFloat32 ? 4 : 2, bytes = elem * kVec;
  bool vec = a.inner % kVec == 0 && aligned(a.out, bytes, elem);
  if (a.flags & kWriteX0) vec = vec && aligned(a.x0, bytes, elem);
  for (int k = 0; k < a.K; ++k) vec = vec && aligned(a.in[k], bytes, elem);
  if (vec)
    step_kernel<DT, true><<<grid, kThreads, 0, stream>>>(a, tiles_per_row, tiles);
  else
    step_kernel<DT, false><<<grid, kThreads, 0, stream>>>(a, tiles_per_row, tiles);
}

}  // namespace

bool cuda_built() { return true; }

int launch_status() {
  const cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess) return kOk;
  g_last_error = cudaGetErrorString(err);
  return kCudaError;
}

const char* last_cuda_error() { return g_last_error.c_str(); }

int step_cuda(const StepArgs& a, std::uintptr_t stream_handle) {
  const int status = check_step(a);
  if (status != kOk || a.batch == 0 || a.inner == 0) return status;
  auto stream = reinterpret_cast<cudaStream_t>(stream_handle);
  switch (a.dtype) {
    case kFloat32: launch<kFloat32>(a, stream); break;
    case kFloat16: launch<kFloat16>(a, stream); break;
    default: launch<kBFloat16>(a, stream); break;
  }
  return launch_status();
}

}  // namespace mridpm
