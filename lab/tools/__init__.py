"""What the lab offers beside building it: bench, demo, doctor, graph, status."""
