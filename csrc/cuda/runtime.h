// The CUDA runtime around the kernels: whether they were built, the driver they need, how a launch's
// failure is reported (the message behind kCudaError), and the opt-in synchronous check.
#pragma once
#include <cstdint>
#include <string>

namespace mridpm {

bool cuda_built();
const char* last_cuda_error();
// (driver, runtime) as CUDA encodes them (1000 * major + 10 * minor): the driver's, 0 when none is
// installed or CUDA is not built; the runtime the extension was built with, 0 without CUDA.
void cuda_versions(int* driver, int* runtime);

// Empty when a driver of CUDA version `driver` runs kernels built with runtime `runtime`, else the
// message that says so, naming both versions and what the build needs (host only, testable anywhere).
std::string cuda_driver_problem(int driver, int runtime);

// MRIDPM_CUDA_SYNC=1 (read once; set_cuda_sync changes it): synchronize the stream after each launch,
// so a kernel fault is reported by the call that caused it (not at a later, unrelated call).
bool cuda_sync();
void set_cuda_sync(bool on);

// For the CUDA entries (runtime.cu): kOk when the driver can run the kernels (checked once), else
// kCudaDriver with the message kept for last_cuda_error; and after a launch on `stream`, kOk or
// kCudaError with the message (the launch's error, or with cuda_sync() the kernel's own fault).
int cuda_ready();
int launch_status(std::uintptr_t stream, const char* kernel);

}  // namespace mridpm
