"""The offline default model: resolves without the Hub, fine-tunable (not quantized), EOS ends a turn."""

from __future__ import annotations

import math

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2():
    from hf_select.models import DEFAULT_LM, ModelLoadError, load_causal_lm

    try:
        return load_causal_lm(DEFAULT_LM, device="cpu")
    except ModelLoadError as err:
        pytest.skip(f"the offline SmolLM2 copy is unavailable here: {err}")


def test_offline_smollm2_is_a_plain_model_with_im_end_as_eos(smollm2):
    model, tok = smollm2
    assert getattr(model.config, "quantization_config", None) is None
    assert tok.eos_token == "<|im_end|>" and model.config.eos_token_id == tok.eos_token_id
    assert tok.chat_template


def test_real_model_ifd_separates_a_swapped_answer(smollm2):
    from hf_select import IFDConfig, IFDScorer

    scorer = IFDScorer(IFDConfig()).set_model(*smollm2)
    out = scorer(
        {
            "instruction": ["What is the capital of France?", "What is the capital of France?"],
            "input": ["", ""],
            "output": ["The capital of France is Paris.", "Photosynthesis turns light into chemical energy."],
        }
    )
    assert out["ifd_status"] == ["ok", "ok"]
    assert all(math.isfinite(v) for v in out["ifd"])
    assert out["ifd"][0] < out["ifd"][1]


def test_unknown_model_offline_names_both_sources():
    from hf_select.models import ModelLoadError, resolve_model_path

    with pytest.raises(ModelLoadError, match="SmolLM2.*MiniLM|Offline copies"):
        resolve_model_path("someone/not-a-real-model-xyz")
