"""The Kubernetes conformance run (``nox -s conformance``): see tests/conformance/run.py."""
