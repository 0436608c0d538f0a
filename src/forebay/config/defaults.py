"""What Forebay does with no forebay.yaml: the embedded models, usable offline."""

from __future__ import annotations

from typing import Any, Literal

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
# A deployment's context size when its config does not say: 128 Ki tokens, the window of
# Llama 3.1 and GPT-4o. Set `context_tokens` for models with a larger one.
DEFAULT_CONTEXT_TOKENS = 131_072
# What one image, and one MB of inline audio, may cost in prompt tokens (sources in
# `config.schema.ReserveConfig`).
DEFAULT_IMAGE_TOKENS = 16_384
DEFAULT_AUDIO_TOKENS_PER_MB = 32_000

# The models the embedded worker can run: name -> kind.
LOCAL_MODELS: dict[str, Literal["chat", "embedding"]] = {
    "smollm2-135m-instruct": "chat",
    "all-minilm-l6-v2": "embedding",
}

# Built-in default: the embedded models, usable offline. Energy is a rough CPU
# estimate (about 25 W package power over ~85 decode and ~150 prefill tokens/s
# measured on a 2-core machine); replace it with your own measurement.
DEFAULT_CONFIG: dict[str, Any] = {
    "models": {
        "local": {
            "kind": "chat",
            "description": "SmolLM2-135M-Instruct, embedded llama.cpp on CPU",
            "deployments": [
                {
                    "name": "local-smollm2",
                    "provider": "local",
                    "model": "smollm2-135m-instruct",
                    "energy": {"joules_per_input_token": 0.17, "joules_per_output_token": 0.3},
                }
            ],
        },
        "local-embed": {
            "kind": "embedding",
            "description": "all-MiniLM-L6-v2 (int8 ONNX) on CPU",
            "deployments": [
                {
                    "name": "local-minilm",
                    "provider": "local",
                    "model": "all-minilm-l6-v2",
                    "energy": {"joules_per_input_token": 0.01},
                }
            ],
        },
    }
}
