"""The generate engine's batched decoding loop, on the builtin tiny Llama (CPU)."""

from __future__ import annotations

from typing import Any

import pytest

from switchyard.workers.engines.decoding import Prompt, decode_batch
from switchyard.workers.engines.detok import TextTail
from switchyard.workers.engines.tiny_llama import build_tiny_llama

TEXTS = ["hello", "the quick brown fox jumps over", "a", "switchyard routes work to gpus"]


@pytest.fixture(scope="module")
def tiny() -> tuple[Any, Any]:
    return build_tiny_llama()


def _prompts(tokenizer: Any, **params: Any) -> list[Prompt]:
    return [Prompt(tokenizer(t)["input_ids"], max_tokens=n, **params)
            for t, n in zip(TEXTS, (20, 7, 30, 12), strict=True)]


def test_greedy_batch_equals_one_at_a_time_and_transformers_generate(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    prompts = _prompts(tokenizer)
    batch = decode_batch(model, tokenizer, prompts, device="cpu")
    alone = [decode_batch(model, tokenizer, [p], device="cpu")[0] for p in prompts]
    assert [d.text for d in batch] == [d.text for d in alone]
    assert [d.completion_tokens for d in batch] == [20, 7, 30, 12]
    assert {d.finish_reason for d in batch} == {"length"}
    encoded = tokenizer([TEXTS[1]], return_tensors="pt")
    reference = model.generate(**encoded, max_new_tokens=7, do_sample=False, pad_token_id=0)
    assert tokenizer.decode(reference[0, encoded["input_ids"].shape[1]:],
                            skip_special_tokens=True) == batch[1].text


def test_seeded_sampling_does_not_depend_on_the_batch(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    prompts = _prompts(tokenizer, temperature=0.9, top_p=0.8, seed=11)
    batch = decode_batch(model, tokenizer, prompts, device="cpu")
    alone = [decode_batch(model, tokenizer, [p], device="cpu")[0] for p in prompts]
    assert [d.text for d in batch] == [d.text for d in alone]
    other_seed = decode_batch(model, tokenizer, [Prompt(prompts[2].ids, 30, 0.9, 0.8, (), 12)],
                              device="cpu")
    assert other_seed[0].text != batch[2].text


def test_streamed_deltas_join_to_the_text_and_stop_strings_cut_it(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    free = decode_batch(model, tokenizer, _prompts(tokenizer), device="cpu")
    stop = free[2].text[10:13]
    deltas: dict[int, list[str]] = {}
    prompts = [Prompt(p.ids, p.max_tokens, stop=(stop,) if i == 2 else (), stream=True)
               for i, p in enumerate(_prompts(tokenizer))]
    stopped = decode_batch(model, tokenizer, prompts, device="cpu",
                           emit=lambda row, text: deltas.setdefault(row, []).append(text))
    assert stopped[2].finish_reason == "stop"
    assert stopped[2].text == free[2].text[:free[2].text.index(stop)]
    for row, decoded in enumerate(stopped):
        assert "".join(deltas.get(row, [])) == decoded.text
        assert stop not in decoded.text


def test_text_tail_holds_back_incomplete_utf8_and_possible_stop_prefixes() -> None:
    pieces = {1: "abcd", 2: "\ufffd", 3: "\u00e9", 4: "S", 5: "TOP"}

    def decode(ids: list[int]) -> str:  # tokens 2 then 3: one character over two tokens
        return "".join(pieces[i] for i in ids).replace("\ufffd\u00e9", "\u00e9")

    plain = TextTail(decode, [])
    assert [plain.push(t) for t in (1, 2, 3)] == ["abcd", "", "\u00e9"]
    tail = TextTail(decode, ["STOP"])  # the last 3 characters wait: a stop string may start
    assert [tail.push(t) for t in (1, 2, 3, 4)] == ["a", "", "b", "c"]
    assert tail.push(5) == "d\u00e9" and tail.stopped and tail.text == "abcd\u00e9"
    assert tail.finish() == ""


def test_requests_join_a_running_batch_and_decode_as_if_alone(tiny: tuple[Any, Any]) -> None:
    import time

    from switchyard.workers.engines.joining import DecodeLoop

    model, tokenizer = tiny
    loop = DecodeLoop(model, tokenizer, "cpu", lambda work: work())
    try:
        long = [Prompt(tokenizer(t)["input_ids"], max_tokens=300) for t in TEXTS[:2]]
        late = [Prompt(tokenizer(TEXTS[3])["input_ids"], max_tokens=10, temperature=0.7,
                       seed=5, stream=True)]
        first = loop.submit(long, None)
        while loop.steps < 5:
            time.sleep(0.001)
        deltas: list[str] = []
        second = loop.submit(late, lambda i, text: deltas.append(text))
        joined = second.result(timeout=60)
        assert not first.done()  # it finished while the long ones were still running
        assert loop.joined == 1
        alone = decode_batch(model, tokenizer, late, device="cpu")
        assert joined[0].text == alone[0].text == "".join(deltas)
        assert [d.text for d in first.result(timeout=60)] == [
            d.text for d in decode_batch(model, tokenizer, long, device="cpu")]
    finally:
        loop.close()


def test_the_generation_configs_eos_ids_end_a_row_too(tiny: tuple[Any, Any]) -> None:
    """A chat model's end of turn is often in ``generation_config.eos_token_id`` only (a
    list, as Llama 3's), not the tokenizer's ``eos_token_id``."""
    import copy

    model, tokenizer = tiny
    prompt = Prompt(tokenizer(TEXTS[1])["input_ids"], max_tokens=30)
    free = decode_batch(model, tokenizer, [prompt], device="cpu")[0]
    assert free.completion_tokens == 30 and len(free.text) > 5
    turn_end = tokenizer(free.text[4])["input_ids"][0]  # a token it generates early on
    chat = copy.copy(model)
    chat.generation_config = copy.deepcopy(model.generation_config)
    chat.generation_config.eos_token_id = [tokenizer.eos_token_id, turn_end]
    ended = decode_batch(chat, tokenizer, [prompt], device="cpu")[0]
    assert ended.finish_reason == "stop" and ended.completion_tokens <= 5
    assert free.text.startswith(ended.text)


def test_batched_sampling_draws_from_temperature_and_top_p() -> None:
    """Rows sampled together, each from its own generator: the frequencies follow the
    softmax at each row's temperature, top-p cuts the tail, greedy rows take the argmax."""
    import torch

    from switchyard.workers.engines.decoding import Row, _sample_rows
    from switchyard.workers.engines.detok import TextTail

    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]] * 3))
    prompts = [Prompt([1], 1, temperature=1.0, seed=1), Prompt([1], 1, temperature=1.0,
               top_p=0.7, seed=2), Prompt([1], 1)]
    rows = [Row(i, p, TextTail(str, ()), torch.Generator().manual_seed(p.seed or 0))
            for i, p in enumerate(prompts)]
    counts = torch.zeros(3, 4)
    for _ in range(4000):
        for i, token in enumerate(_sample_rows(torch, logits, rows)):
            counts[i, token] += 1
    freq = counts / 4000
    assert torch.allclose(freq[0], torch.tensor([0.5, 0.3, 0.15, 0.05]), atol=0.03)
    assert freq[1, 2:].sum() == 0 and abs(freq[1, 0] - 0.5 / 0.8) < 0.03  # cut at 0.7
    assert freq[2, 0] == 1.0
