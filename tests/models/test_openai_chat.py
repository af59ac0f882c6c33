from types import SimpleNamespace

from sia_bench.models.openai_chat import OpenAIChatModel


class FlakyCompletions:
    def __init__(self, failures):
        self.failures, self.calls = failures, 0

    def create(self, **kw):
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("connection reset")
        msg = SimpleNamespace(content=f"echo: {kw['messages'][-1]['content']}")
        return SimpleNamespace(choices=[SimpleNamespace(message=msg)],
                               usage=SimpleNamespace(prompt_tokens=5, completion_tokens=3))


def make(failures, retries=2):
    completions = FlakyCompletions(failures)
    client = SimpleNamespace(chat=SimpleNamespace(completions=completions))
    return OpenAIChatModel(model="m", client=client, max_retries=retries, backoff_s=0.0, concurrency=1), completions


def test_retries_then_succeeds():
    model, completions = make(failures=2)
    [g] = model.generate([[{"role": "user", "content": "hi"}]])
    assert g.text == "echo: hi" and g.error is None and completions.calls == 3
    assert model.usage.tokens_in == 5 and model.usage.tokens_out == 3


def test_gives_up_with_a_recorded_error():
    model, completions = make(failures=10, retries=1)
    [g] = model.generate([[{"role": "user", "content": "hi"}]])
    assert g.text == "" and "after 2 tries" in g.error and "connection reset" in g.error
    assert model.usage.errors == 1


def test_missing_key_is_a_clear_error(monkeypatch):
    import pytest

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ValueError, match=r"set \$OPENAI_API_KEY"):
        OpenAIChatModel(model="m")


def test_json_schema_is_sent_as_response_format_unless_switched_off():
    from sia_bench.models.base import SamplingParams

    seen = []
    completions = SimpleNamespace(create=lambda **kw: seen.append(kw) or FlakyCompletions(0).create(**kw))
    client = SimpleNamespace(chat=SimpleNamespace(completions=completions))
    schema = '{"type": "object", "properties": {"n": {"type": "integer"}}}'
    params = SamplingParams(json_schema=schema)
    OpenAIChatModel(model="m", client=client).generate([[{"role": "user", "content": "hi"}]], params)
    fmt = seen[-1]["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["schema"]["properties"]["n"] == {"type": "integer"}
    OpenAIChatModel(model="m", client=client, structured=False).generate([[{"role": "user", "content": "hi"}]],
                                                                        params)
    assert "response_format" not in seen[-1]
    OpenAIChatModel(model="m", client=client).generate([[{"role": "user", "content": "hi"}]])
    assert "response_format" not in seen[-1]


def test_api_calls_are_charged_flops_only_for_a_declared_size():
    import pytest

    from sia_bench import metering
    from sia_bench.records import Ledger

    unknown, _ = make(failures=0)
    sized = OpenAIChatModel(model="m", client=unknown.client, parameters=7_000_000, concurrency=1)
    ledger = Ledger()
    with metering.charging(ledger, "feedback"):
        unknown.generate([[{"role": "user", "content": "hi"}]])
        sized.generate([[{"role": "user", "content": "hi"}]])
    assert ledger.flops == {"feedback": 2 * 7_000_000 * (5 + 3)} and ledger.flops_unknown == {"feedback": 1}
    assert ledger.tokens_in == {"feedback": 10} and ledger.calls == {"feedback": 2}
    with pytest.raises(ValueError, match="positive whole number"):
        OpenAIChatModel(model="m", client=unknown.client, parameters=-1)
