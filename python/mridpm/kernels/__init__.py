"""GPU kernels written in Triton (imported lazily: Triton is optional)."""
