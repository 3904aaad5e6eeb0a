"""The start-up baseline: a hello-world built exactly like dist/mke (same spec, options)."""

print("hello")
