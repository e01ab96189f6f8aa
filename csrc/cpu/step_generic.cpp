// Baseline-ISA instance of the CPU step kernel.
#define MRIDPM_ISA generic
#include "step_impl.h"
