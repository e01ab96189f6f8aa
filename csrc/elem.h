// Elements as stored, one definition for the CPU and the GPU kernels: float, or the 16 raw bits of a
// half or bfloat16, loaded to and stored from float (device intrinsics under nvcc's device pass,
// common.h's bit-exact conversions elsewhere).
#pragma once
#include <cstdint>

#include "common.h"

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

namespace mridpm {

template <int DT> struct Elem;
template <> struct Elem<kFloat32> {
  using T = float;
  MRIDPM_HD float load(T v) { return v; }
  MRIDPM_HD T store(float v) { return v; }
};
template <> struct Elem<kFloat16> {
  using T = std::uint16_t;
#if defined(__CUDA_ARCH__)
  MRIDPM_HD float load(T v) { return __half2float(__ushort_as_half(v)); }
  MRIDPM_HD T store(float v) { return __half_as_ushort(__float2half_rn(v)); }
#else
  MRIDPM_HD float load(T v) { return half_to_float(v); }
  MRIDPM_HD T store(float v) { return float_to_half(v); }
#endif
};
template <> struct Elem<kBFloat16> {
  using T = std::uint16_t;
#if defined(__CUDA_ARCH__)
  MRIDPM_HD float load(T v) { return __bfloat162float(__ushort_as_bfloat16(v)); }
  MRIDPM_HD T store(float v) { return __bfloat16_as_ushort(__float2bfloat16_rn(v)); }
#else
  MRIDPM_HD float load(T v) { return bf16_to_float(v); }
  MRIDPM_HD T store(float v) { return float_to_bf16(v); }
#endif
};

}  // namespace mridpm
