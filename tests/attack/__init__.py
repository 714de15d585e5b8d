"""Attacks on the tool: a careless user, a hostile server. Each test reproduces one finding."""
