"""``perfsim compare``: the modes side by side on one scenario.

Issue-2 scope: one scenario (2 hosts, the given workload and streams) per mode, a table on
stdout (or CSV / JSON), progress on stderr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import pandas as pd

from perfsim.errors import ConfigError
from perfsim.experiment.config import RunSpec
from perfsim.experiment.run import SUMMARY_COLUMNS, run
from perfsim.topology.cluster import ClusterSpec
from perfsim.topology.modes import MODES

FORMATS = ("table", "csv", "json")


def compare(
    modes: Sequence[str] | None = None,
    *,
    workload: str = "tcp_stream",
    streams: int = 1,
    message_size: int | None = None,
    hosts: int = 2,
    containers_per_host: int | None = None,
    placement: str | None = None,
    nic_gbps: float = 10.0,
    cores: int = 4,
    mtu: int = 1500,
    offloads: bool = True,
    duration_s: float = 0.05,
    profile: str = "default",
    seed: int = 0,
    progress: bool = False,
) -> pd.DataFrame:
    """Run every mode on the same scenario; one row per mode with :data:`SUMMARY_COLUMNS`.

    ``placement`` defaults to cross-host, except for modes that only work on one host.
    All arguments are validated before anything runs.
    """
    modes = list(modes) if modes is not None else list(MODES)
    if not modes:
        raise ConfigError("modes", "", f"one or more of {', '.join(MODES)}")
    cluster = ClusterSpec(hosts=hosts, cores=cores, nic_rate_bps=nic_gbps * 1e9, mtu_bytes=mtu, offloads=offloads)
    specs = []
    for mode in modes:
        pl = placement or MODES[mode].default_placement
        cph = containers_per_host or (2 if pl == "same-host" else 1)
        specs.append(
            RunSpec(
                mode=mode, workload=workload, streams=streams, message_size=message_size,
                placement=pl, containers_per_host=cph, cluster=cluster, duration_s=duration_s,
                warmup_s=duration_s * 0.2, seed=seed, profile=profile,
            )
        )
    rows = []
    for i, spec in enumerate(specs):
        if progress:
            print(f"[{i + 1}/{len(specs)}] {spec.mode} {spec.workload} ...", file=sys.stderr, flush=True)
        rows.append(run(spec).summary())
    return pd.DataFrame(rows)[SUMMARY_COLUMNS + ["retransmits", "cpu_utilisation"]]


def compare_from_args(args: argparse.Namespace) -> int:
    """The CLI entry: validate options, run, print in the chosen format."""
    if args.format not in FORMATS:
        raise ConfigError("--format", args.format, f"one of {', '.join(FORMATS)}")
    if args.offloads not in ("on", "off"):
        raise ConfigError("--offloads", args.offloads, "on or off")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for m in modes:
        if m not in MODES:
            raise ConfigError("--modes", m, f"one of {', '.join(MODES)}")
    df = compare(
        modes, workload=args.workload, streams=args.streams, message_size=args.message_size,
        hosts=args.hosts, containers_per_host=args.containers_per_host, placement=args.placement,
        nic_gbps=args.nic_gbps, cores=args.cores, mtu=args.mtu, offloads=args.offloads == "on",
        duration_s=args.duration, profile=args.profile, seed=args.seed, progress=True,
    )
    if args.format == "csv":
        sys.stdout.write(df.to_csv(index=False))
    elif args.format == "json":
        sys.stdout.write(df.to_json(orient="records", indent=1) + "\n")
    else:
        with pd.option_context("display.width", 200, "display.max_columns", 20):
            print(df.to_string(index=False, float_format=lambda x: f"{x:.3g}"))
    return 0
