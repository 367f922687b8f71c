"""Everything the lab asks of the host kernel: netlink, namespaces, sysctls, sockets, tracepoints."""
