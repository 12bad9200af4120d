"""Builds the compiled segment path (mptcrypt/crypto/_segment.c) against the system's OpenSSL 3 libcrypto
(Debian: libssl-dev), and the batched NFQUEUE helper (mptcrypt/daemon/_nfq.c, kernel headers only). Everything
else is in pyproject.toml. Both are optional: if one cannot be built the package installs without it and mptcrypt
runs the pure-Python segment path / the netfilterqueue backend instead (the daemon says so at start)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "mptcrypt.crypto._segment",
            sources=["mptcrypt/crypto/_segment.c"],
            depends=["mptcrypt/crypto/_fastpath_api.h"],
            libraries=["crypto"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter",
                                "-Wno-missing-field-initializers", "-Wno-cast-function-type"],
            optional=True,
        ),
        # batched NFQUEUE I/O (recvmmsg, verdicts in one sendmsg) for `mptcrypt daemon --queue-backend batched`
        # recv_batch_fast calls the fast path of mptcrypt.crypto._segment through its capsule (_fastpath_api.h)
        Extension("mptcrypt.daemon._nfq", sources=["mptcrypt/daemon/_nfq.c"],
                  depends=["mptcrypt/crypto/_fastpath_api.h"], extra_compile_args=["-O2", "-Wall"], optional=True),
    ],
)
