"""Property tests: labels are -100 exactly outside trained spans; packing never splits or loses a row."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mudpuppy.runtime.data.chat import ChatOptions, ChatStrategy
from mudpuppy.runtime.data.chat_templates import named_template
from mudpuppy.runtime.data.instruct import InputOutputStrategy
from mudpuppy.runtime.data.packing import pack_lengths

pytestmark = pytest.mark.timeout(300)

WORDS = st.sampled_from(["red", "blue", " cat", "dog", "Add", "49", " and", "\n", "river", "the", "!"])
TEXT = st.lists(WORDS, min_size=1, max_size=8).map("".join)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(segments=st.lists(st.tuples(TEXT, st.booleans()), min_size=1, max_size=6))
def test_input_output_labels_exactly_on_trained_segments(tokenizer, segments) -> None:  # noqa: ANN001
    strategy = InputOutputStrategy(tokenizer, train_on_inputs=False)
    [[row]] = strategy.tokenize_rows([{"segments": [{"text": t, "label": lab} for t, lab in segments]}])
    expected: list[int] = []
    for text, label in segments:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        expected += ids if label else [-100] * len(ids)
    assert row["labels"] == expected
    assert all(lab in (-100, tok) for lab, tok in zip(row["labels"], row["input_ids"], strict=True))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(turns=st.lists(TEXT, min_size=1, max_size=6))
def test_chatml_labels_cover_exactly_assistant_content(tokenizer, turns) -> None:  # noqa: ANN001
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]
    strategy = ChatStrategy(tokenizer, ChatOptions(template=named_template("chatml")))
    row = strategy.tokenize_one({"messages": messages})
    # Trained tokens decode back to the assistant contents, in order; everything else is -100.
    trained = [tok for tok, lab in zip(row["input_ids"], row["labels"], strict=True) if lab != -100]
    assert all(lab in (-100, tok) for lab, tok in zip(row["labels"], row["input_ids"], strict=True))
    want = "".join(m["content"] for m in messages if m["role"] == "assistant")
    assert tokenizer.decode(trained) == want


@settings(max_examples=200, deadline=None)
@given(lengths=st.lists(st.integers(1, 64), max_size=300), group=st.integers(1, 120), bin_size=st.integers(1, 50))
def test_packing_never_splits_or_loses_a_row(lengths, group, bin_size) -> None:  # noqa: ANN001
    bins = pack_lengths(lengths, 64, group_size=group, bin_size=bin_size)
    placed = sorted(i for b in bins for i in b)
    assert placed == list(range(len(lengths)))
    for b in bins:
        assert sum(lengths[i] for i in b) <= 64 and 0 < len(b) <= bin_size
