"""Write the bad-input corpus under tests/data/bad/ and its manifest.json.

    python tests/data/make_bad_corpus.py          # (re)write the corpus
    python tests/data/make_bad_corpus.py --readme # also rewrite the README's reliability tables
    python tests/data/make_bad_corpus.py --check  # exit 1 when the files on disk or the README's reliability
                                                  # tables differ from what this writes

Every case is one file (or folder) plus a manifest entry:

- ``kind: "row"``: the file loads; ``statuses`` is the ``ifd_status`` every row must get, in order (a row that
  cannot be scored gets NaN and that status, the others are scored: the run goes on);
- ``kind: "file"``: the whole input is unusable; every entry point stops with one ``hf-select: error:`` line and
  exit code 2 (Python: ``HFSelectError``), never a traceback. ``error`` is a piece of text the line must hold.

The scoring config the statuses assume is ``SCORE_CONFIG`` below (a tiny model, ``template="chat"``,
``max_length=256``). The README's reliability table lists the same cases; tests/test_reliability_inputs.py keeps
the table, this manifest and the observed behaviour equal.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BAD = HERE / "bad"
MANIFEST = BAD / "manifest.json"
README = HERE.parents[1] / "README.md"
README_MARKERS = ("<!-- reliability-table:start -->", "<!-- reliability-table:end -->")

# The config the row statuses hold for (the test suite scores with these settings).
SCORE_CONFIG = {"template": "chat", "max_length": 256}

GOOD = {"instruction": "Add 2 and 3.", "input": "", "output": "2 + 3 = 5"}
GOOD2 = {"instruction": "Reverse the string hello.", "input": "", "output": "olleh"}
SHAREGPT_GOOD = {"conversations": [{"from": "human", "value": "Say hi"}, {"from": "gpt", "value": "hi"}]}
MESSAGES_GOOD = {"messages": [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "hi"}]}
# A few hundred distinct words: several times SCORE_CONFIG's max_length in tokens of any tokenizer.
LONG_TEXT = " ".join(f"item{i} is {i * 7 % 13} apples" for i in range(600))


def _line(obj: object) -> str:
    return json.dumps(obj, ensure_ascii=False)


def _jsonl(*rows: object) -> bytes:
    return ("\n".join(_line(r) for r in rows) + "\n").encode("utf-8")


def cases() -> list[dict]:
    """Every case: name, file, kind, what is wrong, the content, and the expected outcome."""
    c: list[dict] = []

    def row(name: str, what: str, content: bytes, statuses: list[str], file: str | None = None,
            **other: list[str]) -> None:
        """``other``: the statuses of scorers that see this row differently from IFD (by scorer name)."""
        c.append({"name": name, "file": file or f"{name}.jsonl", "kind": "row", "what": what, "content": content,
                  "statuses": statuses, "other_statuses": other})

    def whole(name: str, what: str, content: bytes | dict | None, error: str, file: str | None = None,
              fails_at: str = "load") -> None:
        """``fails_at``: "load" (no dataset can be read) or "format" (rows load, but no known row format)."""
        c.append({"name": name, "file": file or f"{name}.jsonl", "kind": "file", "what": what, "content": content,
                  "error": error, "fails_at": fails_at})

    # -- missing and None fields ----------------------------------------------------------------------------------
    row("missing_output", "a row without the `output` field", _jsonl(GOOD, {"instruction": "Hi", "input": ""}, GOOD2),
        ["ok", "invalid_row", "ok"])
    row("none_output", "`output` is null", _jsonl(GOOD, {"instruction": "Hi", "input": "", "output": None}),
        ["ok", "invalid_row"])
    row("none_instruction", "`instruction` is null", _jsonl({"instruction": None, "input": "", "output": "x"}, GOOD),
        ["invalid_row", "ok"])
    row("none_input", "`input` is null (optional: read as empty)",
        _jsonl({"instruction": "Add 2 and 3.", "input": None, "output": "5"}, GOOD), ["ok", "ok"])
    # -- numbers and lists where text belongs ---------------------------------------------------------------------
    row("number_output", "`output` is a number", _jsonl(GOOD, {"instruction": "Add", "input": "", "output": 42}),
        ["ok", "invalid_row"])
    row("float_instruction", "`instruction` is a float",
        _jsonl({"instruction": 3.5, "input": "", "output": "x"}, GOOD), ["invalid_row", "ok"])
    row("bool_output", "`output` is true", _jsonl(GOOD, {"instruction": "Yes?", "input": "", "output": True}),
        ["ok", "invalid_row"])
    row("list_output", "`output` is a list of strings",
        _jsonl(GOOD, {"instruction": "List", "input": "", "output": ["a", "b"]}), ["ok", "invalid_row"])
    row("dict_input", "`input` is an object", _jsonl({"instruction": "Hi", "input": {"k": "v"}, "output": "x"}, GOOD),
        ["invalid_row", "ok"])
    row("number_output_json_array", "a .json array whose one `output` is a number",
        json.dumps([GOOD, {"instruction": "Add", "input": "", "output": 5}, GOOD2]).encode(),
        ["ok", "invalid_row", "ok"], file="number_output_json_array.json")
    row("nan_literal", "a bare NaN where text belongs (Python's JSON extension)",
        _jsonl(GOOD) + b'{"instruction": NaN, "input": "", "output": "x"}\n',
        ["ok", "invalid_row"])
    # -- empty, whitespace, huge ----------------------------------------------------------------------------------
    row("empty_output", "`output` is the empty string", _jsonl(GOOD, {"instruction": "Hi", "input": "", "output": ""}),
        ["ok", "empty_response"], embed=["ok", "ok"], necessity=["ok", "ok"])
    row("whitespace_output", "`output` is only spaces, tabs and newlines",
        _jsonl(GOOD, {"instruction": "Hi", "input": "", "output": " \n\t  \r\n"}), ["ok", "empty_response"],
        embed=["ok", "ok"], necessity=["ok", "ok"])
    row("huge_output", "a 100,000-character response (cut at max_length, same tokens in both passes)",
        _jsonl(GOOD, {"instruction": "Write a lot.", "input": "", "output": "lorem ipsum " * 8500}), ["ok", "ok"],
        quality=["ok", "truncated"], indicators=["ok", "truncated"])
    row("prompt_too_long", "the prompt alone is longer than max_length",
        _jsonl({"instruction": LONG_TEXT, "input": "", "output": "ok"}, GOOD), ["prompt_too_long", "ok"],
        quality=["truncated", "ok"], embed=["ok", "ok"])
    row("whitespace_instruction", "`instruction` is only whitespace (the prompt is the template alone)",
        _jsonl({"instruction": "   ", "input": "", "output": "x y z"}, GOOD), ["ok", "ok"],
        embed=["empty_text", "ok"])
    # -- broken lines ---------------------------------------------------------------------------------------------
    row("broken_json_line", "one line of broken JSON among good lines",
        _jsonl(GOOD) + b'{"instruction": "x", "output": \n' + _jsonl(GOOD2), ["ok", "invalid_row", "ok"])
    row("truncated_last_line", "the last line is cut off (a writer killed mid-line)",
        _jsonl(GOOD, GOOD2) + b'{"instruction": "Add 4 and 5.", "inp', ["ok", "ok", "invalid_row"])
    row("non_object_lines", "lines holding a JSON list, string and number instead of an object",
        _jsonl(GOOD) + b'[1, 2]\n"just text"\n42\n' + _jsonl(GOOD2), ["ok", "invalid_row", "invalid_row",
                                                                     "invalid_row", "ok"])
    row("null_first_line", "the first line is a bare null (crashes pyarrow's JSON reader, so read line by line)",
        b"null\n" + _jsonl(GOOD, GOOD2), ["invalid_row", "ok", "ok"])
    row("blank_lines", "blank and whitespace-only lines between rows (skipped, not rows)",
        b"\n" + _jsonl(GOOD) + b"   \n\n" + _jsonl(GOOD2) + b"\n\n", ["ok", "ok"])
    row("crlf_lines", "Windows line endings", _jsonl(GOOD, GOOD2).replace(b"\n", b"\r\n"), ["ok", "ok"])
    row("utf8_bom", "a UTF-8 byte-order mark before the first row", b"\xef\xbb\xbf" + _jsonl(GOOD, GOOD2),
        ["ok", "ok"])
    row("bom_with_broken_line", "a byte-order mark in a file that also has a broken line (line-by-line reading)",
        b"\xef\xbb\xbf" + _jsonl(GOOD) + b"{oops\n" + _jsonl(GOOD2), ["ok", "invalid_row", "ok"])
    row("unicode_line_separator", "U+2028/U+2029 inside a string, in a file read line by line",
        _jsonl({"instruction": "Join\u2028these\u2029lines", "input": "", "output": "ok\u2028ok"}) + b"{oops\n",
        ["ok", "invalid_row"])
    # -- mixed formats, roles, turns ------------------------------------------------------------------------------
    row("mixed_formats", "Alpaca, ShareGPT, messages and prompt/completion rows in one file",
        _jsonl(GOOD, SHAREGPT_GOOD, MESSAGES_GOOD, {"prompt": "Say hi", "completion": "hi"}), ["ok"] * 4)
    row("unknown_role_sharegpt", "a ShareGPT turn from 'narrator'",
        _jsonl(SHAREGPT_GOOD, {"conversations": [{"from": "narrator", "value": "Once"}, {"from": "gpt",
                                                                                          "value": "upon"}]}),
        ["ok", "unknown_role"])
    row("unknown_role_messages", "a message with role 'robot'",
        _jsonl(MESSAGES_GOOD, {"messages": [{"role": "user", "content": "Hi"}, {"role": "robot", "content": "x"}]}),
        ["ok", "unknown_role"])
    row("missing_role_key", "a message with no role at all",
        _jsonl(MESSAGES_GOOD, {"messages": [{"role": "user", "content": "Hi"}, {"content": "x"}]}),
        ["ok", "unknown_role"])
    row("ends_with_user_turn", "a conversation of one user turn and no answer",
        _jsonl(SHAREGPT_GOOD, {"conversations": [{"from": "human", "value": "Anyone there?"}]}),
        ["ok", "no_assistant_turn"])
    row("trailing_user_turn", "a conversation ending with an unanswered user turn (the last answered turn is scored)",
        _jsonl(MESSAGES_GOOD, {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"},
                                            {"role": "user", "content": "And?"}]}),
        ["ok", "ok"])
    row("empty_conversation", "an empty list of turns", _jsonl(SHAREGPT_GOOD, {"conversations": []}),
        ["ok", "no_assistant_turn"])
    row("conversation_not_list", "`conversations` is a string", _jsonl(SHAREGPT_GOOD, {"conversations": "Hi there"}),
        ["ok", "invalid_row"])
    row("turn_not_mapping", "turns are plain strings", _jsonl(MESSAGES_GOOD, {"messages": ["hi", "hello"]}),
        ["ok", "invalid_row"])
    row("content_none", "a message whose content is null",
        _jsonl(MESSAGES_GOOD, {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant",
                                                                               "content": None}]}),
        ["ok", "invalid_row"])
    row("no_user_turn", "a system turn and an answer, no user turn",
        _jsonl(MESSAGES_GOOD, {"messages": [{"role": "system", "content": "Be nice"}, {"role": "assistant",
                                                                                      "content": "ok"}]}),
        ["ok", "invalid_row"])
    row("malformed_history", "Alpaca `history` that is not a list of [question, answer] pairs",
        _jsonl(GOOD, {"instruction": "Q", "input": "", "output": "A", "history": [["only one"]]}),
        ["ok", "invalid_row"])
    row("completion_none", "prompt/completion row with a null completion",
        _jsonl({"prompt": "Say hi", "completion": "hi"}, {"prompt": "Say hi", "completion": None}),
        ["ok", "invalid_row"])
    # -- bytes and characters -------------------------------------------------------------------------------------
    row("invalid_utf8", "a line holding bytes that are not UTF-8",
        _jsonl(GOOD) + b'{"instruction": "caf\xe9 \xff\xfe", "input": "", "output": "x"}\n' + _jsonl(GOOD2),
        ["ok", "invalid_row", "ok"])
    row("nul_escaped", "a \\u0000 (NUL) inside a response", _jsonl(GOOD, {"instruction": "Hi", "input": "",
                                                                          "output": "a\u0000b"}),
        ["ok", "invalid_row"])
    row("nul_raw_byte", "a raw NUL byte inside a line (not valid JSON)",
        _jsonl(GOOD) + b'{"instruction": "Hi", "input": "", "output": "a\x00b"}\n', ["ok", "invalid_row"])
    row("lone_surrogate", "an unpaired UTF-16 surrogate (\\ud800) in a response",
        _jsonl(GOOD) + b'{"instruction": "Hi", "input": "", "output": "bad \\ud800 char"}\n', ["ok", "invalid_row"])
    row("rtl_and_emoji", "right-to-left text, bidi override marks, emoji with ZWJ and flags",
        _jsonl({"instruction": "ترجم: مرحبا \u202eעברית\u202c", "input": "", "output": "שלום 👨‍👩‍👧‍👦 🇫🇷 ✅"}, GOOD),
        ["ok", "ok"])
    row("control_chars", "terminal escapes, bell and zero-width characters",
        _jsonl({"instruction": "Colour \x1b[31mred\x1b[0m\x07", "input": "", "output": "zero\u200bwidth\ufeff"}, GOOD),
        ["ok", "ok"])
    row("duplicate_rows", "the same row three times (each scored, equal scores)", _jsonl(GOOD, GOOD, GOOD),
        ["ok", "ok", "ok"])
    row("all_rows_bad", "no row can be scored (the run still finishes)",
        _jsonl({"instruction": None, "input": "", "output": "x"}, {"instruction": "Hi", "input": "", "output": ""}),
        ["invalid_row", "empty_response"], embed=["invalid_row", "ok"], necessity=["invalid_row", "ok"])
    row("csv_missing_cell", "a CSV file with an empty `output` cell",
        b"instruction,input,output\nAdd 2 and 3.,,2 + 3 = 5\nHi,,\n", ["ok", "invalid_row"],
        file="csv_missing_cell.csv")
    # -- whole-file problems --------------------------------------------------------------------------------------
    whole("empty_file", "a file of zero bytes", b"", "empty")
    whole("whitespace_file", "a file of blank lines only", b"\n  \n\t\n", "no rows")
    whole("directory_without_data", "a directory instead of a file, with no dataset in it",
          {"README.txt": b"not a dataset\n"}, "no dataset in it", file="directory_without_data")
    whole("missing_file", "a path that does not exist", None, "no such file", file="missing_file.jsonl")
    whole("prose_file", "plain text with a .jsonl name", b"Dear diary,\nthis is not JSON at all.\n",
          "not a readable json dataset")
    whole("json_scalar", "a JSON number instead of rows", b"42\n", "not a readable json dataset",
          file="json_scalar.json")
    whole("json_array_of_numbers", "a JSON array of numbers", b"[1, 2, 3]\n", "column_mapping",
          file="json_array_of_numbers.json", fails_at="format")
    whole("empty_json_array", "a JSON array with no rows", b"[]\n", "no rows", file="empty_json_array.json")
    whole("only_nulls", "JSON Lines of bare nulls", b"null\n  null\n", "no line holds a JSON object")
    whole("all_lines_broken", "JSON Lines where no line parses", b'{"a": \n{"b"\n', "not a readable json dataset")
    whole("no_known_columns", "rows whose columns match no known format",
          _jsonl({"foo": "a", "bar": "b"}, {"foo": "c", "bar": "d"}), "column_mapping",
          fails_at="format")
    whole("binary_garbage", "random binary bytes with a .jsonl name",
          bytes((i * 97 + 13) % 256 for i in range(512)), "not a readable json dataset")
    whole("corrupt_parquet", "a .parquet file that is not Parquet", b"PAR1" + b"\x00garbage" * 40 + b"PAR1",
          "not a readable parquet dataset",
          file="corrupt_parquet.parquet")
    whole("broken_saved_dataset", "a save_to_disk folder whose data files are gone",
          {"dataset_info.json": b"{}", "state.json": _line({"_data_files": [{"filename": "data-00000-of-00001.arrow"}],
                                                             "_fingerprint": "x", "_split": None}).encode()},
          "not a readable save_to_disk folder", file="broken_saved_dataset")
    return c


def expected_outcome(case: dict) -> str:
    """The outcome cell of the README table: every row's status in order, or exit 2 and the error's key text."""
    if case["kind"] == "file":
        return f"exit 2, one line: `{case['error']}`"
    return " ".join(f"`{s}`" for s in case["statuses"])


def parse_outcome(cell: str) -> tuple[str, object]:
    """``("file", error text)`` or ``("row", [statuses])`` from an outcome cell of the README table."""
    quoted = re.findall(r"`([^`]+)`", cell)
    if cell.strip().startswith("exit 2"):
        return "file", quoted[0] if quoted else ""
    return "row", quoted


def readme_table(all_cases: list[dict] | None = None) -> str:
    """The corpus table of the README's reliability section."""
    lines = [
        "| case | input | what is wrong | outcome (`hf-select score ifd`: status of each row, or exit code) |",
        "|---|---|---|---|",
    ]
    for case in all_cases or cases():
        what = case["what"].replace("|", "\\|")
        lines.append(f"| `{case['name']}` | `{case['file']}` | {what} | {expected_outcome(case)} |")
    return "\n".join(lines)


