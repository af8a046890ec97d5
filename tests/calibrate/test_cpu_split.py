"""The real-kernel vs simulation per-CPU report (``python -m perfsim.calibrate.cpu_split``)."""

from __future__ import annotations

import pytest

from perfsim.calibrate import cpu_split

SCRIPT = """\
[000] net:net_dev_xmit: dev=eth0 skbaddr=0x1 len=65226 rc=0
[000] net:net_dev_xmit: dev=eth0 skbaddr=0x2 len=818 rc=0
[001] net:net_dev_xmit: dev=eth0 skbaddr=0x3 len=66 rc=0
[001] net:net_dev_xmit: dev=eth0 skbaddr=0x4 len=66 rc=0
[000] sched:sched_waking: comm=iperf3 pid=7 prio=120 target_cpu=001
[000] ipi:ipi_send_cpu: cpu=1 callsite=ttwu_queue_wakelist+0x1 callback=0x0
"""


def test_perf_script_lines_become_per_cpu_rates() -> None:
    rates = cpu_split._parse(SCRIPT, 0.5)
    assert rates == {("data skbs sent /s", 0): 4.0, ("ACKs sent /s", 1): 4.0, ("wake-ups /s", 0): 2.0,
                     ("IPIs sent /s", 0): 2.0}


def test_bad_arguments_are_one_line_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert cpu_split.main(["--path", "wifi"]) == 2
    assert cpu_split.main(["--streams", "0"]) == 2
    assert cpu_split.main(["--streams", "x"]) == 2
    assert cpu_split.main(["--duration", "1"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["perfsim: --path: got 'wifi'; allowed: one of host, bridge, nat, overlay, container, routed",
                   "perfsim: --streams: got '0'; allowed: comma-separated integers 1..64",
                   "perfsim: --streams: got 'x'; allowed: comma-separated integers 1..64",
                   "perfsim: --duration: got 1.0; allowed: 3..60 seconds"]


def test_the_simulated_side_sends_a_streams_acks_from_the_readers_core(capsys: pytest.CaptureFixture[str]) -> None:
    assert cpu_split.main(["--simulate-only", "--streams", "1"]) == 0
    out = capsys.readouterr().out
    acks = next(line for line in out.splitlines() if line.strip().startswith("ACKs sent /s")).split()[-2:]
    data = next(line for line in out.splitlines() if line.strip().startswith("data skbs sent /s")).split()[-2:]
    assert int(acks[1]) > 100 * max(1, int(acks[0]))  # the reader's core, cpu1 (real: 98 %)
    assert int(data[0]) > 5 * max(1, int(data[1]))  # the writer's core, cpu0 (real 99.8 %, here
    # ~89 %: see test_platform's test_a_streams_acks_leave_mostly_from_the_readers_core)
