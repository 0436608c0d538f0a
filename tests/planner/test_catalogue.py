"""The catalogues load, cover what the planner promises, and refuse unsourced figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from forebay.planner.catalogue import (
    Accelerator,
    CatalogueError,
    accelerator,
    accelerators,
    model,
    models,
)

REQUIRED_GPUS = {
    "h100-sxm",
    "h100-pcie",
    "h200",
    "b200",
    "gb200",
    "a100-80gb",
    "l40s",
    "l4",
    "mi300x",
    "mi325x",
    "gaudi3",
    "tpu-v5e",
    "tpu-v6e",
}
REQUIRED_MODELS = {
    "llama-2-70b",
    "llama-3.1-8b",
    "llama-3.1-70b",
    "llama-3.1-405b",
    "qwen2.5-7b",
    "qwen2.5-32b",
    "qwen2.5-72b",
    "mixtral-8x7b",
    "deepseek-v3",
    "gpt-oss-20b",
    "gpt-oss-120b",
}


def test_catalogues_cover_the_promised_entries() -> None:
    assert set(accelerators()) >= REQUIRED_GPUS
    assert set(models()) >= REQUIRED_MODELS


@pytest.mark.parametrize("entry", [*accelerators().values(), *models().values()])
def test_every_figure_names_a_source(entry: object) -> None:
    assert hasattr(entry, "sources")
    for name, value in entry:  # type: ignore[attr-defined]
        figure = isinstance(value, int | float) and not isinstance(value, bool)
        if figure and name in entry.model_fields_set:  # type: ignore[attr-defined]
            assert entry.sources.get(name), f"{name} has no source"  # type: ignore[attr-defined]


def test_an_unsourced_figure_is_refused() -> None:
    with pytest.raises(ValueError, match="figures without a source: memory_gb"):
        Accelerator(
            name="x",
            vendor="x",
            memory_gb=80,
            memory_bandwidth_gbs=1,
            bf16_tflops=1,
            interconnect="x",
            interconnect_gbs=1,
            matmul_efficiency_bf16=0.5,
            sources={
                k: "s"
                for k in (
                    "memory_bandwidth_gbs",
                    "bf16_tflops",
                    "interconnect_gbs",
                    "matmul_efficiency_bf16",
                )
            },
        )


def test_moe_expert_size_follows_from_total_and_active() -> None:
    mixtral = model("mixtral-8x7b")
    # (46.7B - 12.9B) / (8 experts - 2 active) = 5.633B per expert (all layers).
    assert mixtral.expert_params == pytest.approx(5.6333e9, rel=1e-3)
    assert model("llama-3.1-8b").expert_params == 0


def test_unknown_names_list_the_known_ones() -> None:
    with pytest.raises(CatalogueError, match="h100-sxm"):
        accelerator("h1000")
    with pytest.raises(CatalogueError, match=r"llama-3\.1-8b"):
        model("llama-9")


def test_hugging_face_config_is_read_and_counted(tmp_path: Path) -> None:
    cfg = {  # meta-llama/Llama-3.1-8B config.json, abridged
        "hidden_size": 4096,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "intermediate_size": 14336,
        "vocab_size": 128256,
        "tie_word_embeddings": False,
    }
    path = tmp_path / "llama" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps(cfg))
    spec = model(str(path))
    assert (spec.layers, spec.kv_heads, spec.head_dim) == (32, 8, 128)
    assert spec.params_b == pytest.approx(8.03, rel=0.01)  # the model card's count
    assert "counted from the shapes" in spec.sources["params_b"]
