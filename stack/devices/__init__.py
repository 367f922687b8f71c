"""Devices: where frames leave the sans-IO stack (a TAP, a memory wire) and what a device needs of a host."""
