"""Triton kernels; on the CPU they run under TRITON_INTERPRET=1."""
