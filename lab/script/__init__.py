"""Packetdrill scripts played against Linux and against the stack (`lab script`)."""
