"""The ``perfsim`` command line.

Every bad option exits with status 2 and one line on stderr naming the option, the value and
what is allowed; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from perfsim.errors import PerfsimError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"perfsim: error: {message}\n")


def _positive_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"got {text!r}; allowed: an integer") from None


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"got {text!r}; allowed: a number") from None


def build_parser() -> argparse.ArgumentParser:
    from perfsim.experiment.config import WORKLOADS
    from perfsim.topology.modes import MODES, PLACEMENTS

    p = _Parser(prog="perfsim", description="Discrete-event simulator of container networking datapaths.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    c = sub.add_parser("compare", help="compare network modes side by side")
    c.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, from {', '.join(MODES)}")
    c.add_argument("--workload", default="tcp_stream", help=f"one of {', '.join(WORKLOADS)}")
    c.add_argument("--streams", type=_positive_int, default=1)
    c.add_argument("--message-size", type=_positive_int, default=None)
    c.add_argument("--hosts", type=_positive_int, default=2)
    c.add_argument("--containers-per-host", type=_positive_int, default=None)
    c.add_argument("--placement", default=None, help=f"one of {', '.join(PLACEMENTS)}")
    c.add_argument("--nic-gbps", type=_number, default=10.0)
    c.add_argument("--cores", type=_positive_int, default=4)
    c.add_argument("--mtu", type=_positive_int, default=1500)
    c.add_argument("--offloads", default="on", help="on or off")
    c.add_argument("--duration", type=_number, default=0.05, help="simulated seconds")
    c.add_argument("--profile", default="default", help="built-in profile name or YAML file")
    c.add_argument("--seed", type=_positive_int, default=0)
    c.add_argument("--format", default="table", help="table, csv or json")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "compare":
            from perfsim.experiment.compare import compare_from_args

            return compare_from_args(args)
    except PerfsimError as exc:
        if args.debug:
            raise
        print(f"perfsim {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("perfsim: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
