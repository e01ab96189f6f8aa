// CUDA data-consistency kernels (see dc.h): one thread per output element, grid-stride loops.
#include <cuda_runtime.h>

#include "../dc.h"

namespace mridpm {
int launch_status();  // step.cu: kOk, or kCudaError with the message kept for last_cuda_error

namespace {

constexpr int kThreads = 256;

__global__ void dc_kernel(const __grid_constant__ DcArgs a, std::int64_t total) {
  const auto* x = reinterpret_cast<const float2*>(a.x.ptr);
  const auto* s = reinterpret_cast<const float2*>(a.maps.ptr);
  const auto* k = reinterpret_cast<const float2*>(a.k.ptr);
  const auto* y = reinterpret_cast<const float2*>(a.y.ptr);
  const auto* m = reinterpret_cast<const float*>(a.mask.ptr);
  auto* o = reinterpret_cast<float2*>(a.out.ptr);
  for (std::int64_t e = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t i = e % a.n;
    const float g = dc_sign(a, i);
    if (a.op == kCombine) {  // e = b * n + i
      const std::int64_t b = e / a.n;
      const float2* sb = s + (a.maps_batch == 1 ? 0 : b) * a.coils * a.n + i;
      const float2* kb = k + b * a.coils * a.n + i;
      float re = 0.0f, im = 0.0f;
      for (std::int64_t c = 0; c < a.coils; ++c) {
        const float2 sc = sb[c * a.n], kc = kb[c * a.n];
        re = re + (sc.x * kc.x + sc.y * kc.y);
        im = im + (sc.x * kc.y - sc.y * kc.x);
      }
      o[e] = make_float2(g * re, g * im);
    } else {  // e = (b * coils + c) * n + i
      const std::int64_t row = e / a.n, b = row / a.coils, c = row % a.coils;
      if (a.op == kExpand) {
        const float2 sv = s[((a.maps_batch == 1 ? 0 : b) * a.coils + c) * a.n + i], xv = x[b * a.n + i];
        o[e] = make_float2(g * (sv.x * xv.x - sv.y * xv.y), g * (sv.x * xv.y + sv.y * xv.x));
      } else {
        const float mv = m[((a.mask_batch == 1 ? 0 : b) * a.mask_coils + (a.mask_coils == 1 ? 0 : c)) * a.n + i];
        const float t = a.lam * mv, gy = a.ysign * g;
        const float2 kv = k[e], yv = y[e];
        o[e] = make_float2(a.a * kv.x + t * (gy * yv.x - kv.x), a.a * kv.y + t * (gy * yv.y - kv.y));
      }
    }
  }
}

}  // namespace

int dc_cuda(const DcArgs& a, std::uintptr_t stream_handle) {
  const int status = check_dc(a);
  if (status != kOk || a.batch == 0 || a.coils == 0 || a.n == 0) return status;
  const std::int64_t total = (a.op == kCombine ? 1 : a.coils) * a.batch * a.n;
  const std::int64_t blocks = (total + kThreads - 1) / kThreads;
  const unsigned grid = static_cast<unsigned>(blocks < (1 << 20) ? blocks : (1 << 20));
  dc_kernel<<<grid, kThreads, 0, reinterpret_cast<cudaStream_t>(stream_handle)>>>(a, total);
  return launch_status();
}

}  // namespace mridpm
