// CUDA data-consistency kernels: the body and launch shape are dc_kernel.h's (shared with the host
// emulation); this file wraps the body in a __global__ and launches it.
#include <cuda_runtime.h>

#include "dc_kernel.h"
#include "runtime.h"

namespace mridpm {
namespace {

__global__ void __launch_bounds__(kDcThreads) dc_kernel(const __grid_constant__ DcArgs a, std::int64_t total) {
  dc_body(cuda_thread_ctx(), a, total);
}

}  // namespace

int dc_cuda(const DcArgs& a, std::uintptr_t stream_handle) {
  const int status = check_dc(a);
  if (status != kOk || a.batch == 0 || a.coils == 0 || a.n == 0) return status;
  if (const int ready = cuda_ready(); ready != kOk) return ready;
  const DcLaunch l = dc_launch(a, kGridCap);
  dc_kernel<<<static_cast<unsigned>(l.grid), kDcThreads, 0, reinterpret_cast<cudaStream_t>(stream_handle)>>>(
      a, l.total);
  return launch_status(stream_handle, "data-consistency kernel");
}

}  // namespace mridpm
