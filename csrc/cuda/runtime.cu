// The CUDA half of runtime.h: versions, the driver check, and the status of a launch.
#include <cuda_runtime.h>

#include <mutex>
#include <string>

#include "../common.h"
#include "runtime.h"

namespace mridpm {
namespace {

thread_local std::string g_last_error;

}  // namespace

bool cuda_built() { return true; }

const char* last_cuda_error() { return g_last_error.c_str(); }

void cuda_versions(int* driver, int* runtime) {
  *driver = 0;
  if (cudaDriverGetVersion(driver) != cudaSuccess) *driver = 0;
  *runtime = CUDART_VERSION;
}

int cuda_ready() {
  static std::once_flag once;
  static std::string problem;
  std::call_once(once, [] {
    int driver = 0, runtime = 0;
    cuda_versions(&driver, &runtime);
    problem = cuda_driver_problem(driver, runtime);
  });
  if (problem.empty()) return kOk;
  g_last_error = problem;
  return kCudaDriver;
}

int launch_status(std::uintptr_t stream_handle, const char* kernel) {
  cudaError_t err = cudaGetLastError();
  const bool sync = cuda_sync();
  if (err == cudaSuccess && sync) {
    auto stream = reinterpret_cast<cudaStream_t>(stream_handle);
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    err = cudaStreamIsCapturing(stream, &capture);
    if (err == cudaSuccess && capture == cudaStreamCaptureStatusNone) err = cudaStreamSynchronize(stream);
  }
  if (err == cudaSuccess) return kOk;
  g_last_error = std::string(kernel) + ": " + cudaGetErrorName(err) + ": " + cudaGetErrorString(err);
  g_last_error += sync ? " (MRIDPM_CUDA_SYNC=1: the stream was synchronized right after this launch)"
                       : " (a fault of an earlier asynchronous kernel may surface here; set MRIDPM_CUDA_SYNC=1 "
                         "to report each fault at the call that caused it)";
  return kCudaError;
}

}  // namespace mridpm
