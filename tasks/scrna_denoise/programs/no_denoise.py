"""No denoising: the training counts themselves (OpenProblems' 'no denoising' baseline, the null control)."""


def denoise(counts):
    return counts
