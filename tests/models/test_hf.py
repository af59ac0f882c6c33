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


SYSTEM = [{"role": "system", "content": "你是一名法官。Answer with one charge name only."}]
WITH_SYSTEM = [SYSTEM + [{"role": "user", "content": f"案情 {n}: 被告人盗窃现金{n}元。罪名?"}] for n in (100, 2500, 7)]


def test_system_block_reuse_changes_no_answer_and_no_score():
    from sia_bench.models import build_model

    cached, whole = build_model("tiny", seed=2), build_model("tiny", seed=2)
    whole.prefix_cache = False
    params = SamplingParams(max_new_tokens=6)
    assert [g.text for g in cached.generate(WITH_SYSTEM, params)] == [g.text for g in whole.generate(WITH_SYSTEM, params)]
    assert cached.prefixes.hits == 2 and cached.prefixes.misses == 1  # one system block prefilled, reused twice
    assert cached.prompt_ids(WITH_SYSTEM[0])[1] > 0 and whole.prompt_ids(WITH_SYSTEM[0])[1] == 0
    options = ["盗窃", "诈骗罪", "故意伤害"]
    a = cached.loglikelihood([(m, options) for m in WITH_SYSTEM])
    b = whole.loglikelihood([(m, options) for m in WITH_SYSTEM])
    assert [x for row in a for x in row] == pytest.approx([x for row in b for x in row], abs=1e-5)


