// AVX2 instance of the CPU step kernel (built with -mavx2 on x86-64 only).
#define MRIDPM_ISA avx2
#include "step_impl.h"
