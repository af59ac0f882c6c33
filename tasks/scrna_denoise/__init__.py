"""The scrna_denoise task: single-cell RNA-seq denoising scored by molecular cross-validation (OpenProblems v1)."""
