"""The marshalling shared by the native backends: signature parsing and the tensor checks before DLPack export."""

import pytest
import torch

from tasks.cuda_kernels.sandboxed.kernel_args import CompileError, Param, check_tensor, parse_signature


def test_weights_that_require_grad_are_exported_through_dlpack_without_a_copy():
    # Regression (found on the H200): nn.Parameter requires grad and DLPack refuses to export it, so every kernel
    # taking weights (TriMul, layernorm, rmsnorm) failed with BufferError before check_tensor detached them.
    weight = torch.nn.Parameter(torch.arange(4, dtype=torch.float32))
    with pytest.raises(BufferError):
        weight.__dlpack__()
    exported = check_tensor(Param("w", "ptr", "float32"), weight, "cpu")
    assert not exported.requires_grad and exported.data_ptr() == weight.data_ptr()
    view = torch.from_dlpack(exported.__dlpack__())
    view[0] = 7.0  # the kernel writes the same memory the module holds
    assert weight[0].item() == 7.0


@pytest.mark.parametrize("value, message", [
    (torch.zeros(4, 4).t(), "not contiguous"),
    (torch.zeros(4, dtype=torch.float64), "dtype"),
    ([1.0, 2.0], "pass a torch.Tensor"),
])
def test_usual_mistakes_get_a_clear_error(value, message):
    with pytest.raises(TypeError, match=message):
        check_tensor(Param("x", "ptr", "float32"), value, "cpu")


def test_tensor_on_the_wrong_device_is_refused_before_launch():
    with pytest.raises(TypeError, match="kernel needs cuda"):
        check_tensor(Param("x", "ptr", "float32"), torch.zeros(2), "cuda")


def test_signature_parsing_types_pointers_and_scalars():
    source = 'extern "C" __global__ void k(const float* __restrict__ x, float *y, long n, float eps, int flag) {}'
    params = parse_signature(source, "k")
    assert [(p.name, p.ctype, p.elem) for p in params] == [
        ("x", "ptr", "float32"), ("y", "ptr", "float32"), ("n", "long", ""), ("eps", "float", ""),
        ("flag", "int", "")]
    with pytest.raises(CompileError, match="not found"):
        parse_signature(source, "missing")
    with pytest.raises(CompileError, match="not supported"):
        parse_signature("void k(struct S s) {}", "k")
