"""Tool-only and sft hooks of the toy and program tasks: the tools' reply is the program the harness carries."""

from __future__ import annotations

from sia_bench.harness import Harness, Patch
from sia_bench.task import Instance
from tasks.cuda_kernels.task import CudaKernelsTask, reference_program
from tasks.scrna_denoise.task import ScrnaDenoiseTask, harness_program
from tasks.toy_arithmetic.task import ToyArithmeticTask


def test_toy_has_no_tool_and_its_reference_is_the_sum(toy_task: ToyArithmeticTask):
    harness = toy_task.default_harness()
    for inst in toy_task.split("train")[:5]:
        assert toy_task.tool_answer(harness, inst) is None
        answer = toy_task.parse(harness, inst, toy_task.reference_text(harness, inst))
        assert answer.value == inst.input["a"] + inst.input["b"] and toy_task.score(inst, answer).value == 1.0


def test_scrna_tools_reply_with_the_harness_program_unchanged():
    task = ScrnaDenoiseTask()  # no data is loaded: the hooks read the harness only
    inst = Instance("pbmc68k/train/0", {})
    for harness in (task.default_harness(), task.default_harness().apply(Patch("set_param", param="method",
                                                                               value="magic"))):
        answer = task.parse(harness, inst, task.tool_answer(harness, inst))
        assert answer.value["program"] == harness_program(harness)[0].rstrip() + "\n"
        assert task.reference_text(harness, inst) is None  # the only gold is the held-out molecules


def test_cuda_tools_reply_with_the_starting_program_and_the_reference_is_the_hand_written_kernel():
    task = CudaKernelsTask(backend="cpu", problem="softmax")
    try:
        harness = task.default_harness()
        edited = Harness({**harness.components, "program.py": harness.components["program.py"] + "# edited\n"},
                         harness.params, harness.specs)
        inst = task.split("test")[0]
        answer = task.parse(edited, inst, task.tool_answer(edited, inst))
        assert answer.method == "code_block" and answer.value["program"] == edited.components["program.py"]
        bare = harness.with_params({"starting_program": "none", "show_program": False})
        assert task.tool_answer(bare, inst) is None  # the harness carries no program
        reference = task.parse(bare, inst, task.reference_text(bare, inst))
        assert reference.value["program"].strip() == reference_program("cpu", "softmax").strip()
    finally:
        task.close()
