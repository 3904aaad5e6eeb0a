"""mke: a single-binary Kubernetes distribution (the runtime that ships inside dist/mke)."""

__version__ = "0.1.0"
