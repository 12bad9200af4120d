"""Every protocol constant of mptcrypt, in one place (see docs/protocol.md for the wire format)."""

from enum import IntEnum

# --- TCP option kinds (IANA "TCP Option Kind Numbers") -------------------------------------------
TCPOPT_EOL = 0
TCPOPT_NOP = 1
TCPOPT_MSS = 2
TCPOPT_WSCALE = 3
TCPOPT_SACK_PERM = 4
TCPOPT_SACK = 5
TCPOPT_TIMESTAMP = 8
TCPOPT_MPTCP = 30
TCPOPT_EXP = 253  # RFC 6994 shared experimental option, carries every mptcrypt message

TCP_MAX_OPTION_SPACE = 40  # RFC 9293 §3.1: data offset is 4 bits of 32-bit words, 20 bytes fixed header

# RFC 6994 ExID of mptcrypt. 0x4D50 ("MP") is not in the IANA TCP Experimental Option ExID registry.
MPTCRYPT_EXID = 0x4D50
EXP_HEADER_LEN = 4  # kind, length, 16-bit ExID


class Msg(IntEnum):
    """mptcrypt message types: the first byte after the ExID."""

    HELLO = 1  # SYN: "I speak mptcrypt"
    PKCONF = 2  # SYN-ACK: server's public-key cipher list
    INIT1 = 3  # marker option of a daemon-made segment whose payload is INIT1
    INIT2 = 4  # marker option of a daemon-made segment whose payload is INIT2
    NEXTK1 = 5  # SYN of a join or resumed connection: index + proof of ss[i]
    NEXTK2 = 6  # SYN-ACK answering NEXTK1: proof of ss[i]
    REKEY = 7  # rekey a subflow to the next key generation
    # The MAC option carries no type byte: it is recognised by its length (MAC_OPTION_LEN) so that
    # it fits in 12 bytes beside a 28-byte DSS (PROTOCOL.md "Negotiation and option budget").


MAC_TAG_LEN = 8
MAC_OPTION_LEN = EXP_HEADER_LEN + MAC_TAG_LEN  # 12 bytes on the wire
MSS_CLAMP = MAC_OPTION_LEN  # both daemons lower the MSS by the MAC option's size

JOIN_PROOF_LEN = 8  # NEXTK1 / NEXTK2 proof length
RESUME_ID_LEN = 8  # NEXTK1 (resumption): which cached session


class PubCipher(IntEnum):
    """Public-key ciphers (PKCONF list, INIT1 choice)."""

    X25519 = 0x01
    P256 = 0x02
    RSA2048_E3 = 0x03


class SymCipher(IntEnum):
    """Symmetric suites: the keystream cipher; the MAC is Poly1305-then-AES for both (docs/protocol.md §5)."""

    AES128 = 0x01
    CHACHA20 = 0x02


DEFAULT_PUB_CIPHERS = (PubCipher.X25519, PubCipher.P256, PubCipher.RSA2048_E3)
DEFAULT_SYM_CIPHERS = (SymCipher.AES128, SymCipher.CHACHA20)

NONCE_LEN = 32  # N_C and N_S
INIT_MAGIC = b"MPTC"  # first bytes of an INIT1/INIT2 payload

# --- key schedule tags (HMAC-SHA256 labels; docs/protocol.md §Key schedule) -----------------------
TAG_NEXT_KEY = b"mptcrypt next key"
TAG_SESSION_ID = b"mptcrypt session id"
TAG_RESUME_ID = b"mptcrypt resume id"
TAG_DH_NS = b"mptcrypt dh n_s"
TAG_JOIN_SYN = b"mptcrypt nextk1"
TAG_JOIN_SYNACK = b"mptcrypt nextk2"
# Per-direction keys; direction A = subflow initiator to responder, B = the other way.
TAG_ENC_A = b"mptcrypt enc a"
TAG_ENC_B = b"mptcrypt enc b"
TAG_MAC_A = b"mptcrypt mac a"
TAG_MAC_B = b"mptcrypt mac b"
TAG_NONCE_A = b"mptcrypt nonce a"
TAG_NONCE_B = b"mptcrypt nonce b"
TAG_REKEY = b"mptcrypt rekey"
# Session-ID authentication (mptcrypt.auth)
TAG_CLIENT = b"mptcrypt auth client"
TAG_SERVER = b"mptcrypt auth server"

# --- MPTCP (RFC 8684) ------------------------------------------------------------------------------
MPTCP_TOKEN_LEN = 4

# --- daemon and edges ----------------------------------------------------------------------------
NAME_PREFIX = "mptc-"  # every namespace and link the project creates
CHAIN_PREFIX = "MPTC-"  # every iptables chain the project creates
CHAIN_OUT = "MPTC-OUT"
CHAIN_IN = "MPTC-IN"
DEFAULT_QUEUE_NUM = 4242
# fwmark on daemon-made segments so that MPTC-OUT lets them pass instead of queueing them again
INJECT_MARK = 0x4D50
CONTROL_SOCKET = "\0mptcrypt-control"  # abstract Unix socket: one per network namespace