def read_readme_table(readme_text: str) -> dict[str, dict[str, str]]:
    """Rows of the README's corpus table by case name: ``{"file": ..., "what": ..., "outcome": ...}``."""
    start, end = README_MARKERS
    section = readme_text.split(start, 1)[1].split(end, 1)[0]
    rows: dict[str, dict[str, str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if len(cells) != 4 or not cells[0].startswith("`"):
            continue
        name = cells[0].strip("`")
        if name in rows:
            raise ValueError(f"the README table lists {name!r} twice")
        rows[name] = {"file": cells[1].strip("`"), "what": cells[2], "outcome": cells[3]}
    return rows


def manifest(all_cases: list[dict]) -> dict:
    entries = []
    for case in all_cases:
        entry = {k: v for k, v in case.items() if k != "content"}
        entry["outcome"] = expected_outcome(case)
        entries.append(entry)
    return {"score_config": SCORE_CONFIG, "cases": entries}


def write(target: Path = BAD) -> None:
    """Write every case and the manifest into ``target`` (a fresh folder)."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    all_cases = cases()
    for case in all_cases:
        path = target / case["file"]
        content = case["content"]
        if content is None:
            continue  # missing on purpose
        if isinstance(content, dict):
            path.mkdir()
            for name, data in content.items():
                (path / name).write_bytes(data)
        else:
            path.write_bytes(content)
    (target / "manifest.json").write_text(json.dumps(manifest(all_cases), indent=1, ensure_ascii=False) + "\n",
                                          encoding="utf-8")


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# What else was tried (tests/test_reliability_*.py): the fault, what happens, and the test that checks it.
FAULTS = [
    ("`hf-select score` killed with SIGKILL while a shard is half written, then started again",
     "finished shards are reused, the half shard never had its final name, the output equals an uninterrupted "
     "run's (no row lost or duplicated)", "test_reliability_interrupt.py::test_sigkill_during_scoring_then_resume"),
    ("a recipe killed with SIGKILL between stages, then started again",
     "finished stages are reused, the stage being computed never had its final name, the selection and the pushed "
     "subset equal an uninterrupted run's",
     "test_reliability_interrupt.py::test_sigkill_recipe_between_stages_then_resume"),
    ("saving an output, a selection or a stage fails half way", "nothing half-written under the final name; an "
     "older finished output stays", "test_reliability_interrupt.py::test_save_rows_never_leaves_half_an_output"),
    ("CUDA out of memory (simulated) in a batch", "the batch is halved and retried; scores equal a normal run's; a "
     "row that never fits gets `oom`",
     "test_reliability_resources.py::test_cuda_oom_shrinks_the_batch_through_the_cli"),
    ("disk full (ENOSPC) on the third shard", "one `hf-select: error: no space left ...` line, exit 2, finished "
     "shards kept, the next run scores only the rest", "test_reliability_resources.py::test_full_disk_while_scoring"),
    ("disk full while saving the scored output", "exit 2, no output, every shard kept: the next run scores nothing "
     "again", "test_reliability_resources.py::test_full_disk_while_saving_the_output"),
    ("a seed model that never emits EOS", "generation stops at `max_new_tokens`, status `no_eos`, the cut answer is "
     "still scored", "test_reliability_resources.py::test_generation_that_never_stops_is_capped"),
    ("rows longer than the model's position table (GPT-2-style, 64 positions)", "IFD cuts them to the model's "
     "limit (`prompt_too_long` when the prompt alone is longer)",
     "test_reliability_inputs.py::test_cli_score_with_rows_longer_than_the_model_limit"),
    ("`python recipes/<recipe>.py` (all four) on an empty file, a folder without data, unknown columns",
     "one `hf-select: error:` line, exit 2", "test_reliability_inputs.py::test_recipe_script_on_unusable_input"),
    ("the same inputs, config and seed, twice", "the saved selection is the same, byte for byte",
     "test_reliability_determinism.py::test_same_selection_byte_for_byte_across_runs"),
    ("one process, then two (`torchrun --nproc_per_node 2`, gloo on CPU)", "the same scores and selection, byte "
     "for byte", "test_reliability_determinism.py::test_one_and_two_processes_give_the_same_selection"),
    ("any row (hypothesis: every format, any value, any code point)", "a conversation or a row status, never "
     "another exception; scoring keeps every row, NaN exactly where the status is not `ok`",
     "test_reliability_properties.py::test_scoring_keeps_every_row_and_marks_each_failure"),
    ("a model folder with both safetensors and a pickle", "the safetensors weights are loaded",
     "test_reliability_safety.py::test_models_load_from_safetensors_when_a_pickle_is_beside_them"),
    ("default configs", "`trust_remote_code` is off everywhere unless the user turns it on",
     "test_reliability_safety.py::test_every_loader_passes_trust_remote_code_false"),
    ("a token in `HF_TOKEN`", "it appears in no log, card or output",
     "test_reliability_safety.py::test_environment_token_never_appears"),
    ("a token inside a mistyped path, URL or model id", "the error line shows `hf_***` instead",
     "test_reliability_safety.py::test_error_messages_never_show_a_token"),
    ("`hf-select push` without `--allow_public`", "private repositories",
     "test_reliability_safety.py::test_push_is_private_unless_the_user_says_public"),
    ("a recipe's trained model folder", "no pickle: Trainer's `training_args.bin` is replaced by "
     "`training_args.json`", "test_reliability_safety.py::test_recipe_outputs_hold_no_pickles"),
    ("a `hub_token` given in `sft_kwargs`", "masked (`***`) in both cards, `card_context.json`, `stage.json` and "
     "`summary.json`", "test_reliability_safety.py::test_token_in_training_arguments_never_reaches_cards_or_outputs"),
    ("the causal-LM embedder on texts longer than the model's position table", "texts are cut to the model's "
     "limit, like quality, indicators and necessity",
     "test_reliability_inputs.py::test_other_scorers_with_rows_longer_than_the_model_limit"),
    ("a recipe killed with SIGKILL during an SFT stage (step 12 of 16, `save_steps` 5), then started again",
     "training resumes from the stage's last Trainer checkpoint (`checkpoint-10`, not step 0); the final model "
     "equals an uninterrupted run's (every weight within 1e-6, same seed, CPU fp32; measured 0.0); checkpoints "
     "are removed when the stage finishes",
     "test_reliability_interrupt.py::test_sigkill_recipe_during_training_resumes_from_the_last_checkpoint"),
    ("IFD or embedding scores with a model given by `set_model` (`.score()` or `Dataset.map`)", "the fingerprint "
     "holds a digest of that model's weights: the configured model's cached scores are never returned, and "
     "training the model in place changes the fingerprint",
     "test_reliability_silent.py::test_dataset_map_with_set_model_does_not_reuse_the_configured_models_cache"),
    ("`.score(run_dir=X, cache=False)` where X holds other files", "refused with an error naming them; nothing is "
     "removed (only a scorer's own `shard-*.parquet`, `run.json` are ever removed); another run's shards in X are "
     "scored again, not read back",
     "test_reliability_silent.py::test_cache_false_refuses_a_run_dir_that_holds_other_files"),
    ("CUDA out of memory in a batch (a real allocation, watched by a weakref)", "the retry starts after the "
     "failed batch's tensors are freed and the device cache is cleared (outside the `except` block)",
     "test_reliability_silent.py::test_oom_retry_runs_after_the_failed_batch_is_released"),
    ("`hf-select score` with `--output` that is or holds the input, is a file, lies below a file",
     "one `hf-select: error:` line, exit 2, before any model is loaded",
     "test_reliability_silent.py::test_score_refuses_a_bad_output_before_loading_a_model"),
    ("one broken line in a JSON Lines file with its own columns", "the good lines keep every column (also in the "
     "`hf-select score` output); the broken line is a row of nulls, `invalid_row`",
     "test_reliability_silent.py::test_a_broken_jsonl_line_keeps_the_other_lines_columns"),
    ("every status string a scorer can write (source scan)", "listed in its declared statuses (`IFD_STATUSES` has "
     "`empty_instruction`)", "test_reliability_statuses.py::test_every_emitted_status_is_declared"),
    ("a subcommand module missing; the Hub not answering the embedder's backend check", "an `ImportError` naming "
     "the subcommand; a warning naming the model and `EmbedConfig.backend` (never a silent switch)",
     "test_reliability_silent.py::test_embedder_says_when_the_hub_check_fails"),
]


# Known bugs, each pinned by a test marked xfail(strict=True): when it is fixed, the test fails until its mark and
# its row go (the row then moves to FAULTS, worded as what happens now). None at present.
KNOWN_BUGS: list[tuple[str, str, str]] = []


README_INTRO = (
    "What was tried, and what happens; the test suite runs every case and checks this table against what it "
    "observes. The bad-input corpus is `tests/data/bad` (written by `tests/data/make_bad_corpus.py`). Each case goes "
    "through `load_rows`, `Dataset.map` with the IFD scorer, `.score()`, `hf-select score ifd` (`--template chat "
    "--max-length 256`, a tiny model), `hf-select select` / `report`, the quality, embedding, indicator and "
    "necessity scorers, the Superfiltering recipe (all row cases in one file) and the four recipe scripts (the "
    "unusable files). A row-level problem gives that row NaN and the status shown, and the run "
    "goes on; a file-level problem gives one `hf-select: error:` line naming the file, and exit code 2 (in Python, "
    "an `HFSelectError`, or a `DatasetFormatError` before any scoring). Other scorers differ only where their own "
    "rules do (the reward model scores an over-long pair `truncated`; the embedding of an `instruction` does not "
    "need the response); `manifest.json` lists those too."
)


def faults_table() -> str:
    lines = ["| fault | what happens | checked by |", "|---|---|---|"]
    lines += [f"| {fault} | {what} | `tests/{test}` |" for fault, what, test in FAULTS + KNOWN_BUGS]
    return "\n".join(lines)


def readme_text(text: str) -> str:
    """``text`` (the README) with the corpus table and the faults table, as this script writes them, between the
    reliability markers."""
    start, end = README_MARKERS
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    body = (f"{README_INTRO}\n\n{readme_table()}\n\nBeyond the bad-input corpus:\n\n{faults_table()}")
    return f"{head}{start}\n{body}\n{end}{tail}"


def write_readme(path: Path = README) -> None:
    """Write the corpus table and the faults table between the reliability markers of the README."""
    path.write_text(readme_text(path.read_text(encoding="utf-8")), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="Only compare the corpus on disk and the README's reliability tables with this script.")
    parser.add_argument("--readme", action="store_true", help="Also rewrite the README's corpus table.")
    args = parser.parse_args(argv)
    if args.check:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            write(Path(tmp) / "bad")
            same = _tree(Path(tmp) / "bad") == _tree(BAD)
        print("corpus up to date" if same else f"{BAD} differs from {__file__}: run it again")
        text = README.read_text(encoding="utf-8")
        readme_same = readme_text(text) == text
        print("README reliability tables up to date" if readme_same else
              f"the reliability tables of {README} differ from {__file__}: run it again with --readme")
        return 0 if same and readme_same else 1
    write()
    if args.readme:
        write_readme()
    print(f"wrote {len(cases())} cases to {BAD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
