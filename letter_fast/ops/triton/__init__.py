"""Triton kernels. Import lazily: triton is optional, and TRITON_INTERPRET must be set first."""
