"""Issue 6, neighbour tables: a namespace that must reach more than ``gc_thresh3`` neighbours
at once overflows (``neigh_table_full``, the kernel's "neighbor table overflow!"), one that
reaches ``gc_thresh3`` or fewer does not — in a flat L2 domain (host networking), in the
underlay of a large overlay (one neighbour per remote VTEP host) and, with flood-and-learn, in
the containers' own tables.

The limit: ``neigh_alloc`` refuses a new entry when the table already counts ``gc_thresh3``
non-permanent entries and forced gc frees none (every entry here was confirmed less than 5 s
ago).  So with G = gc_thresh3 and P peers reached from one namespace, exactly max(0, P - G)
resolutions fail; each ``udp_rr`` flow sends one datagram and waits for its answer, so the
prediction is max(0, P - G) drops and as many flows without a transaction.
"""

from __future__ import annotations

import pytest

from perfsim.experiment.simulate import Experiment, FlowPlan, Simulated, simulate
from perfsim.topology.cluster import ClusterSpec

G = 4
START_S = 0.001
"""Flows start after the warm-up, so the failing ones do not hold the measurement back."""


def fan_out(mode: str, peers: int, **options: object) -> Simulated:
    """Container 0 of host 0 runs one udp_rr flow to container 0 of each of hosts 1..peers."""
    flows = tuple(FlowPlan("udp_rr", (0, 0), (h, 0), 64, server_port=5001, client_port=40000 + h, start_s=START_S)
                  for h in range(1, peers + 1))
    return simulate(Experiment(
        cluster=ClusterSpec(hosts=peers + 1, cores=2, gc_thresh3=G), mode=mode, containers_per_host=1, flows=flows,
        duration_s=0.004, warmup_s=0.0005, mode_options=dict(options),
    ))


def overflow_drops(out: Simulated) -> dict[str, int]:
    d = out.drops
    rows = d[d["reason"] == "neigh_table_full"]
    return dict(zip(rows["site"], rows["count"], strict=True))


def most_entries(out: Simulated, name: str) -> int:
    t = out.tables
    return int(t[(t["table"] == "neighbour") & (t["name"] == name)]["entries"].max())


@pytest.mark.parametrize("peers", [G - 1, G, G + 1, G + 3])
def test_flat_l2_host_network_overflows_past_gc_thresh3(peers: int) -> None:
    out = fan_out("host", peers)
    over = max(0, peers - G)
    assert overflow_drops(out) == ({"h0.neigh": over} if over else {})
    assert int((out.flows["transactions"] == 0).sum()) == over
    assert most_entries(out, "h0.neigh") == min(peers, G)
    assert set(out.drops["reason"]) <= {"neigh_table_full"}


@pytest.mark.parametrize("peers", [G - 1, G + 2])
def test_overlay_underlay_table_holds_one_entry_per_remote_vtep(peers: int) -> None:
    """Docker's overlay pre-populates the containers' entries as PERMANENT (exempt from the
    gc thresholds, so a container with more than G peers is fine); the host's underlay table
    still needs one ARP entry per remote VTEP, and overflows past G hosts."""
    out = fan_out("overlay", peers)
    over = max(0, peers - G)
    assert overflow_drops(out) == ({"h0.neigh": over} if over else {})
    assert int((out.flows["transactions"] == 0).sum()) == over
    assert most_entries(out, "h0.neigh") == min(peers, G)
    assert most_entries(out, "h0c0.neigh") == peers  # permanent: more than G, no overflow


def test_flood_and_learn_overlay_overflows_the_containers_table_too() -> None:
    """With ``learning`` nothing is pre-populated: the container resolves its peers over the
    overlay, and its own table holds at most G of them."""
    peers = G + 2
    out = fan_out("overlay", peers, learning=True)
    drops = overflow_drops(out)
    assert drops.get("h0c0.neigh", 0) == peers - G
    assert most_entries(out, "h0c0.neigh") == G
    assert most_entries(out, "h0.neigh") == G
    assert int((out.flows["transactions"] == 0).sum()) >= peers - G
    below = fan_out("overlay", G - 1, learning=True)
    assert overflow_drops(below) == {}
    assert (below.flows["transactions"] > 0).all()
