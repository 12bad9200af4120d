"""mptcrypt: opportunistic tcpcrypt-style encryption for TCP and MPTCP."""

__version__ = "0.1.0"
