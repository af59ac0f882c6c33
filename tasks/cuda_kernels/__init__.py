"""The cuda_kernels task: write a faster kernel for a reference PyTorch computation (KernelBench format)."""
