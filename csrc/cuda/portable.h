// What the GPU kernel bodies (step_kernel.h, dc_kernel.h) need from CUDA, written so that the same
// source compiles as device code under nvcc and as host code in the CUDA emulation (emulate.cpp):
// the thread's place in the grid as an argument instead of the builtins, vector loads, and the
// half and bfloat16 conversions (the device intrinsics, or common.h's bit-exact host equivalents).
#pragma once
#include <cstdint>
#include <cstring>

#include "../common.h"
#include "../elem.h"

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

namespace mridpm {

constexpr std::int64_t kGridCap = 1 << 20;  // blocks of a launch; larger problems loop (grid stride)

struct Dim3 {
  unsigned x = 0, y = 0, z = 0;
};

// blockIdx, blockDim, threadIdx and gridDim of one thread: filled from the builtins by the __global__
// wrappers, by loops over blocks and threads in the emulation.
struct ThreadCtx {
  Dim3 blockIdx, blockDim, threadIdx, gridDim;
};

#if defined(__CUDACC__)
__device__ __forceinline__ ThreadCtx cuda_thread_ctx() {
  return {{blockIdx.x, blockIdx.y, blockIdx.z},
          {blockDim.x, blockDim.y, blockDim.z},
          {threadIdx.x, threadIdx.y, threadIdx.z},
          {gridDim.x, gridDim.y, gridDim.z}};
}
#endif

#if defined(__CUDA_ARCH__)
template <class T> struct Vec4Of;
template <> struct Vec4Of<float> { using type = float4; };
template <> struct Vec4Of<std::uint16_t> { using type = uint2; };
#endif

// Four consecutive elements at p, which must be aligned to their total size, in one access.
template <class T>
MRIDPM_HD void ld4(const T* p, T* e) {
#if defined(__CUDA_ARCH__)
  union {
    typename Vec4Of<T>::type v;
    T e[4];
  } u;
  u.v = *reinterpret_cast<const typename Vec4Of<T>::type*>(p);
#pragma unroll
  for (int j = 0; j < 4; ++j) e[j] = u.e[j];
#elif defined(MRIDPM_EMULATION)
  std::memcpy(e, emu::translate(p, 4 * sizeof(T), 4 * sizeof(T)), 4 * sizeof(T));
#else
  std::memcpy(e, p, 4 * sizeof(T));
#endif
}

template <class T>
MRIDPM_HD void st4(T* p, const T* e) {
#if defined(__CUDA_ARCH__)
  union {
    typename Vec4Of<T>::type v;
    T e[4];
  } u;
#pragma unroll
  for (int j = 0; j < 4; ++j) u.e[j] = e[j];
  *reinterpret_cast<typename Vec4Of<T>::type*>(p) = u.v;
#elif defined(MRIDPM_EMULATION)
  std::memcpy(const_cast<void*>(emu::translate(p, 4 * sizeof(T), 4 * sizeof(T))), e, 4 * sizeof(T));
#else
  std::memcpy(p, e, 4 * sizeof(T));
#endif
}

#if defined(__CUDA_ARCH__)
using Complex = float2;
#else
struct alignas(8) Complex {
  float x, y;
};
#endif

MRIDPM_HD Complex make_complex(float re, float im) {
  Complex c;
  c.x = re;
  c.y = im;
  return c;
}

}  // namespace mridpm
