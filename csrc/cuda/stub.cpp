// Stands in for the CUDA kernels and runtime when they are not compiled.
#include "../dc.h"
#include "../step.h"
#include "runtime.h"

namespace mridpm {
bool cuda_built() { return false; }
const char* last_cuda_error() { return "mridpm._C was built without CUDA"; }
void cuda_versions(int* driver, int* runtime) { *driver = *runtime = 0; }
int cuda_ready() { return kNotBuilt; }
int launch_status(std::uintptr_t, const char*) { return kNotBuilt; }
int step_cuda(const StepArgs&, std::uintptr_t) { return kNotBuilt; }
int dc_cuda(const DcArgs&, std::uintptr_t) { return kNotBuilt; }
}  // namespace mridpm
