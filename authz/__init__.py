"""Sidegate's Envoy ext_authz service: tenant API keys -> tenant identity for the pipeline."""
