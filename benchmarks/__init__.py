"""Benchmarks comparing pop3tap with a direct connection, socat and haproxy (issue 6)."""
