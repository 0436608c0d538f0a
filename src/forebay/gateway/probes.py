"""Background health probes of remote deployments, off the request path.

A remote upstream's `ready()` is always true: nothing but a request would show
that it is down. Every `interval_s` each remote deployment is asked for
GET {base_url}/models with its own credentials, and the answer is kept on its
`DeploymentState`, where /readyz reports it and admission skips a deployment
that fails while another deployment of its alias passes (never the last one:
a request that would fail anyway is not refused any sooner). Local workers are
not probed; their supervisor already knows their state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from forebay.config.schema import ProbeConfig
from forebay.gateway.health import DeploymentState

log = logging.getLogger("forebay.probes")


async def probe_health(states: Sequence[DeploymentState], config: ProbeConfig) -> None:
    """Run until cancelled: all deployments at once, then wait `interval_s`."""
    while True:
        await asyncio.gather(*(probe_once(s, config.timeout_s) for s in states))
        await asyncio.sleep(config.interval_s)


async def probe_once(state: DeploymentState, timeout_s: float) -> None:
    try:
        # The adapter bounds its own request; this is the backstop.
        result = await asyncio.wait_for(state.upstream.probe(timeout_s), timeout_s + 1)
        ok, detail = result.healthy, result.detail
    except TimeoutError:
        ok, detail = False, f"the probe did not finish within {timeout_s:g} s"
    except Exception as exc:  # a probe must never end the loop
        ok, detail = False, f"the probe failed ({type(exc).__name__})"
    if ok is not state.probe_ok:
        if not ok:
            log.warning("deployment %s failed its health probe: %s", state.name, detail)
        elif state.probe_ok is False:
            log.info("deployment %s passes its health probe again", state.name)
    state.probe_ok, state.probe_detail = ok, detail
