import pytest
import torch

from sia_bench.models.base import SamplingParams

MSGS = [[{"role": "user", "content": "Say hello."}],
        [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 2 + 2? Explain at length."}],
        [{"role": "user", "content": "罪名是什么？"}]]


def test_batched_generation_matches_one_at_a_time(tiny_model):
    params = SamplingParams(max_new_tokens=6)
    batched = [g.text for g in tiny_model.generate(MSGS, params)]
    single = [tiny_model.generate([m], params)[0].text for m in MSGS]
    assert batched == single
    gens = tiny_model.generate(MSGS, params)
    assert all(g.tokens_out <= 6 and g.tokens_in > 0 for g in gens)


def test_loglikelihood_matches_a_full_forward(tiny_model):
    messages, options = MSGS[0], ["hello", "goodbye there"]
    [scores] = tiny_model.loglikelihood([(messages, options)])
    tok = tiny_model.tokenizer
    prefix = tok(tiny_model.chat_text(messages), add_special_tokens=False)["input_ids"]
    for option, score in zip(options, scores):
        ids = tok(option, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = tiny_model.hf(input_ids=torch.tensor([prefix + ids])).logits[0]
        logp = torch.log_softmax(logits, -1)
        expected = sum(logp[len(prefix) - 1 + j, t].item() for j, t in enumerate(ids)) / len(ids)
        assert score == pytest.approx(expected, abs=1e-4)


def test_lora_adapter_save_reload_and_disable(tmp_path):
    from sia_bench.models import build_model

    model = build_model("tiny", seed=3)
    params = SamplingParams(max_new_tokens=5)
    base = [g.text for g in model.generate(MSGS, params)]
    model.enable_lora(rank=4)
    assert [g.text for g in model.generate(MSGS, params)] == base  # B=0: unchanged until trained
    with torch.no_grad():
        for name, p in model.hf.named_parameters():
            if "lora_B" in name:
                p.add_(torch.randn_like(p) * 0.5)
    trained = [g.text for g in model.generate(MSGS, params)]
    assert trained != base
    model.save_adapter(tmp_path / "adapter")
    model.load_adapter(None)
    assert [g.text for g in model.generate(MSGS, params)] == base
    model.load_adapter(tmp_path / "adapter")
    assert [g.text for g in model.generate(MSGS, params)] == trained
    assert model.info()["adapter"] == str(tmp_path / "adapter")


def test_loading_an_adapter_of_another_rank_rewraps(tmp_path):
    from sia_bench.models import build_model

    model = build_model("tiny", seed=4)
    params = SamplingParams(max_new_tokens=4)
    outputs = {}
    for rank in (4, 8):
        if model._has_lora:
            model.hf = model.hf.unload()
        model.enable_lora(rank=rank)
        with torch.no_grad():
            for name, p in model.hf.named_parameters():
                if "lora_B" in name:
                    p.add_(torch.randn_like(p) * 0.5)
        outputs[rank] = [g.text for g in model.generate(MSGS, params)]
        model.save_adapter(tmp_path / f"r{rank}")
    model.load_adapter(tmp_path / "r4")  # the r8 adapter is attached: must re-wrap, not crash
    assert [g.text for g in model.generate(MSGS, params)] == outputs[4]
    model.load_adapter(tmp_path / "r8")
    assert [g.text for g in model.generate(MSGS, params)] == outputs[8]


def test_json_schema_constrains_generation_even_for_a_random_model(tiny_model):
    pytest.importorskip("xgrammar", reason="constrained decoding needs xgrammar (extra: structured)")
    import json

    schema = json.dumps({"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 9},
                                                          "w": {"enum": ["yes", "no"]}},
                         "required": ["n", "w"], "additionalProperties": False})
    free = tiny_model.generate(MSGS[:2], SamplingParams(max_new_tokens=12))
    gens = tiny_model.generate(MSGS[:2], SamplingParams(max_new_tokens=24, json_schema=schema))
    for free_gen, gen in zip(free, gens):
        data = json.loads(gen.text)  # the random model never writes JSON on its own; constrained, it must
        assert set(data) == {"n", "w"} and 0 <= data["n"] <= 9 and data["w"] in {"yes", "no"}
        with pytest.raises(json.JSONDecodeError):
            json.loads(free_gen.text)


def test_parameter_count_in_the_record_ignores_an_attached_adapter():
    from sia_bench.models import build_model

    model = build_model("tiny", seed=5)
    before = model.info()["parameters"]
    model.enable_lora(rank=4)
    assert model.info()["parameters"] == before  # same model identity with or without an adapter
