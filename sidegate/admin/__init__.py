"""The admin API and CLI over :mod:`sidegate.controlplane` (tenants, limits and keys, managed live)."""
