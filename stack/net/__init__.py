"""The network below TCP: Ethernet and ARP (`link`, `arp`), IPv4 with ICMP (`ipv4`, `icmp`), reassembly,
routing, and a forwarding `Router` for simulated topologies."""
