"""hf_select.chat_tokens counts the tokens TRL's SFTTrainer trains on: checked row for row against the dataset a real
SFTTrainer prepares (its input_ids, labels after truncation, and the rows it keeps)."""

from __future__ import annotations

import pytest
from datasets import Dataset

from hf_select.chat_tokens import (
    TrainedTokens,
    supervised_token_counts,
    tokenize_prompt_completion,
    trained_tokens,
)
from hf_select.columns import ROW_ID
from hf_select.errors import HFSelectError
from hf_select.training import TrainConfig, build_sft_config, sft_trainer_class, to_prompt_completion

MAX_LENGTH = 48


def _rows() -> Dataset:
    """12 alpaca rows: short and long prompts and answers, one prompt alone longer than MAX_LENGTH, one empty
    answer (to_prompt_completion drops it), and ``_row_id`` values that are not the positions."""
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu"]
    rows = []
    for i in range(12):
        instruction = f"Describe {words[i]}." + (" Give details about it and more." * (i % 4))
        output = " ".join(words[: (i * 3) % 13 + 1])
        rows.append({"instruction": instruction, "input": "in two lines" if i % 3 == 0 else "", "output": output})
    rows[4]["instruction"] = "Explain everything about " + " and ".join(words)  # the prompt alone fills MAX_LENGTH
    rows[7]["output"] = "   "  # empty answer
    for i, row in enumerate(rows):
        row[ROW_ID] = 100 + 3 * i
    return Dataset.from_list(rows)


def _prepared(tiny_lm_path, tmp_path, dataset: Dataset, turns: str = "last"):
    """The train_dataset a real SFTTrainer (the project's trainer class, as train_sft builds it) prepares."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_lm_path, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(tiny_lm_path)
    cfg = TrainConfig(max_steps=1, max_length=MAX_LENGTH, precision="fp32", save_steps=None, turns=turns)
    args = build_sft_config(cfg, tmp_path / "run")
    pc = to_prompt_completion(dataset, turns=turns)
    trainer = sft_trainer_class()(model=model, args=args, train_dataset=pc, processing_class=tok)
    return trainer.train_dataset, tok, pc


def _trl_counts(prepared: Dataset) -> dict[int, tuple[int, bool]]:
    """_row_id -> (completion tokens that carry loss: labels after the shift, sequence at the length limit)."""
    out: dict[int, tuple[int, bool]] = {}
    for row in prepared:
        supervised = sum(1 for label in row["labels"][1:] if label != -100)
        prev = out.get(row[ROW_ID], (0, False))
        out[row[ROW_ID]] = (prev[0] + supervised, prev[1] or len(row["input_ids"]) == MAX_LENGTH)
    return out


def test_counts_equal_trls_prepared_dataset(tiny_lm_path, tmp_path):
    ds = _rows()
    prepared, tok, pc = _prepared(tiny_lm_path, tmp_path, ds)
    assert ROW_ID in prepared.column_names and "labels" in prepared.column_names
    trl = _trl_counts(prepared)
    counts = supervised_token_counts(ds, tok, MAX_LENGTH)
    assert counts.row_ids == ds[ROW_ID]
    # the test data covers every case: kept whole, truncated, prompt too long (TRL drops it), empty answer
    assert 100 + 3 * 4 not in trl and 100 + 3 * 7 not in trl and 0 < len(trl) < len(ds)
    assert any(counts.truncated[i] and not counts.dropped[i] for i in range(len(ds)))
    assert any(not counts.truncated[i] for i in range(len(ds)))
    for i, rid in enumerate(counts.row_ids):
        if rid in trl:
            assert not counts.dropped[i], i
            assert counts.supervised[i] == trl[rid][0], i
            if counts.truncated[i]:
                assert trl[rid][1], i
        else:
            assert counts.dropped[i] and counts.supervised[i] == 0, i
    assert counts.total == sum(s for s, _ in trl.values())
    assert counts.to_dict()["rows_dropped"] == len(ds) - len(trl)

    # the ids themselves: prompt + completion is TRL's input_ids before the cut, the completion what it labels
    by_id = {row[ROW_ID]: row for row in prepared}
    pairs = tokenize_prompt_completion(tok, pc)
    for rid, (prompt_ids, completion_ids) in zip(pc[ROW_ID], pairs, strict=True):
        if rid in by_id:
            row = by_id[rid]
            assert row["input_ids"] == (prompt_ids + completion_ids)[:MAX_LENGTH]
            assert [t for t in row["labels"] if t != -100] == completion_ids[: max(0, MAX_LENGTH - len(prompt_ids))]


def test_counts_with_every_turn(tiny_lm_path, tmp_path):
    """turns="all": a row's turns add up, each truncated as TRL does (one multi-turn row outgrows MAX_LENGTH)."""
    conv = [
        [("Hi", "Hello there"), ("How are you?", "Fine, thanks for asking")],
        [("Name three colours", "red green blue"), ("And three more?", "cyan magenta yellow and black " * 3)],
        [("Count to five", "one two three four five")],
    ]
    ds = Dataset.from_list([{"messages": [m for u, a in turns for m in ({"role": "user", "content": u},
                                                                        {"role": "assistant", "content": a})]}
                            for turns in conv])
    prepared, tok, _ = _prepared(tiny_lm_path, tmp_path, ds, turns="all")
    trl = _trl_counts(prepared)
    counts = supervised_token_counts(ds, tok, MAX_LENGTH, turns="all")
    assert counts.supervised == [trl.get(i, (0, False))[0] for i in range(len(ds))]
    assert counts.truncated[1] and not counts.dropped[1]


def test_trained_tokens_rules():
    assert trained_tokens([1, 2], [3, 4, 5], None) == TrainedTokens(3, False, False)
    assert trained_tokens([1, 2], [3, 4, 5], 5) == TrainedTokens(3, False, False)
    assert trained_tokens([1, 2], [3, 4, 5], 3) == TrainedTokens(1, True, False)
    assert trained_tokens([1, 2], [3, 4, 5], 2) == TrainedTokens(0, True, True)
    assert trained_tokens([1, 2], [], 8) == TrainedTokens(0, False, True)
    assert trained_tokens([1, 2], [3, 4, 5], 2, truncation_mode="keep_end") == TrainedTokens(1, True, False)
    with pytest.raises(ValueError, match="truncation_mode"):
        trained_tokens([1], [2], 4, truncation_mode="middle")


def test_clear_errors(tiny_lm_plain_path):
    from transformers import AutoTokenizer

    rows = [{"prompt": [{"role": "user", "content": "Hi"}], "completion": [{"role": "assistant", "content": "Yo"}]}]
    with pytest.raises(HFSelectError, match="chat_template_path"):
        tokenize_prompt_completion(AutoTokenizer.from_pretrained(tiny_lm_plain_path), rows)
    from hf_select.testing import make_tiny_tokenizer

    with pytest.raises(HFSelectError, match="conversational"):
        tokenize_prompt_completion(make_tiny_tokenizer(), [{"prompt": "Hi", "completion": "Yo"}])
    unreadable = Dataset.from_list([{"instruction": "", "input": "", "output": ""}])
    assert supervised_token_counts(unreadable, make_tiny_tokenizer(), 16).dropped == [True]
