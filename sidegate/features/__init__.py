"""The gateway's features, one file or folder each, each one class deriving
:class:`sidegate.core.feature.Feature` that owns its request hook, its completion hook and its
background work. :func:`sidegate.app.default_features` lists them in order; the per-try stage
every provider try runs through is not a feature (every lane has it): sidegate/core/tries.py."""
