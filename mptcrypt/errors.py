"""Exception types. Each message says what went wrong and what the user can do about it."""


class MptcryptError(Exception):
    """Base of every error mptcrypt reports to a user."""

    exit_code = 1


class ConfigError(MptcryptError):
    """A bad configuration file, option or port/policy specification."""

    exit_code = 2


class NotRootError(MptcryptError):
    """The command needs root (CAP_NET_ADMIN) and does not have it."""

    exit_code = 77


class KernelFeatureError(MptcryptError):
    """The kernel or the machine lacks something the command needs (NFQUEUE, MPTCP, netem...)."""

    exit_code = 69


class AlreadyRunningError(MptcryptError):
    """A daemon (or a topology) is already up where this command would start one."""

    exit_code = 75


class DaemonNotRunning(MptcryptError):
    """No daemon answers on this network namespace's control socket."""

    exit_code = 3


class HandshakeInProgress(MptcryptError):
    """A connection's mptcrypt handshake was still undecided when a caller's wait for its session ID ran out."""


# --- protocol errors raised inside the sans-IO core; the engine turns them into counters -------------


class ProtocolError(Exception):
    """A packet the core cannot accept. Never reaches a user as a crash: counted and dropped."""


class DecodeError(ProtocolError):
    """Bytes that do not parse as the header or option they claim to be."""


class MacFailure(ProtocolError):
    """A segment whose MAC does not verify."""


class HandshakeError(ProtocolError):
    """A handshake message that is malformed, unexpected or cryptographically invalid."""
