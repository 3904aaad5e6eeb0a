# PyInstaller runtime hook of the FIPS mke (fips/runtime.py adds it; runs before the entry script).
#
# Points the bundled OpenSSL (libcrypto.so.3, used by hashlib and by a cryptography linked
# against it) at the bundled FIPS provider and its configuration, before anything loads
# libcrypto. openssl.cnf names the module ${ENV::MKE_FIPS_RUNTIME}/fips.so, so OPENSSL_MODULES
# (which PyInstaller's own cryptography hook sets to its ossl-modules dir) does not matter.
# The caller's values are kept in MKE_FIPS_SAVED_<NAME>, so that the processes mke starts
# get them back (mke.fips.runtime_env.child_env). Kept tiny: it runs on every start.
import os
import sys

_dir = os.path.join(sys._MEIPASS, "mke_fips")
for _name, _value in (
    ("OPENSSL_CONF", os.path.join(_dir, "openssl.cnf")),
    ("OPENSSL_MODULES", None),  # only saved: other runtime hooks may set it
    ("CRYPTOGRAPHY_OPENSSL_NO_LEGACY", "1"),
):
    if "MKE_FIPS_SAVED_" + _name not in os.environ:
        os.environ["MKE_FIPS_SAVED_" + _name] = os.environ.get(_name, "")
    if _value is not None:
        os.environ[_name] = _value
os.environ["MKE_FIPS_RUNTIME"] = _dir

# The bundle leaves out CPython's built-in _md5/_sha1/_blake2/... so that hashlib cannot
# fall back to them; hashlib then logs "code for hash md5 was not found" with a traceback
# for each algorithm OpenSSL refuses, at its first import. Those are expected: drop them.
import logging


class _RefusedHashes(logging.Filter):
    def filter(self, record):
        return not str(record.msg).startswith("code for hash ")


logging.getLogger().addFilter(_RefusedHashes())
del _dir, _name, _value