def test_options_share_one_prompt_pass_and_match_a_full_forward(tiny_model):
    from sia_bench.models import engine

    options = ["盗窃", "诈骗", "故意伤害", "[走私、贩卖、运输、制造]毒品", "x"]
    [chunked] = tiny_model.loglikelihood([(WITH_SYSTEM[1], options)])
    ids, shared = tiny_model.prompt_ids(WITH_SYSTEM[1])
    row = engine.prefill(tiny_model.hf, ids, tiny_model.device)
    opts = [tiny_model.tokenizer(o, add_special_tokens=False)["input_ids"] for o in options]
    assert engine.option_logps(tiny_model.hf, row, opts, budget=3) == pytest.approx(chunked, abs=1e-5)  # many rows
    tok = tiny_model.tokenizer
    prefix = tok(tiny_model.chat_text(WITH_SYSTEM[1]), add_special_tokens=False)["input_ids"]
    for option, score in zip(options, chunked):
        ids = tok(option, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(tiny_model.hf(input_ids=torch.tensor([prefix + ids])).logits[0], -1)
        assert score == pytest.approx(sum(logp[len(prefix) - 1 + j, t].item() for j, t in enumerate(ids)) / len(ids),
                                      abs=1e-4)
    [ranking] = tiny_model.rank([(WITH_SYSTEM[1], options)])
    assert ranking.tokens_in == len(prefix) + sum(len(tok(o, add_special_tokens=False)["input_ids"]) for o in options)


def test_a_changed_adapter_never_reuses_a_stale_prefix():
    from sia_bench.models import build_model

    model, reference = build_model("tiny", seed=6), build_model("tiny", seed=6)
    reference.prefix_cache = False
    params = SamplingParams(max_new_tokens=5)
    model.generate(WITH_SYSTEM[:1], params)  # caches the system block under the base weights
    for m in (model, reference):
        torch.manual_seed(0)
        m.enable_lora(rank=4)
        with torch.no_grad():
            for name, p in m.hf.named_parameters():
                if "lora_B" in name:
                    p.add_(torch.randn_like(p) * 0.5)
    assert [g.text for g in model.generate(WITH_SYSTEM, params)] == [g.text for g in reference.generate(WITH_SYSTEM,
                                                                                                       params)]


def test_group_sampling_shares_a_prefill_and_is_seeded(tiny_model):
    params = SamplingParams(max_new_tokens=5, temperature=1.0, seed=3)
    misses = tiny_model.prefixes.misses
    groups = tiny_model.sample_groups(WITH_SYSTEM[:2], 4, params)
    assert tiny_model.prefixes.misses - misses <= 1  # the shared system block, at most once
    assert [len(g.completions) for g in groups] == [4, 4]
    assert all(0 < len(c) <= 5 for g in groups for c in g.completions)
    again = tiny_model.sample_groups(WITH_SYSTEM[:2], 4, params)
    assert [g.completions for g in again] == [g.completions for g in groups]
    assert len({tuple(c) for g in groups for c in g.completions}) > 2  # a random model at T=1 does vary
    tok = tiny_model.tokenizer
    assert groups[0].prompt_ids == tok(tiny_model.chat_text(WITH_SYSTEM[0]), add_special_tokens=False)["input_ids"]
    nucleus = tiny_model.sample_groups(WITH_SYSTEM[:2], 3, SamplingParams(max_new_tokens=5, temperature=1.0,
                                                                         top_p=1e-9, seed=1))
    greedy = tiny_model.generate(WITH_SYSTEM[:2], SamplingParams(max_new_tokens=5))
    for g, ref in zip(nucleus, greedy):  # a vanishing nucleus keeps only the top token: greedy, for every member
        assert g.texts == [ref.text] * 3
    with pytest.raises(ValueError, match="temperature"):
        tiny_model.sample_groups(WITH_SYSTEM[:1], 2, SamplingParams(max_new_tokens=2))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_inference_runs_on_merged_plain_layers_and_training_state_is_untouched(dtype):
    """With an adapter, inference runs the bare transformers model with every adapted layer swapped for a plain
    linear layer (adapter merged in when on, the base layer when off): no peft wrapper and no fp32 cast in the
    pass. Scores match peft's own unmerged path; the peft model, its base weights and its fp32 adapter come back
    bitwise, and a changed adapter is merged again."""
    from peft.tuners.lora import LoraLayer

    from sia_bench.models import build_model

    model = build_model("tiny", seed=6)
    model.hf.to(getattr(torch, dtype))
    model.dtype = dtype
    model.enable_lora(rank=4)
    lora = {n: p for n, p in model.hf.named_parameters() if "lora_" in n}
    assert lora and all(p.dtype == torch.float32 for p in lora.values())  # peft keeps the adapter in fp32
    with torch.no_grad():
        for name, p in lora.items():
            if "lora_B" in name:
                p.add_(torch.randn_like(p) * 0.5)
    inner = model.hf.get_base_model()
    q_base = inner.model.layers[0].self_attn.q_proj.get_base_layer().weight
    before = {n: p.detach().clone() for n, p in model.hf.named_parameters()}
    batch = [(MSGS[1], ["four", "five", "a long answer"])]
    seen, original = [], inner.forward

    def spy(*args, **kwargs):  # what the forward pass runs on
        q = inner.model.layers[0].self_attn.q_proj
        seen.append((any(isinstance(m, LoraLayer) for m in inner.modules()), torch.equal(q.weight, q_base)))
        return original(*args, **kwargs)

    def scores():
        model.prefixes.clear()
        inner.forward = spy
        try:
            return model.loglikelihood(batch)[0]
        finally:
            inner.forward = original

    merged = scores()
    assert seen and all(not wrapped and not base for wrapped, base in seen)  # plain layers, merged weights
    assert all(torch.equal(p, before[n]) for n, p in model.hf.named_parameters())
    assert not inner.get_output_embeddings().weight.requires_grad  # still frozen for training (peft froze it)
    assert all(isinstance(inner.model.layers[0].self_attn.get_submodule(k), LoraLayer) for k in ("q_proj", "v_proj"))
    model.prefixes.clear()
    with torch.no_grad():  # peft's own path: the wrapped model, adapter unmerged
        reference = engine_scores(model, batch)
    assert merged == pytest.approx(reference, abs=1e-4 if dtype == "float32" else 0.05)
    with torch.no_grad():
        for name, p in lora.items():
            if "lora_B" in name:
                p.mul_(-1)
    assert scores() != pytest.approx(merged, abs=1e-3)  # a changed adapter is merged again
    model.load_adapter(None)  # adapter off: the untouched base layers
    seen.clear()
    scores()
    assert seen and all(not wrapped and base for wrapped, base in seen)


def engine_scores(model, batch) -> list[float]:
    """Scores through the peft-wrapped model (the reference for the swapped path)."""
    from sia_bench.models import engine

    (messages, options), = batch
    ids, _ = model.prompt_ids(messages)
    row = engine.prefill(model.hf, ids, model.device)
    return engine.option_logps(model.hf, row, [model._tokens(o) for o in options])
