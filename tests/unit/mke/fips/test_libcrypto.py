"""mke/fips/libcrypto.py: keys from the FIPS provider when it is active, else from cryptography; fail closed."""

from __future__ import annotations

import pytest

from mke.errors import FipsError
from mke.fips.libcrypto import fips_provider_active, generate_private_key, provider_state


def test_provider_state_reads_this_processs_libcrypto():
    """The libcrypto asked over ctypes is the one Python's ssl module reports; without a FIPS
    configuration the default provider is loaded and fips is not."""
    import ssl

    state = provider_state()
    assert state["version"] == ssl.OPENSSL_VERSION
    if not fips_provider_active():
        assert state["default"] and not state["fips"] and not state["default_properties_fips"]


def test_generate_private_key_without_provider():
    """Outside a FIPS runtime the keys come from cryptography, same types as mke/pki.py makes."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if fips_provider_active():
        pytest.skip("this Python runs a FIPS provider")
    k = generate_private_key("EC", curve="P-256")
    assert isinstance(k, ec.EllipticCurvePrivateKey) and isinstance(k.curve, ec.SECP256R1)
    assert isinstance(generate_private_key("RSA", bits=2048), rsa.RSAPrivateKey)
    with pytest.raises(FipsError, match="unknown curve"):
        generate_private_key("EC", curve="P-192")


def test_fips_runtime_without_provider_makes_no_keys(monkeypatch):
    """Fail closed: in a FIPS mke whose provider did not load, mke/pki.py's new_key refuses."""
    from mke import pki

    if fips_provider_active():
        pytest.skip("this Python runs a FIPS provider")
    monkeypatch.setenv("MKE_FIPS_RUNTIME", "/nonexistent")
    with pytest.raises(FipsError, match="no active OpenSSL FIPS provider"):
        pki.new_key()
