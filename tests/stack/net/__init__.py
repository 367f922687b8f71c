"""Tests of stack/net."""
