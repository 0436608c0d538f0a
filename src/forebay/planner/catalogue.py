"""Accelerator and model catalogues: typed, validated, every figure with its source.

The data lives in `data/*.yaml` next to this module so people can read and edit it; the
loader refuses an entry whose figures lack a source, because a planner whose inputs
cannot be checked cannot be trusted.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

Precision = Literal["bf16", "fp8", "int4"]
KvDtype = Literal["bf16", "fp8"]

BYTES_PER_PARAM: dict[str, float] = {"bf16": 2.0, "fp8": 1.0, "int4": 0.5}
"""Weight storage per parameter; int4 ignores the few percent of group scales."""

BYTES_PER_KV_ELEMENT: dict[str, float] = {"bf16": 2.0, "fp8": 1.0}


class CatalogueError(ValueError):
    """A catalogue entry or a config.json the planner cannot use."""


class _Sourced(BaseModel):
    """An entry whose numeric figures must each name a source."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sources: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _every_figure_has_a_source(self) -> _Sourced:
        missing = [
            name
            for name, value in self
            if name in self.model_fields_set
            and isinstance(value, int | float)
            and not isinstance(value, bool)
            and name not in self.sources
        ]
        if missing:
            raise ValueError(f"figures without a source: {', '.join(sorted(missing))}")
        return self


class Accelerator(_Sourced):
    """One GPU (or TPU chip): the figures the performance model needs."""

    key: str = ""
    name: str
    vendor: str
    memory_gb: float = Field(gt=0)
    memory_bandwidth_gbs: float = Field(gt=0)
    bf16_tflops: float = Field(gt=0)
    fp8_tflops: float | None = Field(default=None, gt=0)
    tdp_w: float | None = Field(default=None, gt=0)
    interconnect: str
    interconnect_gbs: float = Field(gt=0)
    usd_per_gpu_hour: float | None = Field(default=None, ge=0)
    matmul_efficiency_bf16: float = Field(gt=0, le=1)
    matmul_efficiency_fp8: float | None = Field(default=None, gt=0, le=1)
    notes: str = ""

    def matmul_flops(self, precision: Precision) -> float:
        """Achievable dense matmul FLOP/s for weights stored in `precision`.

        8-bit weights use the 8-bit tensor rate where the chip has one; otherwise (A100)
        they are dequantised and run at the 16-bit rate, as weight-only kernels do. 4-bit
        weights are weight-only everywhere (W4A16), so they run at the 16-bit rate.
        """
        if precision == "fp8" and self.fp8_tflops and self.matmul_efficiency_fp8:
            return self.fp8_tflops * 1e12 * self.matmul_efficiency_fp8
        return self.bf16_tflops * 1e12 * self.matmul_efficiency_bf16


class ModelSpec(_Sourced):
    """A transformer's shape: enough to count weights, FLOPs and KV-cache bytes."""

    key: str = ""
    name: str
    params_b: float = Field(gt=0)
    active_params_b: float | None = Field(default=None, gt=0)
    layers: int = Field(gt=0)
    hidden: int = Field(gt=0)
    heads: int = Field(gt=0)
    kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    kv_latent_dim: int | None = Field(default=None, gt=0)
    experts: int | None = Field(default=None, gt=1)
    experts_per_token: int | None = Field(default=None, gt=0)
    sliding_window: int | None = Field(default=None, gt=0)
    sliding_layers: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> ModelSpec:
        if (self.experts is None) != (self.experts_per_token is None):
            raise ValueError("experts and experts_per_token go together")
        if self.experts and not self.active_params_b:
            raise ValueError("a mixture-of-experts model needs active_params_b")
        if self.active_params_b and self.active_params_b > self.params_b:
            raise ValueError("active_params_b exceeds params_b")
        if self.sliding_layers > self.layers:
            raise ValueError("sliding_layers exceeds layers")
        if self.sliding_layers and not self.sliding_window:
            raise ValueError("sliding_layers needs sliding_window")
        return self

    @property
    def params(self) -> float:
        return self.params_b * 1e9

    @property
    def active_params(self) -> float:
        return (self.active_params_b or self.params_b) * 1e9

    @property
    def expert_params(self) -> float:
        """Parameters of one routed expert summed over layers (0 for dense models)."""
        if not self.experts or not self.experts_per_token:
            return 0.0
        return (self.params - self.active_params) / (self.experts - self.experts_per_token)

    @property
    def kv_elements_per_layer_token(self) -> int:
        """K and V elements one token stores in one layer."""
        return self.kv_latent_dim or 2 * self.kv_heads * self.head_dim

    def kv_layer_tokens(self, context: float) -> float:
        """Layer-tokens of KV a sequence of `context` tokens holds (windowed layers cap)."""
        full = self.layers - self.sliding_layers
        window = min(context, float(self.sliding_window or 0))
        return full * context + self.sliding_layers * window


