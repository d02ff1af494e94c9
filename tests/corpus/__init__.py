"""Payloads from public sources that the tests replay."""
