"""Real-kernel tests: they build network namespaces and need root and the measuring tools.

The ``kernel`` fixture skips a test, with the reason, only where namespaces truly cannot be
created (not root, no ``ip netns``) or a tool is missing (``make kernel-tools`` installs them).
"""

from __future__ import annotations

import pytest

from perfsim.calibrate.testbed import can_create_namespaces, missing_tools


@pytest.fixture(scope="session")
def kernel_reason() -> str:
    """Why the real-kernel tests cannot run here ("" when they can)."""
    ok, why = can_create_namespaces()
    if not ok:
        return why
    missing = missing_tools(("iperf3", "sockperf", "gcc"))
    return f"missing tools: {', '.join(missing)} (make kernel-tools)" if missing else ""


@pytest.fixture
def kernel(kernel_reason: str) -> None:
    """Skip unless namespaces can be created and every tool is installed."""
    if kernel_reason:
        pytest.skip(kernel_reason)
