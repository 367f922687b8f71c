"""Tests of stack/api."""
