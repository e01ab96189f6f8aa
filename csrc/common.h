// Shared contract of the kernels: dtype codes, status codes, half-precision
// conversions and the argument checks that run before any kernel touches memory.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define MRIDPM_HD static __host__ __device__ __forceinline__
#else
// static: each instruction-set variant keeps its own copy (no cross-TU merging).
#define MRIDPM_HD static inline
#endif

namespace mridpm {

// Element types the kernels read and write (complex64 arrives as float32 pairs).
enum DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

enum Status : int {
  kOk = 0,
  kBadDType = 1,
  kBadCount = 2,
  kBadShape = 3,
  kNullPointer = 4,
  kOutOfBounds = 5,
  kBadFlags = 6,
  kCudaError = 7,
  kNotBuilt = 8,
  kOverlappingOutput = 9,
  kBadSignShape = 10,
  kCudaDriver = 11,
  kEmulationFault = 12,
};

inline const char* status_message(int s) {
  switch (s) {
    case kOk: return "ok";
    case kBadDType: return "unsupported dtype code";
    case kBadCount: return "number of input tensors must be 1 to 4";
    case kBadShape: return "batch and inner sizes must be non-negative and strides at least the inner size";
    case kNullPointer: return "a required data pointer is null";
    case kOutOfBounds: return "a buffer is smaller than the extent the call would touch";
    case kBadFlags: return "unknown flag bits";
    case kCudaError: return "CUDA error";
    case kNotBuilt: return "this backend was not compiled into mridpm._C";
    case kOverlappingOutput:
      return "an output's batch stride is smaller than its row (0 for an expanded tensor): rows would overlap, "
             "and an output must own every element it writes";
    case kBadSignShape:
      return "the checkerboard sign needs spatial sizes >= 1 whose product is n (at most 8 even dimensions)";
    case kCudaDriver: return "the NVIDIA driver cannot run these CUDA kernels";
    case kEmulationFault: return "the emulated CUDA kernel touched memory outside its buffers";
    default: return "unknown status";
  }
}

// A strided batch of rows: row b starts at ptr + b * batch_stride elements and holds
// `inner` contiguous elements; `capacity` is how many elements lie at and after ptr.
struct Buffer {
  std::uintptr_t ptr = 0;
  std::int64_t batch_stride = 0;
  std::int64_t capacity = 0;
};

// *out = a * b when both are non-negative and the product fits in int64; false (out untouched) otherwise.
// Every product of extents in the checks goes through this, so none can overflow before it is compared.
inline bool checked_mul(std::int64_t a, std::int64_t b, std::int64_t* out) {
  if (a < 0 || b < 0) return false;
  if (a != 0 && b > INT64_MAX / a) return false;
  *out = a * b;
  return true;
}

// *out = a + b for non-negative a, b when the sum fits in int64.
inline bool checked_add(std::int64_t a, std::int64_t b, std::int64_t* out) {
  if (a < 0 || b < 0 || b > INT64_MAX - a) return false;
  *out = a + b;
  return true;
}

// True when rows 0..batch-1 of `inner` elements fit in the buffer, without overflow. Rows may share
// elements (a batch stride below `inner`, 0 for an input expanded along the batch) only when
// shared_rows: the buffer is read, never written.
inline bool fits(const Buffer& buf, std::int64_t batch, std::int64_t inner, bool shared_rows = false) {
  if (batch < 0 || inner < 0) return false;
  if (batch == 0 || inner == 0) return true;
  if (buf.ptr == 0 || buf.batch_stride < 0 || buf.capacity < 0) return false;
  if (batch > 1 && buf.batch_stride < inner && !shared_rows) return false;
  std::int64_t span = 0, end = 0;
  if (!checked_mul(batch - 1, buf.batch_stride, &span) || !checked_add(span, inner, &end)) return false;
  return end <= buf.capacity;
}

#if defined(MRIDPM_EMULATION) && !defined(__CUDA_ARCH__)
namespace emu {
// The host address behind a kernel's access of `bytes` at p (csrc/cuda/emulate.cpp): it throws when the
// access lies outside every buffer of the call or is misaligned for a device load.
const void* translate(const void* p, std::size_t bytes, std::size_t align);
}  // namespace emu
#endif

// Every global-memory access of the GPU kernel bodies (csrc/cuda/*_kernel.h) goes through ld and st:
// plain accesses on the device and on the host, checked and translated ones in the CUDA emulation.
template <class T>
MRIDPM_HD T ld(const T* p) {
#if defined(MRIDPM_EMULATION) && !defined(__CUDA_ARCH__)
  T v;
  std::memcpy(&v, emu::translate(p, sizeof(T), alignof(T)), sizeof(T));
  return v;
#else
  return *p;
#endif
}

template <class T>
MRIDPM_HD void st(T* p, T v) {
#if defined(MRIDPM_EMULATION) && !defined(__CUDA_ARCH__)
  std::memcpy(const_cast<void*>(emu::translate(p, sizeof(T), alignof(T))), &v, sizeof(T));
#else
  *p = v;
#endif
}

MRIDPM_HD std::uint32_t f32_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}

MRIDPM_HD float bits_f32(std::uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

// IEEE half <-> float, round to nearest even; branch-free so loops vectorize.
MRIDPM_HD float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t em = h & 0x7fffu;
  const float scaled = bits_f32(em << 13) * 5.192296858534828e33f;  // 2^112
  const std::uint32_t mag = em >= 0x7c00u ? ((em << 13) | 0x7f800000u) : f32_bits(scaled);
  return bits_f32(mag | sign);
}

MRIDPM_HD std::uint16_t float_to_half(float f) {
  std::uint32_t u = f32_bits(f);
  const std::uint32_t sign = u & 0x80000000u;
  u ^= sign;
  const std::uint32_t inf_nan = u > 0x7f800000u ? 0x7e00u : 0x7c00u;
  const std::uint32_t denorm_magic = ((127 - 15) + (23 - 10) + 1) << 23;
  const std::uint32_t sub = f32_bits(bits_f32(u) + bits_f32(denorm_magic)) - denorm_magic;
  const std::uint32_t norm = (u + (static_cast<std::uint32_t>(15 - 127) << 23) + 0xfffu + ((u >> 13) & 1u)) >> 13;
  const std::uint32_t o = u >= ((127u + 16u) << 23) ? inf_nan : (u < (113u << 23) ? sub : norm);
  return static_cast<std::uint16_t>(o | (sign >> 16));
}

MRIDPM_HD float bf16_to_float(std::uint16_t h) { return bits_f32(static_cast<std::uint32_t>(h) << 16); }

MRIDPM_HD std::uint16_t float_to_bf16(float f) {
  const std::uint32_t u = f32_bits(f);
  const std::uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const bool nan = (u & 0x7fffffffu) > 0x7f800000u;
  return static_cast<std::uint16_t>(nan ? ((u >> 16) | 0x40u) : rounded);
}

}  // namespace mridpm
