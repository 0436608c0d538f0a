"""`forebay plan` and `forebay plan validate` through the real CLI app."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from forebay.cli.main import app

runner = CliRunner()

ISSUE_EXAMPLE = [
    "plan",
    "--model",
    "llama-2-70b",
    "--gpu",
    "h100-sxm",
    "--gpus-per-replica",
    "8",
    "--precision",
    "fp8",
    "--rps",
    "50",
    "--prompt-tokens",
    "1024",
    "--output-tokens",
    "256",
    "--ttft-p99-ms",
    "2000",
    "--tpot-p99-ms",
    "200",
    "--json",
]


def test_plan_json_has_replica_and_fleet() -> None:
    result = runner.invoke(app, ISSUE_EXAMPLE)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    (option,) = doc["options"]
    replica, fleet = option["replica"], option["fleet"]
    assert set(replica) == {
        "max_output_tokens_per_s",
        "slo_output_tokens_per_s",
        "ttft_p99_ms",
        "tpot_p99_ms",
        "max_concurrency",
        "power_w",
        "joules_per_output_token",
        "bottleneck",
    }
    assert set(fleet) == {
        "replicas",
        "gpus",
        "kw",
        "usd_per_hour",
        "usd_per_million_output_tokens",
        "headroom",
    }
    assert replica["ttft_p99_ms"] <= 2000 and replica["tpot_p99_ms"] <= 200
    assert fleet["gpus"] == fleet["replicas"] * 8
    # Enough replicas for 50 req/s x 256 tokens, and headroom is what is left over.
    assert fleet["replicas"] * replica["slo_output_tokens_per_s"] >= 50 * 256
    assert 0 <= fleet["headroom"] < 1


def test_plan_table_over_the_catalogue(tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    trace.write_text(
        "\n".join(
            json.dumps({"timestamp": i * 0.1, "prompt_tokens": 500 + i, "output_tokens": 200})
            for i in range(50)
        )
    )
    result = runner.invoke(app, ["plan", "--model", "llama-3.1-8b", "--trace", str(trace)])
    assert result.exit_code == 0, result.output
    assert "h100-sxm" in result.stdout and "tpu-v6e" in result.stdout
    assert "10 req/s" in result.stdout


def test_plan_requires_a_model() -> None:
    result = runner.invoke(app, ["plan", "--rps", "1"])
    assert result.exit_code == 2


def test_validate_reports_held_out_error() -> None:
    result = runner.invoke(app, ["plan", "validate", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["mae_held_out"] <= 0.15
    assert sum(r["calibration"] for r in doc["rows"]) == 1
    table = runner.invoke(app, ["plan", "validate"])
    assert table.exit_code == 0 and "held-out rows" in table.stdout
