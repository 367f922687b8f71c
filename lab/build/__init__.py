"""From a plan to a running lab and back: wiring, journal, state, processes, drift."""
