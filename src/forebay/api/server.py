"""The one way Forebay's gateway is put on the network, used by `forebay serve`
and by the in-process test gateways alike: sockets bound before anything
else starts, the open-file limit raised, and uvicorn configured with the
guarded connection protocol (api/connections.py)."""

from __future__ import annotations

import errno
import logging
import resource
import socket
from dataclasses import dataclass
from typing import Any

import uvicorn

from forebay.api.connections import EdgeLimits, GuardedProtocolFactory
from forebay.config.schema import ServerConfig

log = logging.getLogger("forebay")

# Share of the open-file limit client connections may use; the rest is for
# upstream connections, the database, logs and the local workers' pipes.
CLIENT_FD_SHARE = 0.75


class BindError(Exception):
    """A listening address that cannot be bound, phrased for the operator."""


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port), ready for uvicorn to listen on."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        where = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
        if exc.errno == errno.EADDRINUSE:
            why = "is already in use (another Forebay or another program listens there)"
            fix = "stop it, or choose another port with --port or server.port"
        elif exc.errno == errno.EACCES:
            why = "needs privileges this process lacks (ports below 1024 usually do)"
            fix = "choose a port above 1024 with --port or server.port"
        elif exc.errno == errno.EADDRNOTAVAIL:
            why = "is not an address of this machine"
            fix = "use 127.0.0.1, 0.0.0.0 or one of this machine's addresses (--host)"
        else:
            why, fix = f"cannot be bound ({exc.strerror or exc})", "check --host and --port"
        raise BindError(f"cannot listen on {where}: the address {why}; {fix}.") from None
    sock.set_inheritable(True)  # --workers N hands it to each worker process
    return sock


@dataclass(frozen=True)
class Listeners:
    """The bound sockets: the API's first, then the metrics listener's, if any."""

    sockets: list[socket.socket]
    port: int
    metrics_port: int | None


def bind_listeners(host: str, port: int, server: ServerConfig) -> Listeners:
    """Bind the API address and server.metrics_listen (raises BindError)."""
    api = listen(host, port)
    sockets = [api]
    metrics_port = None
    metrics_at = server.metrics_address()
    if metrics_at is not None:
        try:
            metrics = listen(*metrics_at)
        except BindError:
            api.close()
            raise
        sockets.append(metrics)
        metrics_port = int(metrics.getsockname()[1])
    return Listeners(sockets, int(api.getsockname()[1]), metrics_port)


def raise_fd_limit() -> int:
    """Lift the soft open-file limit to the hard one (each client connection is
    a file descriptor; 1,024 is a common default). Returns the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            log.info("open-file limit raised from %d to %d", soft, target)
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d: %s", soft, exc)
    return soft


def edge_limits(server: ServerConfig) -> EdgeLimits:
    """The configured bounds, with the connection cap kept below what the
    process's open-file limit allows."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    cap = server.max_connections
    if soft != resource.RLIM_INFINITY and cap > soft * CLIENT_FD_SHARE:
        lowered = max(1, int(soft * CLIENT_FD_SHARE))
        log.warning(
            "server.max_connections %d is more than this process's open-file limit (%d) "
            "allows; using %d (raise the limit with `ulimit -n` to allow more)",
            cap,
            soft,
            lowered,
        )
        cap = lowered
    return EdgeLimits(
        max_connections=cap,
        max_header_bytes=server.max_header_bytes,
        max_headers=server.max_headers,
        header_timeout_s=server.header_timeout_s,
        body_timeout_s=server.body_timeout_s,
    )


def uvicorn_config(
    app: Any,
    server: ServerConfig,
    *,
    log_level: str = "info",
    loop: str = "uvloop",
    workers: int = 1,
    factory: bool = False,
    timeout_graceful_shutdown: int = 30,
) -> uvicorn.Config:
    """uvicorn's configuration for the gateway (host and port come from the
    sockets handed to `uvicorn.Server.run`, bound by `listen`)."""
    protocol = GuardedProtocolFactory(edge_limits(server))
    return uvicorn.Config(
        app,
        factory=factory,
        workers=workers,
        loop=loop,
        # A factory, not a class: uvicorn only calls it (keyword arguments) per connection.
        http=protocol,  # type: ignore[arg-type]
        ws="none",
        lifespan="on",
        log_level=log_level,
        access_log=False,
        timeout_keep_alive=server.keep_alive_timeout_s,
        timeout_graceful_shutdown=timeout_graceful_shutdown,
        # Forebay never uses the client address, so skip X-Forwarded-* rewriting.
        proxy_headers=False,
        server_header=False,
    )
