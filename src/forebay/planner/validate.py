"""`forebay plan validate`: the performance model against public MLPerf results.

One global constant (serving_efficiency) is calibrated on one named row; every other
row is a prediction, and the mean absolute percentage error over those rows is the
model's score. The all-reduce bandwidth is a measured figure, not a fit (see
`Constants.allreduce_efficiency`), so the tensor-parallel rows are predictions too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from forebay.planner.catalogue import accelerator, model
from forebay.planner.constants import CONSTANTS, Constants
from forebay.planner.performance import Replica
from forebay.planner.serving import Workload, capacity, max_rate_within_slo

MLPERF_TTFT_SLO_S = 2.0
MLPERF_TPOT_SLO_S = 0.2


class Dataset(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    samples: int
    prompt_mean: float
    prompt_p99: float
    prompt_max: float
    output_mean: float
    sources: dict[str, str]


class Row(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    system: str
    gpu: str
    gpus: int = Field(gt=0)
    tp: int = Field(gt=0)
    max_batch: int | None = None
    scenario: Literal["offline", "server"]
    measured_tokens_per_s: float
    measured_ttft_p99_ms: float | None = None
    measured_tpot_p99_ms: float | None = None
    source: str


class GroundTruth(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: Dataset
    rows: list[Row]
    calibration: dict[str, str]


@cache
def ground_truth() -> GroundTruth:
    text = (
        resources.files("forebay.planner")
        .joinpath("data", "mlperf_llama2_70b.yaml")
        .read_text("utf-8")
    )
    return GroundTruth.model_validate(yaml.safe_load(text))


@dataclass(frozen=True)
class RowResult:
    row: Row
    predicted_tokens_per_s: float
    predicted_ttft_p99_ms: float | None
    predicted_tpot_p99_ms: float | None
    calibration: bool

    @property
    def error(self) -> float:
        """Signed relative error of the predicted throughput."""
        return self.predicted_tokens_per_s / self.row.measured_tokens_per_s - 1


@dataclass(frozen=True)
class Report:
    constants: Constants
    results: list[RowResult]

    @property
    def mae(self) -> float:
        """Mean absolute relative error over the rows not used for calibration."""
        held_out = [abs(r.error) for r in self.results if not r.calibration]
        return sum(held_out) / len(held_out)


def predict(row: Row, constants: Constants = CONSTANTS) -> RowResult:
    truth = ground_truth()
    ds = truth.dataset
    replica = Replica(
        model("llama-2-70b"),
        accelerator(row.gpu),
        tp=row.tp,
        precision="fp8",
        kv_dtype="fp8",
        constants=constants,
        **({"max_batch": row.max_batch} if row.max_batch else {}),
    )
    wl = Workload(ds.prompt_mean, ds.output_mean, ds.prompt_p99)
    replicas = row.gpus // row.tp
    calibrating = row.id in truth.calibration.values()
    if row.scenario == "offline":
        tokens = capacity(replica, wl).output_tokens_per_s * replicas
        return RowResult(row, tokens, None, None, calibrating)
    point = max_rate_within_slo(replica, wl, MLPERF_TTFT_SLO_S, MLPERF_TPOT_SLO_S)
    if point is None:
        return RowResult(row, 0.0, None, None, calibrating)
    return RowResult(
        row,
        point.rate_rps * wl.output_mean * replicas,
        point.ttft_p99_s * 1e3,
        point.tpot_p99_s * 1e3,
        calibrating,
    )


def report(constants: Constants = CONSTANTS) -> Report:
    return Report(constants, [predict(row, constants) for row in ground_truth().rows])


def _solve(f: Callable[[float], float], lo: float, hi: float) -> float:
    """Root of an increasing function on [lo, hi] by bisection."""
    for _ in range(60):
        mid = (lo + hi) / 2
        if f(mid) < 0:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def calibrate(base: Constants = CONSTANTS) -> Constants:
    """Fit serving_efficiency, the one calibrated constant, on its named row.

    That row runs one GPU per replica, so the fit does not depend on the all-reduce
    constants; a `calibration` entry for any other constant is refused.
    """
    truth = ground_truth()
    rows = {r.id: r for r in truth.rows}
    unknown = set(truth.calibration) - {"serving_efficiency"}
    if unknown:
        raise ValueError(f"no calibration procedure for {', '.join(sorted(unknown))}")
    se_row = rows[truth.calibration["serving_efficiency"]]

    def se_gap(value: float) -> float:
        c = base.model_copy(update={"serving_efficiency": value})
        return predict(se_row, c).error

    serving = _solve(se_gap, 0.05, 1.5)
    return base.model_copy(update={"serving_efficiency": round(serving, 4)})
