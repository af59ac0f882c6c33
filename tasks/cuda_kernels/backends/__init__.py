"""Sandbox-side kernel loaders, one per backend; a candidate program imports them as ``sia_kernels``.

Nothing here is imported by the harness process except for compile-only checks: all of it runs inside the sandbox.
"""
