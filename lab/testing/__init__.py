"""The pytest plugin and the helpers users write their own interop tests with."""
