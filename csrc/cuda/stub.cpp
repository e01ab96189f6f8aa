// Stands in for the CUDA kernels when they are not compiled.
#include "../dc.h"
#include "../step.h"

namespace mridpm {
bool cuda_built() { return false; }
const char* last_cuda_error() { return "mridpm._C was built without CUDA"; }
int step_cuda(const StepArgs&, std::uintptr_t) { return kNotBuilt; }
int dc_cuda(const DcArgs&, std::uintptr_t) { return kNotBuilt; }
}  // namespace mridpm
