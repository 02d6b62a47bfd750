"""The fast chat path (one batched tokenizer call, one placeholder render per kind for all turns, the compiled
template called directly) must give exactly the rows of Axolotl's per-turn algorithm, which the same strategy
runs with the shortcuts off (that path is what tests/unit/data/test_golden.py holds to Axolotl's own rows)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mudpuppy.runtime.data.chat import ChatOptions, ChatStrategy
from mudpuppy.runtime.data.chat_templates import named_template
from mudpuppy.runtime.data.rows import RowError

pytestmark = pytest.mark.timeout(600)

# Pieces chosen to trip a sloppy locator: the placeholders' edge characters, the placeholders themselves,
# whitespace a template may trim, reasoning tags a template may split on, control tokens.
PIECES = st.sampled_from(["red", " cat", "dog", "\n", "  ", "[", "]", "z", "zz", "[[dummy_message]]",
                          "zzdummymessagezz", "<think>", "</think>", "<|im_end|>", "</s>", "49", "!", ""])
TEXT = st.lists(PIECES, min_size=0, max_size=6).map("".join)
TEMPLATES = ["chatml", "llama3", "qwen3", "qwen_25", "gemma", "gemma3", "mistral_v1", "phi_3", "phi_4",
             "cohere", "deepseek_v3", "llama4"]
OPTIONS = [{}, {"roles_to_train": ["user", "assistant"]}, {"train_on_eos": "all"}, {"train_on_inputs": True},
           {"train_on_eos": "last"}]


def _slow(strategy: ChatStrategy) -> ChatStrategy:
    strategy.composite = False
    strategy.direct = None
    return strategy


def _run(strategy: ChatStrategy, rows: list[dict]) -> list:
    return [r if not isinstance(r, RowError) else f"error: {r}" for r in strategy.tokenize_rows(rows)]


def _conversation(system: str | None, texts: list[str]) -> dict:
    messages = [{"role": "system", "content": system}] if system is not None else []
    messages += [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(texts)]
    return {"messages": messages}


@pytest.mark.parametrize("name", TEMPLATES)
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(convos=st.lists(st.tuples(st.none() | TEXT, st.lists(TEXT, min_size=1, max_size=7)), min_size=1,
                       max_size=4), option=st.sampled_from(OPTIONS))
def test_fast_path_rows_equal_per_turn_rows(tokenizer, name: str, convos, option: dict) -> None:  # noqa: ANN001
    rows = [_conversation(system, texts) for system, texts in convos]
    opts = dict(template=named_template(name), **option)
    fast = ChatStrategy(tokenizer, ChatOptions(**opts))
    slow = _slow(ChatStrategy(tokenizer, ChatOptions(**opts)))
    assert _run(fast, rows) == _run(slow, rows)


def test_fast_path_is_taken_for_chatml(tokenizer, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    """Three assistant turns: one full render plus one per placeholder kind, not 1 + 2 x 3, all direct."""
    strategy = ChatStrategy(tokenizer, ChatOptions(template=named_template("chatml")))
    row = _conversation("sys", ["a", "b", "c", "d", "e", "f"])
    strategy.tokenize_rows([row])  # the first row also checks the direct renderer against apply_chat_template
    assert strategy.direct is not None
    calls = {"direct": 0, "apply": 0}
    direct, apply = strategy.direct.render, strategy.render

    def count(kind: str, fn):  # noqa: ANN001, ANN202
        def wrapped(*a, **k):  # noqa: ANN002, ANN003, ANN202
            calls[kind] += 1
            return fn(*a, **k)
        return wrapped

    monkeypatch.setattr(strategy.direct, "render", count("direct", direct))
    monkeypatch.setattr(strategy, "render", count("apply", apply))
    [[fast]] = strategy.tokenize_rows([row])
    assert calls == {"direct": 3, "apply": 0}
    [[slow]] = _slow(ChatStrategy(tokenizer, ChatOptions(template=named_template("chatml")))).tokenize_rows([row])
    assert fast == slow


def test_direct_renderer_dropped_when_it_differs(tokenizer) -> None:  # noqa: ANN001
    strategy = ChatStrategy(tokenizer, ChatOptions(template=named_template("chatml")))
    assert strategy.direct is not None
    strategy.direct.kwargs = {**strategy.direct.kwargs, "eos_token": "<changed>"}  # a renderer out of step
    strategy.direct.compiled = strategy.direct.compiled.environment.from_string("{{ eos_token }}")
    [[row]] = strategy.tokenize_rows([_conversation(None, ["hi", "there"])])
    assert strategy.direct is None
    [[slow]] = _slow(ChatStrategy(tokenizer, ChatOptions(template=named_template("chatml")))).tokenize_rows(
        [_conversation(None, ["hi", "there"])])
    assert row == slow


def test_strategy_survives_the_trip_to_dataset_worker_processes(tokenizer) -> None:  # noqa: ANN001
    """dataset_num_proc > 1 pickles the strategy (with its direct renderer) into each worker process."""
    import pickle

    strategy = ChatStrategy(tokenizer, ChatOptions(template=named_template("chatml")))
    clone = pickle.loads(pickle.dumps(strategy))
    assert clone.direct is not None
    rows = [_conversation("sys", ["a", "b", "c", "d"]), _conversation(None, ["x", "y"])]
    assert _run(clone, rows) == _run(_slow(ChatStrategy(tokenizer, ChatOptions(template=named_template("chatml")))),
                                     rows)
