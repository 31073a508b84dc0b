"""The Ray backend of ``sagellm sweep``: every point is one Ray task running
:func:`~sagellm.benchmarks.sweep_point.run_point` (papermill in a subprocess) with the point's
resource request (``cpus_per_point``; ``gpus_per_point``, by default 1 where the cluster has
GPUs, else 0). Tasks are never retried by Ray (``max_retries=0``): a task whose worker died is
recorded failed (:func:`~sagellm.benchmarks.sweep_point.record_failure`) and a rerun of the
sweep retries it, as with the local backend.

Where the points run: a cluster at ``address`` (``host:port`` of its GCS, ``ray://host:port``
or ``auto``), else a Ray session this process already started, else a local one started here
(and stopped at the end). The sweep folder must be on a file system every node sees (the
points write there). Ray is the optional extra ``sagellm[ray]``; an address that does not
answer within ``connect_timeout_s`` is a :class:`~sagellm.core.errors.ConfigError`.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

from sagellm.benchmarks.sweep_point import record_failure, run_point
from sagellm.core.errors import ConfigError

DEFAULT_CONNECT_TIMEOUT_S = 10.0


def import_ray():
    """The ``ray`` module, or ConfigError naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "backend: 'ray' needs Ray, which is not installed: pip install 'sagellm[ray]' "
            "(or use --backend local, the default)"
        ) from None
    return ray


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of a GCS or client address; None for ``auto``."""
    if address == "auto":
        return None
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(
            f"address must be 'host:port', 'ray://host:port' or 'auto', got {address!r}"
        )
    return host, int(port)


def probe_address(address: str, timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S) -> None:
    """ConfigError unless ``address`` accepts a TCP connection within ``timeout_s``."""
    hp = _host_port(address)
    if hp is None:
        return
    try:
        socket.create_connection(hp, timeout=timeout_s).close()
    except OSError as err:
        raise ConfigError(
            f"address: the Ray cluster at {address!r} did not answer within {timeout_s:g} s "
            f"({type(err).__name__}: {err}); start it with `ray start --head` or fix --address"
        ) from None


def connect(ray, address: str | None, connect_timeout_s: float) -> bool:
    """Join ``address``, or reuse this process's Ray session, or start a local one; returns
    True when this call started Ray (the caller shuts it down)."""
    if ray.is_initialized():
        return False
    if address is not None:
        probe_address(address, connect_timeout_s)
        host = _host_port(address)
        ip = {"_node_ip_address": host[0]} if host and host[0] in ("127.0.0.1", "localhost") else {}
        ray.init(address=address, log_to_driver=False, **ip)
    else:  # a single-machine Ray: on loopback, which needs no routable address
        ray.init(
            address="local",
            log_to_driver=False,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
        )
    return True


def run_points_ray(
    cfg,
    root: Path,
    todo: list[tuple[str, dict, str]],
    cwd: Path,
    on_done: Callable[[dict], None],
    address: str | None = None,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
) -> None:
    """Run ``todo`` = [(point id, params, attempt token)] as Ray tasks; ``on_done(status)``
    after each point, in completion order."""
    ray = import_ray()
    started = connect(ray, address, connect_timeout_s)
    try:
        gpus = cfg.gpus_per_point
        if gpus is None:
            gpus = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
        task = ray.remote(num_cpus=cfg.cpus_per_point, num_gpus=gpus, max_retries=0)(run_point)
        refs = {
            task.remote(cfg.notebook, params, str(root), pid, token, str(cwd), cfg.timeout_s): (
                pid,
                params,
                token,
            )
            for pid, params, token in todo
        }
        while refs:
            (ref,), _ = ray.wait(list(refs), num_returns=1)
            pid, params, token = refs.pop(ref)
            try:
                status = ray.get(ref)
            except ray.exceptions.RayError as err:  # the worker died, or the task raised
                first = str(err).strip().splitlines()[0] if str(err).strip() else ""
                status = record_failure(root, pid, token, params, f"{type(err).__name__}: {first}")
            on_done(status)
    finally:
        if started:
            ray.shutdown()
