"""The FIPS toolchain (never shipped inside mke): builder settings, the OpenSSL FIPS
provider build, and the runtime bundle options. See docs/fips.md.

- ``fips.settings``: fips/toolchain.toml -> Go build changes (--fips-go=native|boring), check policy
- ``fips.openssl``: build the OpenSSL 3 FIPS provider, ``openssl fipsinstall``, openssl.cnf
- ``fips.runtime``: what a FIPS mke's Python runtime carries (provider, system-linked cryptography)
"""
