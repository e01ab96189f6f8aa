// CUDA fused sampler step: the body and launch shape are step_kernel.h's (shared with the host
// emulation); this file wraps the body in __global__ kernels and launches them.
#include <cuda_runtime.h>

#include "runtime.h"
#include "step_kernel.h"

namespace mridpm {
namespace {

template <int DT, bool VEC>
__global__ void __launch_bounds__(kStepThreads)
    step_kernel(const __grid_constant__ StepArgs a, std::int64_t tiles_per_row, std::int64_t tiles) {
  step_body<DT, VEC>(cuda_thread_ctx(), a, tiles_per_row, tiles);
}

template <int DT>
void launch(const StepArgs& a, cudaStream_t stream) {
  const StepLaunch l = step_launch(a, kGridCap);
  const auto grid = static_cast<unsigned>(l.grid);
  if (l.vec)
    step_kernel<DT, true><<<grid, kStepThreads, 0, stream>>>(a, l.tiles_per_row, l.tiles);
  else
    step_kernel<DT, false><<<grid, kStepThreads, 0, stream>>>(a, l.tiles_per_row, l.tiles);
}

}  // namespace

int step_cuda(const StepArgs& a, std::uintptr_t stream_handle) {
  const int status = check_step(a);
  if (status != kOk || a.batch == 0 || a.inner == 0) return status;
  if (const int ready = cuda_ready(); ready != kOk) return ready;
  auto stream = reinterpret_cast<cudaStream_t>(stream_handle);
  switch (a.dtype) {
    case kFloat32: launch<kFloat32>(a, stream); break;
    case kFloat16: launch<kFloat16>(a, stream); break;
    default: launch<kBFloat16>(a, stream); break;
  }
  return launch_status(stream_handle, "fused step kernel");
}

}  // namespace mridpm
