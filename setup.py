"""Builds the compiled segment path (mptcrypt/crypto/_segment.c) against the system's OpenSSL 3 libcrypto
(Debian: libssl-dev). Everything else is in pyproject.toml. The extension is optional: if it cannot be built the
package installs without it and mptcrypt runs the pure-Python reference (the daemon says so at start)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "mptcrypt.crypto._segment",
            sources=["mptcrypt/crypto/_segment.c"],
            libraries=["crypto"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter",
                                "-Wno-missing-field-initializers", "-Wno-cast-function-type"],
            optional=True,
        ),
    ],
)
