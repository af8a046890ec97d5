"""Calibration: measure this machine's real kernel datapaths and relate them to the simulation.

:mod:`perfsim.calibrate.testbed` builds Docker's datapaths out of network namespaces, veth
pairs, bridges, VXLAN and iptables; :mod:`perfsim.calibrate.measure` runs iperf3, sockperf and a
small connection-rate tool over them.  Both need root (``CAP_SYS_ADMIN`` + ``CAP_NET_ADMIN``).
"""
