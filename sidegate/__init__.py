"""Sidegate: an AI gateway that rides beside Envoy."""

__version__ = "0.1.0"
