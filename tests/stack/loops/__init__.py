"""Tests of stack/loops."""
