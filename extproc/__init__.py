"""Sidegate's Envoy ext_proc service: the request pipeline (gateway) and per-try translation (upstream)."""