def _load_yaml(name: str) -> dict[str, Any]:
    text = resources.files("forebay.planner").joinpath("data", name).read_text("utf-8")
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise CatalogueError(f"{name}: expected a mapping of entries")
    return data


@cache
def accelerators() -> dict[str, Accelerator]:
    """The built-in accelerator catalogue, keyed by short name (h100-sxm, mi300x, ...)."""
    return {
        key: Accelerator.model_validate({**entry, "key": key})
        for key, entry in _load_yaml("accelerators.yaml").items()
    }


@cache
def models() -> dict[str, ModelSpec]:
    """The built-in model catalogue, keyed by short name (llama-3.1-8b, ...)."""
    return {
        key: ModelSpec.model_validate({**entry, "key": key})
        for key, entry in _load_yaml("models.yaml").items()
    }


def accelerator(key: str) -> Accelerator:
    try:
        return accelerators()[key.lower()]
    except KeyError:
        known = ", ".join(accelerators())
        raise CatalogueError(f"unknown accelerator {key!r}; known: {known}") from None


def model(key_or_path: str) -> ModelSpec:
    """A catalogue model by name, or a Hugging Face config.json by path."""
    if key_or_path.lower() in models():
        return models()[key_or_path.lower()]
    path = Path(key_or_path)
    if path.is_dir():
        path = path / "config.json"
    if path.suffix == ".json" and path.exists():
        return model_from_hf_config(path)
    known = ", ".join(models())
    raise CatalogueError(f"unknown model {key_or_path!r}; known: {known}, or a config.json path")


def model_from_hf_config(path: Path, params_b: float | None = None) -> ModelSpec:
    """Read a Hugging Face config.json; parameters are counted from the shapes if absent.

    The count covers embeddings, attention and (gated) MLP or experts, which is what
    Llama-, Qwen- and Mixtral-style configs describe; exotic architectures should be
    added to the catalogue with their published count instead.
    """
    try:
        cfg = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise CatalogueError(f"{path}: {exc}") from None
    cfg = cfg.get("text_config", cfg)
    try:
        hidden = int(cfg["hidden_size"])
        layers = int(cfg["num_hidden_layers"])
        heads = int(cfg["num_attention_heads"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CatalogueError(f"{path}: missing or invalid {exc}") from None
    kv_heads = int(cfg.get("num_key_value_heads") or heads)
    head_dim = int(cfg.get("head_dim") or hidden // heads)
    inter = int(cfg.get("intermediate_size") or 4 * hidden)
    vocab = int(cfg.get("vocab_size") or 32000)
    experts = cfg.get("num_local_experts") or cfg.get("n_routed_experts") or cfg.get("num_experts")
    per_token = cfg.get("num_experts_per_tok")
    moe_inter = int(cfg.get("moe_intermediate_size") or inter)
    attn = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2
    embed = vocab * hidden * (1 if cfg.get("tie_word_embeddings") else 2)
    if experts and per_token:
        mlp_total = 3 * hidden * moe_inter * int(experts)
        mlp_active = 3 * hidden * moe_inter * int(per_token)
    else:
        mlp_total = mlp_active = 3 * hidden * inter
    total = layers * (attn + mlp_total) + embed
    active = layers * (attn + mlp_active) + embed
    source = f"{path.name} ({path})"
    window = cfg.get("sliding_window") if cfg.get("layer_types") else None
    sliding = sum(1 for t in cfg.get("layer_types") or [] if "sliding" in str(t))
    fields: dict[str, Any] = {
        "key": path.parent.name or path.stem,
        "name": str(cfg.get("_name_or_path") or path.parent.name or path.stem),
        "params_b": params_b or total / 1e9,
        "layers": layers,
        "hidden": hidden,
        "heads": heads,
        "kv_heads": kv_heads,
        "head_dim": head_dim,
    }
    if experts and per_token:
        fields.update(
            active_params_b=active / 1e9, experts=int(experts), experts_per_token=int(per_token)
        )
    if window and sliding:
        fields.update(sliding_window=int(window), sliding_layers=sliding)
    fields["sources"] = {k: source for k, v in fields.items() if isinstance(v, int | float)}
    if not params_b:
        fields["sources"]["params_b"] = f"counted from the shapes in {source}"
    try:
        return ModelSpec.model_validate(fields)
    except ValueError as exc:
        raise CatalogueError(f"{path}: {exc}") from None
