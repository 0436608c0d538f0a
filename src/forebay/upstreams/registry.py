"""Build one upstream adapter per configured deployment, and the embedded
model workers that local deployments need."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from forebay.config.defaults import LOCAL_MODELS
from forebay.config.settings import Deployment, Settings
from forebay.upstreams.anthropic import AnthropicUpstream
from forebay.upstreams.azure_openai import AzureOpenAIUpstream
from forebay.upstreams.base import Upstream
from forebay.upstreams.openai import OpenAIUpstream
from forebay.upstreams.openai_compat import OpenAICompatUpstream

if TYPE_CHECKING:
    from forebay.upstreams.local.supervisor import WorkerSupervisor


# The adapter of each remote provider (local deployments need a worker too).
REMOTE: dict[str, Callable[[Deployment], Upstream]] = {
    "openai_compat": OpenAICompatUpstream,
    "openai": OpenAIUpstream,
    "azure_openai": AzureOpenAIUpstream,
    "anthropic": AnthropicUpstream,
}


def remote_upstream(dep: Deployment) -> Upstream:
    """The adapter for a deployment that is not a local worker."""
    return REMOTE[dep.provider](dep)


@dataclass
class UpstreamSet:
    by_alias: dict[str, list[Upstream]] = field(default_factory=dict)
    workers: dict[str, WorkerSupervisor] = field(default_factory=dict)  # deployment name -> worker

    @property
    def all(self) -> list[Upstream]:
        return [u for ups in self.by_alias.values() for u in ups]

    async def start(self) -> None:
        for worker in self.workers.values():
            await worker.start()

    async def close(self) -> None:
        for up in self.all:
            await up.close()
        for worker in self.workers.values():
            await worker.stop()


def build_upstreams(settings: Settings, *, log_dir: Path | None = None) -> UpstreamSet:
    result = UpstreamSet()
    for alias, model in settings.models.items():
        ups: list[Upstream] = []
        for dep in model.deployments:
            if dep.provider == "local":
                worker = _local_worker(dep, settings, log_dir)
                result.workers[dep.name] = worker
                ups.append(_local_upstream(dep, settings, worker))
            else:
                ups.append(remote_upstream(dep))
        result.by_alias[alias] = ups
    return result


def _local_upstream(
    dep: Deployment, settings: Settings, worker: WorkerSupervisor
) -> OpenAICompatUpstream:
    if LOCAL_MODELS[dep.upstream_model] == "embedding":
        return OpenAICompatUpstream(
            dep, base_url=worker.base_url, ready=_ready(worker), supervised=True
        )
    from forebay.upstreams.local.llama_upstream import LlamaWorkerUpstream

    return LlamaWorkerUpstream(
        dep,
        ctx=settings.local.ctx,
        parallel=settings.local.parallel,
        base_url=worker.base_url,
        ready=_ready(worker),
        supervised=True,
    )


def _ready(worker: WorkerSupervisor) -> Callable[[], bool]:
    return lambda: worker.ready


def _local_worker(dep: Deployment, settings: Settings, log_dir: Path | None) -> WorkerSupervisor:
    # Imported here so a gateway without local models never loads their runtime.
    from forebay.upstreams.local.supervisor import embed_worker, llama_worker

    local = settings.local
    threads = local.threads or os.cpu_count() or 2
    if LOCAL_MODELS[dep.upstream_model] == "embedding":
        return embed_worker(
            name=dep.name,
            threads=threads,
            parallel=local.embed_parallel,
            port=local.embed_port,
            log_dir=log_dir,
        )
    return llama_worker(
        name=dep.name,
        ctx=local.ctx,
        parallel=local.parallel,
        threads=threads,
        port=local.port,
        log_dir=log_dir,
    )
