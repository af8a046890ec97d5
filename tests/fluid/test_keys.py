"""The fluid engine's RSS must pick exactly the DES's core for every flow."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from perfsim.components.vxlan import SPORT_MAX, SPORT_MIN
from perfsim.core.cpu import CpuPool, flow_hash
from perfsim.core.packet import FlowKey
from perfsim.fluid.keys import Derived, KeyTemplate, hash_keys, learn_template, rss_cores

u32 = st.integers(0, (1 << 32) - 1)
port = st.integers(0, 65535)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(u32, u32, st.sampled_from([1, 4, 6, 17]), port, port), min_size=1, max_size=20), u32,
       st.integers(1, 64))
def test_vectorised_hash_and_rss_equal_the_des_functions(keys: list, rss_key: int, cores: int) -> None:
    arr = [np.array(col, dtype=np.uint64) for col in zip(*keys, strict=True)]
    hashes = hash_keys(*arr)
    assert [int(h) for h in hashes] == [flow_hash(FlowKey(*k)) for k in keys]
    pool = CpuPool("h", cores, rss_key=rss_key)
    got = rss_cores(hashes, np.full(len(keys), rss_key, dtype=np.uint64), cores)
    assert list(got) == [pool.rss(FlowKey(*k)).index for k in keys]


VALUES = {"cip": 0x0A010002, "sip": 0x0A010103, "chip": 0x0A000001, "ship": 0x0A000002, "cport": 32768, "sport": 5001}


def test_a_vxlan_outer_key_is_learned_with_its_source_port_derived_from_the_inner_key() -> None:
    inner = FlowKey(VALUES["cip"], VALUES["sip"], 6, 32768, 5001)
    outer = FlowKey(VALUES["chip"], VALUES["ship"], 17, SPORT_MIN + flow_hash(inner) % (SPORT_MAX - SPORT_MIN), 4789)
    t = learn_template(outer, VALUES, 6)
    assert t.fields[:3] == ("chip", "ship", 17)
    assert t.fields[4] == 4789
    assert isinstance(t.fields[3], Derived)
    assert t.fields[3].inner == KeyTemplate(("cip", "sip", 6, "cport", "sport"))
    assert t.uses("cport") and t.uses("chip")


def test_a_template_instantiated_for_other_flows_gives_their_keys() -> None:
    t = KeyTemplate(("chip", "ship", 17, Derived("vxlan_sport", KeyTemplate(("cip", "sip", 6, "cport", "sport"))), 4789))
    n = 5
    values = {k: np.arange(n, dtype=np.uint64) + np.uint64(v) for k, v in VALUES.items()}
    cols = t.instantiate(values, n)
    for i in range(n):
        inner = FlowKey(*(VALUES[s] + i for s in ("cip", "sip")), 6, VALUES["cport"] + i, VALUES["sport"] + i)
        expect = FlowKey(VALUES["chip"] + i, VALUES["ship"] + i, 17,
                         SPORT_MIN + flow_hash(inner) % (SPORT_MAX - SPORT_MIN), 4789)
        assert tuple(int(c[i]) for c in cols) == expect


def test_a_key_without_ports_is_constant_in_its_ports() -> None:
    t = learn_template(FlowKey(VALUES["chip"], VALUES["ship"], 4, 0, 0), VALUES, 6)
    assert t.fields == ("chip", "ship", 4, 0, 0)
    assert not t.uses("cport")
