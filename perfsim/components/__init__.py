"""Kernel parts as simulation elements: links, veth, bridge, netfilter, VXLAN, namespaces."""
