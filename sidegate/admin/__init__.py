"""The admin API and CLI over :mod:`sidegate.admin.controlplane` (tenants, limits and keys, managed live)."""
