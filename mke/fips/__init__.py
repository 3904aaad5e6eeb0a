"""FIPS 140-3 evidence: what a Go binary was built with, and what this runtime's crypto is.

Stdlib only, so that ``mke fips check`` runs it on the binaries it carries and the
toolchain (``build/fips_check.py``) runs the same code at build time. One module per
concern; import the one you need (this package imports none of them, so that a cheap
caller such as ``mke version`` never pays for the rest):

**Go binaries.** The proof comes from the binary itself, never from a label:

- ``goinfo``: the Go *build info* blob (what ``go version -m`` prints), read from the ELF
  ``.go.buildinfo`` section (or, as Go's debug/buildinfo does, the first writable
  ``PT_LOAD`` segment): ``GOFIPS140``, ``GOEXPERIMENT``, ``CGO_ENABLED`` and
  ``DefaultGODEBUG`` (which must hold ``fips140=on``);
- ``pclntab``: the *function names* in the pclntab (``.gopclntab``), which the Go runtime
  needs for stack traces and which therefore survive ``-ldflags=-s -w`` (the ``.symtab``
  does not). A binary built with ``GOFIPS140=v1.0.0`` has its crypto in
  ``crypto/internal/fips140/v1.0.0-<hash>/...`` (the frozen, validated module; the last
  path element appears escaped as ``v1%2e0%2e0-<hash>``); a binary built without it has
  the in-tree ``crypto/internal/fips140/sha256`` etc. instead. For BoringCrypto the
  evidence is the cgo stubs ``crypto/internal/boring._Cfunc__goboringcrypto_*``: a
  cgo-less ``GOEXPERIMENT=boringcrypto`` build still carries the label but not those;
- static: no ``PT_INTERP`` program header (``mke.elf``, the one ELF reader);
- ``binary``: those facts of one file; ``policy``: what a build demands of them and the
  verdict per binary; ``table``: the per-binary table and the JSON report.

**The runtime.** ``runtime_env``: whether this is a FIPS runtime (mke/start.py set it up),
its provider's provenance, and the environment its children get; ``libcrypto``: the
process's OpenSSL (providers loaded, keys made inside the FIPS provider);
``runtime_state``: which OpenSSL ``hashlib`` and ``cryptography`` use, whether the FIPS
provider is loaded and is the default, and the behaviour that follows (MD5 refused,
RSA-1024 refused, CPython's built-in hash modules absent).
"""
