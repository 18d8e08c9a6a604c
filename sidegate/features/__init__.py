"""The gateway's features, one file or folder each, each one class deriving
:class:`sidegate.core.feature.Feature` that owns its request hook, its completion hook, its
per-try hook and its background work. :func:`sidegate.app.default_features` lists them in order;
no feature imports another."""
