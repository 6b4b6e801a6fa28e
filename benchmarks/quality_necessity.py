"""Quality and necessity throughput: ``score_quality`` (reward backend) and ``score_necessity`` against one-row loops.

Reward model: a ``DebertaV2ForSequenceClassification`` built from a config with the shape of
``OpenAssistant/reward-model-deberta-v3-large-v2`` (``--shape large``; ``base`` and ``tiny`` for small machines) and
random weights (speed does not depend on them). No DeBERTa tokenizer is available offline, so the SmolLM2 tokenizer
encodes the (question, answer) text pair. The one-row loop is what the MoDS scripts do: for each row,
``tokenizer(question, answer, return_tensors="pt")`` and one forward pass.

Necessity: SmolLM2-135M-Instruct (the offline default) answers each prompt greedily (``--max-new-tokens``), and the
reward model above scores the answer. The one-row loop calls ``model.generate`` on one prompt at a time, then the
reward model on one pair at a time. Both use the same prompts and greedy decoding, so the answers should agree
(the script prints the share of identical answers).

Rows come from ``../shared/data/train/alpaca_9k.json`` (read in place, never copied). Defaults: CPU: ``base`` shape,
32 rows, 32 new tokens; CUDA: ``large`` shape, 512 rows, 256 new tokens.

Usage:
    python benchmarks/quality_necessity.py                              # CPU defaults
    python benchmarks/quality_necessity.py --device cuda                # GPU, full sizes
    python benchmarks/quality_necessity.py --shape tiny --rows 16 --skip-necessity
    python benchmarks/quality_necessity.py --threads 1                  # a CPU shared with other jobs
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "train" / "alpaca_9k.json"

# (hidden, layers, heads, intermediate, vocab); "large" is deberta-v3-large's shape.
SHAPES = {
    "large": (1024, 24, 16, 4096, 128100),
    "base": (768, 12, 12, 3072, 128100),
    "tiny": (128, 2, 2, 512, 128100),
}


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (torch {torch.__version__})"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"CPU {platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads, load average "
            f"{load:.1f} at start (torch {torch.__version__})")


def build_reward_model(shape: str, device: torch.device, dtype: torch.dtype):
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

    hidden, layers, heads, inter, vocab = SHAPES[shape]
    config = DebertaV2Config(
        vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=inter, max_position_embeddings=512, relative_attention=True, position_buckets=256,
        norm_rel_ebd="layer_norm", share_att_key=True, pos_att_type=["p2c", "c2p"], position_biased_input=False,
        layer_norm_eps=1e-7, type_vocab_size=0, num_labels=1, pad_token_id=0,
    )
    torch.manual_seed(0)
    model = DebertaV2ForSequenceClassification(config).to(device=device, dtype=dtype).eval()
    return model


def load_rows(path: Path, n: int) -> list[dict]:
    if not path.exists():
        sys.exit(f"{path} is absent: the benchmark reads the shared Alpaca rows from ../shared/data")
    return json.loads(path.read_text())[:n]


def question(row: dict) -> str:
    return f"{row['instruction']}\n{row['input']}" if row.get("input", "").strip() else row["instruction"]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def reward_loop(model, tok, pairs, device) -> list[float]:
    """MoDS-style: one tokenizer call and one forward pass per pair."""
    out = []
    with torch.inference_mode():
        for q, a in pairs:
            enc = tok(q, a, return_tensors="pt", truncation=True, max_length=512).to(device)
            enc.pop("token_type_ids", None)
            out.append(float(model(**enc).logits[0, 0].float()))
    return out


def bench_quality(args, device, dtype, rows, tok, rm) -> dict:
    from datasets import Dataset

    from hf_select import QualityConfig, QualityScorer

    ds = Dataset.from_list(rows)
    pairs = [(question(r), r["output"]) for r in rows]
    scorer = QualityScorer(QualityConfig(backend="reward", template="plain", max_length=512,
                                         max_batch_size=args.batch_size)).set_model(rm, tok)
    reward_loop(rm, tok, pairs[:2], device)  # warm-up
    scorer.score_pairs([q for q, _ in pairs[:2]], [a for _, a in pairs[:2]])
    with tempfile.TemporaryDirectory() as run_dir:
        sync(device)
        t = time.perf_counter()
        out = scorer.score(ds, run_dir=run_dir, cache=False, progress=False)
        sync(device)
        batched_s = time.perf_counter() - t
    sync(device)
    t = time.perf_counter()
    ref = reward_loop(rm, tok, pairs, device)
    sync(device)
    loop_s = time.perf_counter() - t
    got = list(out["quality"])
    diff = max(abs(a - b) for a, b in zip(got, ref, strict=True))
    return {"rows": len(rows), "batched_s": batched_s, "loop_s": loop_s, "batched_rows_s": len(rows) / batched_s,
            "loop_rows_s": len(rows) / loop_s, "speedup": loop_s / batched_s, "max_abs_diff": diff,
            "statuses": sorted(set(out["quality_status"]))}


def necessity_loop(lm, tok, rm, prompts, questions, max_new_tokens, device) -> tuple[list[str], list[float]]:
    """One prompt at a time through ``generate``, then one pair at a time through the reward model."""
    answers = []
    with torch.inference_mode():
        for ids in prompts:
            x = torch.tensor([ids], device=device)
            out = lm.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=max_new_tokens,
                              do_sample=False, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
            answers.append(tok.decode(out[0, len(ids):], skip_special_tokens=True).strip())
    scores = reward_loop(rm, tok, list(zip(questions, answers, strict=True)), device)
    return answers, scores


def bench_necessity(args, device, dtype, rows, tok, rm) -> dict:
    from datasets import Dataset

    from hf_select import NecessityConfig, NecessityScorer, QualityConfig
    from hf_select.models import DEFAULT_LM, load_causal_lm

    lm, lm_tok = load_causal_lm(DEFAULT_LM, dtype=dtype, device=device)
    ds = Dataset.from_list(rows)
    cfg = NecessityConfig(max_new_tokens=args.max_new_tokens, max_batch_size=args.batch_size,
                          quality=QualityConfig(backend="reward", template="plain", max_length=512,
                                                max_batch_size=args.batch_size))
    scorer = NecessityScorer(cfg).set_model(lm, lm_tok).set_quality_model(rm, tok)
    questions = [question(r) for r in rows]
    prompts = [lm_tok(lm_tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                                 add_generation_prompt=True), add_special_tokens=False)["input_ids"]
               for q in questions]
    necessity_loop(lm, lm_tok, rm, prompts[:1], questions[:1], 4, device)  # warm-up
    with tempfile.TemporaryDirectory() as run_dir:
        sync(device)
        t = time.perf_counter()
        out = scorer.score(ds, run_dir=run_dir, cache=False, progress=False)
        sync(device)
        batched_s = time.perf_counter() - t
    sync(device)
    t = time.perf_counter()
    answers, _ = necessity_loop(lm, lm_tok, rm, prompts, questions, args.max_new_tokens, device)
    sync(device)
    loop_s = time.perf_counter() - t
    same = sum(a == b for a, b in zip(out["generated_response"], answers, strict=True)) / len(rows)
    statuses: dict[str, int] = {}
    for s in out["necessity_status"]:
        statuses[s] = statuses.get(s, 0) + 1
    return {"rows": len(rows), "max_new_tokens": args.max_new_tokens, "batched_s": batched_s, "loop_s": loop_s,
            "batched_rows_s": len(rows) / batched_s, "loop_rows_s": len(rows) / loop_s, "speedup": loop_s / batched_s,
            "identical_answers": same, "statuses": statuses,
            "generated_tokens": int(sum(out["generated_tokens"]))}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present).")
    p.add_argument("--shape", choices=sorted(SHAPES), default=None, help="Reward shape (CPU: base, CUDA: large).")
    p.add_argument("--rows", type=int, default=None, help="Rows (CPU: 32, CUDA: 512).")
    p.add_argument("--necessity-rows", type=int, default=None, help="Rows for necessity (default: --rows; CPU: 16).")
    p.add_argument("--max-new-tokens", type=int, default=None, help="Necessity answer length (CPU: 32, CUDA: 256).")
    p.add_argument("--batch-size", type=int, default=64, help="max_batch_size of the scorers.")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Alpaca-format JSON rows.")
    p.add_argument("--skip-necessity", action="store_true", help="Only the reward-model benchmark.")
    p.add_argument("--json", type=Path, default=None, help="Also write the results as JSON here.")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (both sides); 1 is far faster on a CPU shared with other jobs.")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    gpu = device.type == "cuda"
    args.shape = args.shape or ("large" if gpu else "base")
    args.rows = args.rows or (512 if gpu else 32)
    args.necessity_rows = args.necessity_rows or (args.rows if gpu else min(args.rows, 16))
    args.max_new_tokens = args.max_new_tokens or (256 if gpu else 32)
    dtype = torch.bfloat16 if gpu and torch.cuda.is_bf16_supported() else torch.float32

    from hf_select.models import DEFAULT_LM, load_tokenizer

    tok = load_tokenizer(DEFAULT_LM)
    rm = build_reward_model(args.shape, device, dtype)
    rows = load_rows(args.data, max(args.rows, args.necessity_rows))
    cmd = "python benchmarks/quality_necessity.py " + " ".join(argv if argv is not None else sys.argv[1:])
    result = {"machine": machine(device), "dtype": str(dtype).replace("torch.", ""), "shape": args.shape,
              "command": cmd.strip(), "quality": bench_quality(args, device, dtype, rows[: args.rows], tok, rm)}
    q = result["quality"]
    print(f"machine: {result['machine']}  dtype: {result['dtype']}")
    print(f"score_quality (reward, deberta-v3 {args.shape} shape, random weights): {q['rows']} rows, "
          f"{q['batched_rows_s']:.2f} rows/s batched vs {q['loop_rows_s']:.2f} rows/s one row at a time "
          f"(x{q['speedup']:.2f}); max |batched - loop| = {q['max_abs_diff']:.2e}; statuses {q['statuses']}")
    if not args.skip_necessity:
        result["necessity"] = bench_necessity(args, device, dtype, rows[: args.necessity_rows], tok, rm)
        n = result["necessity"]
        print(f"score_necessity (SmolLM2-135M-Instruct answers, {args.max_new_tokens} new tokens max, + reward "
              f"{args.shape}): {n['rows']} rows, {n['batched_rows_s']:.2f} rows/s batched vs {n['loop_rows_s']:.2f} "
              f"rows/s one row at a time (x{n['speedup']:.2f}); identical answers {n['identical_answers']:.0%}; "
              f"statuses {n['statuses']}; {n['generated_tokens']} tokens generated")
    print(f"command: {result['command']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
