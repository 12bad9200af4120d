/*
 * mptcrypt.crypto._segment: the compiled segment-protection boundary (docs/protocol.md §5, protocol version 2).
 *
 * SegmentCipher(suite, secrets).seal/open(packet, l4, ext_seq, ext_ack) and assemble(packet, l4, options,
 * payload) do exactly what the pure-Python reference in mptcrypt/crypto/segment.py does, byte for byte (a
 * differential test holds them to it): keystream through EVP (AES-128-CTR with counter block nonce|00000002, the
 * AES-128-GCM keystream; or ChaCha20 with block counter 1, the ChaCha20-Poly1305 keystream), the MAC
 * AES-128(k2, Poly1305_{r=k1,s=0}(mac_input))[:8] (Poly1305 below, one AES-ECB context), the MAC
 * option appended or stripped, IP length, IPv4 header checksum and TCP checksum, into one output buffer.
 * One EVP context per key, made once per direction of a subflow (the shape of aioquic's _crypto.c).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/opensslv.h>

#include "_fastpath_api.h"

#define MODULE_NAME "mptcrypt.crypto._segment"
#define MAC_VERSION 2           /* the protocol version whose MAC this implements */

#define SUITE_AES128 0x01       /* mptcrypt.constants.SymCipher */
#define SUITE_CHACHA20 0x02
#define TCP_HEADER_LEN 20
#define TCP_MAX_OPTION_SPACE 40
#define MAC_OPTION_LEN 12       /* FD 0C 4D 50 + 8-byte tag */
#define MAC_TAG_LEN 8
#define MAC_FIELDS_LEN 22       /* ext seq, ext ack, offset+flags, window, urgent */
#define IPV4_HEADER_LEN 20
#define IPV6_HEADER_LEN 40
#define IP_MAX_LEN 0xFFFF       /* IPv4 total length, IPv6 payload length */
#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_RST 0x04
#define TCP_FLAG_ACK 0x10

static const unsigned char MAC_PREFIX[4] = {0xFD, MAC_OPTION_LEN, 0x4D, 0x50};  /* kind 253, ExID 0x4D50 */

/*
 * Poly1305 (RFC 8439 §2.5) with s = 0: the almost-universal hash of the MAC. Written here (radix 2^44, 64x64->128
 * multiplies as in poly1305-donna, four blocks per step) rather than called through EVP_MAC: the key r is fixed per
 * direction, so it is clamped and its powers computed once, and a segment costs neither EVP_MAC's per-call setup
 * (~0.3 µs here, mostly OpenSSL's AVX-512 code building its table of powers of r for every new key) nor its
 * parameter lookups.
 */
typedef unsigned __int128 u128;
#define M44 0xFFFFFFFFFFFull
#define M42 0x3FFFFFFFFFFull

typedef struct {
    uint64_t r[3], s[3];        /* a power of r in radix 2^44 (44, 44, 42 bits); s_i = 20 r_i: 2^132 = 20 mod p */
} PolyPow;

typedef struct {
    PolyPow pow[4];             /* r, r^2, r^3, r^4: four blocks per step of Horner's rule (below) */
} PolyKey;

typedef struct {
    uint64_t h0, h1, h2;
} PolyState;

static inline uint64_t
le64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8); /* little-endian hosts only: see the check below */
    return v;
}

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the Poly1305 code reads little-endian words with memcpy; add a byte swap for this host"
#endif

/* d += a * b (mod 2^130 - 5, unreduced 128-bit column sums) */
#define POLY_MULADD(d0, d1, d2, a0, a1, a2, P)                                                            \
    do {                                                                                                  \
        d0 += (u128)(a0) * (P)->r[0] + (u128)(a1) * (P)->s[2] + (u128)(a2) * (P)->s[1];                   \
        d1 += (u128)(a0) * (P)->r[1] + (u128)(a1) * (P)->r[0] + (u128)(a2) * (P)->s[2];                   \
        d2 += (u128)(a0) * (P)->r[2] + (u128)(a1) * (P)->r[1] + (u128)(a2) * (P)->r[0];                   \
    } while (0)

/* carry the column sums into h (limbs below 2^44, 2^44 + small, 2^42) */
static inline void
poly_carry(u128 d0, u128 d1, u128 d2, uint64_t *h0, uint64_t *h1, uint64_t *h2)
{
    uint64_t c = (uint64_t)(d0 >> 44);
    *h0 = (uint64_t)d0 & M44;
    d1 += c;
    c = (uint64_t)(d1 >> 44);
    *h1 = (uint64_t)d1 & M44;
    d2 += c;
    c = (uint64_t)(d2 >> 42);
    *h2 = (uint64_t)d2 & M42;
    *h0 += c * 5;
    c = *h0 >> 44;
    *h0 &= M44;
    *h1 += c;
}

static void
poly_pow_set(PolyPow *p, uint64_t r0, uint64_t r1, uint64_t r2)
{
    p->r[0] = r0;
    p->r[1] = r1;
    p->r[2] = r2;
    for (int i = 0; i < 3; i++)
        p->s[i] = p->r[i] * 20;
}

static void
poly_key(PolyKey *k, const unsigned char key[16])
{
    uint64_t t0 = le64(key), t1 = le64(key + 8);
    poly_pow_set(&k->pow[0], t0 & 0xFFC0FFFFFFFull, ((t0 >> 44) | (t1 << 20)) & 0xFFFFFC0FFFFull,
                 (t1 >> 24) & 0x00FFFFFFC0Full);  /* clamped as RFC 8439 §2.5 */
    for (int i = 1; i < 4; i++) {
        const PolyPow *a = &k->pow[i - 1];
        u128 d0 = 0, d1 = 0, d2 = 0;
        uint64_t h0, h1, h2;
        POLY_MULADD(d0, d1, d2, a->r[0], a->r[1], a->r[2], &k->pow[0]);
        poly_carry(d0, d1, d2, &h0, &h1, &h2);
        poly_pow_set(&k->pow[i], h0, h1, h2);
    }
}

#define POLY_LOAD(m, hibit, a0, a1, a2)                                                                   \
    do {                                                                                                  \
        uint64_t t0 = le64(m), t1 = le64((m) + 8);                                                        \
        a0 = t0 & M44;                                                                                    \
        a1 = ((t0 >> 44) | (t1 << 20)) & M44;                                                             \
        a2 = ((t1 >> 24) & M42) | (hibit);                                                                \
    } while (0)

/* h = (h + m_1) r^n + ... + m_n r for the n whole 16-byte blocks of m (mod 2^130 - 5): four blocks at a time as
   (h + m1) r^4 + m2 r^3 + m3 r^2 + m4 r, so the four products are independent and one carry chain serves them.
   `hibit` is 2^128 (limb 2: 1 << 40), or 0 for the padded last block, which carries its own 0x01. */
static void
poly_blocks(PolyState *st, const PolyKey *k, const unsigned char *m, size_t n, uint64_t hibit)
{
    uint64_t h0 = st->h0, h1 = st->h1, h2 = st->h2, a0, a1, a2;
    for (; n >= 64; m += 64, n -= 64) {
        u128 d0 = 0, d1 = 0, d2 = 0;
        POLY_LOAD(m, hibit, a0, a1, a2);
        POLY_MULADD(d0, d1, d2, h0 + a0, h1 + a1, h2 + a2, &k->pow[3]);
        POLY_LOAD(m + 16, hibit, a0, a1, a2);
        POLY_MULADD(d0, d1, d2, a0, a1, a2, &k->pow[2]);
        POLY_LOAD(m + 32, hibit, a0, a1, a2);
        POLY_MULADD(d0, d1, d2, a0, a1, a2, &k->pow[1]);
        POLY_LOAD(m + 48, hibit, a0, a1, a2);
        POLY_MULADD(d0, d1, d2, a0, a1, a2, &k->pow[0]);
        poly_carry(d0, d1, d2, &h0, &h1, &h2);
    }
    for (; n >= 16; m += 16, n -= 16) {
        u128 d0 = 0, d1 = 0, d2 = 0;
        POLY_LOAD(m, hibit, a0, a1, a2);
        POLY_MULADD(d0, d1, d2, h0 + a0, h1 + a1, h2 + a2, &k->pow[0]);
        poly_carry(d0, d1, d2, &h0, &h1, &h2);
    }
    st->h0 = h0;
    st->h1 = h1;
    st->h2 = h2;
}

/* The last partial block (1-15 bytes), padded with 0x01 then zeros (RFC 8439 §2.5.1). */
static void
poly_tail(PolyState *st, const PolyKey *k, const unsigned char *m, size_t n)
{
    unsigned char block[16] = {0};
    memcpy(block, m, n);
    block[n] = 1;
    poly_blocks(st, k, block, 16, 0);
}

/* h mod 2^130 - 5, little-endian 16 bytes (plus s = 0). */
static void
poly_finish(const PolyState *st, unsigned char out[16])
{
    uint64_t h0 = st->h0, h1 = st->h1, h2 = st->h2, c;
    c = h1 >> 44; h1 &= M44; h2 += c;
    c = h2 >> 42; h2 &= M42; h0 += c * 5;
    c = h0 >> 44; h0 &= M44; h1 += c;
    c = h1 >> 44; h1 &= M44; h2 += c;
    c = h2 >> 42; h2 &= M42; h0 += c * 5;
    c = h0 >> 44; h0 &= M44; h1 += c;
    /* g = h + 5 - 2^130; take g if it did not borrow (h >= p), in constant time */
    uint64_t g0 = h0 + 5;
    c = g0 >> 44; g0 &= M44;
    uint64_t g1 = h1 + c;
    c = g1 >> 44; g1 &= M44;
    uint64_t g2 = h2 + c - (1ull << 42);
    uint64_t mask = (g2 >> 63) - 1; /* all ones when g2 did not go negative */
    h0 = (h0 & ~mask) | (g0 & mask);
    h1 = (h1 & ~mask) | (g1 & mask);
    h2 = (h2 & ~mask) | (g2 & mask);
    uint64_t lo = h0 | (h1 << 44), hi = (h1 >> 20) | (h2 << 24);
    memcpy(out, &lo, 8);
    memcpy(out + 8, &hi, 8);
}

/* Poly1305_{r, s=0}(m) of a contiguous message */
static void
poly_hash(const PolyKey *k, const unsigned char *m, size_t n, unsigned char out[16])
{
    PolyState st = {0, 0, 0};
    size_t whole = n & ~(size_t)15;
    poly_blocks(&st, k, m, whole, 1ull << 40);
    if (n > whole)
        poly_tail(&st, k, m + whole, n - whole);
    poly_finish(&st, out);
}

typedef struct {
    PyObject_HEAD
    int suite;
    EVP_CIPHER_CTX *keystream;  /* AES-128-CTR or ChaCha20 under enc */
    EVP_CIPHER_CTX *prf;        /* AES-128-ECB under k2 = mac[16:32] */
    PolyKey hash_key;           /* Poly1305 r = k1 = mac[:16], clamped */
    unsigned char salt[12];
} SegmentCipherObject;

static int
openssl_failed(const char *what)
{
    ERR_clear_error();
    PyErr_Format(PyExc_RuntimeError, "OpenSSL %s failed", what);
    return -1;
}

static inline uint16_t
get16(const unsigned char *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static inline void
put16(unsigned char *p, unsigned v)
{
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}

static inline void
put64(unsigned char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (unsigned char)v;
        v >>= 8;
    }
}

/* One's-complement sum in native byte order (RFC 1071 §2(B): byte-order independent, swap at the end). */
static uint64_t
sum_native(uint64_t acc, const unsigned char *p, size_t n)
{
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        acc += (w & 0xFFFFFFFFu) + (w >> 32);
        p += 8;
        n -= 8;
    }
    if (n >= 4) {
        uint32_t w;
        memcpy(&w, p, 4);
        acc += w;
        p += 4;
        n -= 4;
    }
    if (n >= 2) {
        uint16_t w;
        memcpy(&w, p, 2);
        acc += w;
        p += 2;
        n -= 2;
    }
    if (n) {
        uint16_t w = 0;
        memcpy(&w, p, 1); /* the odd byte is the high byte of a zero-padded big-endian word */
        acc += w;
    }
    return acc;
}

static inline uint16_t
fold(uint64_t acc)
{
    while (acc >> 16)
        acc = (acc & 0xFFFF) + (acc >> 16);
    return (uint16_t)acc;
}

/*
 * Lengths and checksums of `out` (IP header of `l4` bytes copied from the input, then the TCP segment of
 * `tcp_len` bytes with a zero checksum field), as segment.py's assemble computes them: the IPv4 header checksum
 * updated for the new length (RFC 1624 eqn. 3), the IPv6 payload length counting extension headers, and the TCP
 * checksum 0xFFFF - (sum mod 0xFFFF) (never 0x0000).
 */
static void
finish_packet(unsigned char *out, Py_ssize_t l4, Py_ssize_t tcp_len)
{
    unsigned char pseudo[40];
    size_t pseudo_len;
    if (out[0] >> 4 == 4) {
        unsigned new_len = (unsigned)(l4 + tcp_len);
        uint32_t total = (~get16(out + 10) & 0xFFFFu) + (~get16(out + 2) & 0xFFFFu) + new_len;
        total = (total & 0xFFFF) + (total >> 16);
        total = (total & 0xFFFF) + (total >> 16);
        put16(out + 2, new_len);
        put16(out + 10, ~total & 0xFFFF);
        memcpy(pseudo, out + 12, 8);
        pseudo[8] = 0;
        pseudo[9] = 6;
        put16(pseudo + 10, (unsigned)tcp_len);
        pseudo_len = 12;
    } else {
        put16(out + 4, (unsigned)(l4 - IPV6_HEADER_LEN + tcp_len));
        memcpy(pseudo, out + 8, 32);
        pseudo[32] = (unsigned char)(tcp_len >> 24);
        pseudo[33] = (unsigned char)(tcp_len >> 16);
        put16(pseudo + 34, (unsigned)tcp_len & 0xFFFF);
        memset(pseudo + 36, 0, 3);
        pseudo[39] = 6;
        pseudo_len = 40;
    }
    uint16_t s = fold(sum_native(sum_native(0, pseudo, pseudo_len), out + l4, (size_t)tcp_len));
    uint16_t csum = s == 0xFFFF ? 0xFFFF : (uint16_t)~s;
    memcpy(out + l4 + 16, &csum, 2); /* native order, like the sum */
}

/* 0, or -1 with ValueError when `tcp_len` bytes after the `l4`-byte IP header overflow its length field. */
static int
check_ip_len(const unsigned char *p, Py_ssize_t l4, Py_ssize_t tcp_len)
{
    Py_ssize_t counted = l4 + tcp_len - (p[0] >> 4 == 4 ? 0 : IPV6_HEADER_LEN);
    if (counted > IP_MAX_LEN) {
        PyErr_Format(PyExc_ValueError, "%zd bytes of TCP do not fit the IP length field", tcp_len);
        return -1;
    }
    return 0;
}

/* The IP version's minimum header length is at most l4 and the TCP header fits; -1 with ValueError otherwise. */
static int
check_l4(const unsigned char *p, Py_ssize_t len, Py_ssize_t l4)
{
    int version = len > 0 ? p[0] >> 4 : 0;
    Py_ssize_t min = version == 4 ? IPV4_HEADER_LEN : version == 6 ? IPV6_HEADER_LEN : -1;
    /* l4 > len - 20, not len < l4 + 20: l4 comes from the caller and l4 + 20 may overflow */
    if (min < 0 || l4 < min || l4 > len - TCP_HEADER_LEN) {
        PyErr_Format(PyExc_ValueError, "no TCP header at offset %zd of a %zd-byte IPv%d packet", l4, len, version);
        return -1;
    }
    return 0;
}

static int
tcp_header_len(const unsigned char *p, Py_ssize_t len, Py_ssize_t l4)
{
    int hlen = (p[l4 + 12] >> 4) * 4;
    if (hlen < TCP_HEADER_LEN || l4 + hlen > len) {
        PyErr_Format(PyExc_ValueError, "TCP header length %d does not fit a %zd-byte packet at offset %zd", hlen,
                     len, l4);
        return -1;
    }
    return hlen;
}

static int
keystream_xor(SegmentCipherObject *self, uint64_t ext_seq, const unsigned char *in, unsigned char *out, Py_ssize_t n)
{
    unsigned char iv[16];
    unsigned char *nonce = self->suite == SUITE_AES128 ? iv : iv + 4;
    memcpy(nonce, self->salt, 12);
    for (int i = 11; i >= 4; i--) {
        nonce[i] ^= (unsigned char)ext_seq;
        ext_seq >>= 8;
    }
    if (self->suite == SUITE_AES128) {
        memcpy(iv + 12, "\x00\x00\x00\x02", 4);   /* GCM: J0 = nonce|1 is the tag's, data from nonce|2 */
    } else {
        memcpy(iv, "\x01\x00\x00\x00", 4);        /* RFC 8439 §2.8: block counter 1, little-endian */
    }
    int outl;
    if (n > INT_MAX) {  /* EVP takes an int: never encrypt a prefix and hand back uninitialised bytes */
        PyErr_Format(PyExc_ValueError, "%zd bytes are too long for one keystream call", n);
        return -1;
    }
    if (!EVP_EncryptInit_ex(self->keystream, NULL, NULL, NULL, iv) ||
        !EVP_EncryptUpdate(self->keystream, out, &outl, in, (int)n))
        return openssl_failed("keystream");
    return 0;
}

static int
mac(SegmentCipherObject *self, uint64_t ext_seq, uint64_t ext_ack, const unsigned char *tcp, unsigned kernel_word,
    const unsigned char *options, size_t options_len, const unsigned char *ct, size_t ct_len, unsigned char *tag)
{
    /* fields | options | the first ciphertext bytes up to a 16-byte boundary, then the rest of the ciphertext
       straight from the packet */
    unsigned char head[MAC_FIELDS_LEN + TCP_MAX_OPTION_SPACE + 16], hash[16], block[16];
    PolyState st = {0, 0, 0};
    int outl;
    put64(head, ext_seq);
    put64(head + 8, ext_ack);
    put16(head + 16, kernel_word);
    memcpy(head + 18, tcp + 14, 2);   /* window */
    memcpy(head + 20, tcp + 18, 2);   /* urgent pointer */
    memcpy(head + MAC_FIELDS_LEN, options, options_len);
    size_t head_len = MAC_FIELDS_LEN + options_len;
    size_t fill = (16 - head_len % 16) % 16;
    if (fill > ct_len)
        fill = ct_len;
    memcpy(head + head_len, ct, fill);
    head_len += fill;
    ct += fill;
    ct_len -= fill;
    poly_blocks(&st, &self->hash_key, head, head_len & ~(size_t)15, 1ull << 40);
    if (ct_len == 0) {
        if (head_len % 16)
            poly_tail(&st, &self->hash_key, head + (head_len & ~(size_t)15), head_len % 16);
    } else {  /* head_len is a multiple of 16 here */
        poly_blocks(&st, &self->hash_key, ct, ct_len & ~(size_t)15, 1ull << 40);
        if (ct_len % 16)
            poly_tail(&st, &self->hash_key, ct + (ct_len & ~(size_t)15), ct_len % 16);
    }
    poly_finish(&st, hash);
    if (!EVP_EncryptUpdate(self->prf, block, &outl, hash, 16))
        return openssl_failed("MAC");
    memcpy(tag, block, MAC_TAG_LEN);
    OPENSSL_cleanse(hash, sizeof hash);  /* H(m) of a known m gives r away */
    OPENSSL_cleanse(&st, sizeof st);
    return 0;
}

/* 0, or -1 with ValueError for an object whose __init__ never ran (SegmentCipher.__new__ alone): its EVP
   contexts are NULL and OpenSSL would dereference them */
static int
check_ready(SegmentCipherObject *self)
{
    if (self->keystream == NULL || self->prf == NULL) {
        PyErr_SetString(PyExc_ValueError, "SegmentCipher used before __init__ set its keys");
        return -1;
    }
    return 0;
}

/* seal/open's arguments, the packet's buffer (released here on error) and its TCP header length */
static int
parse_args(SegmentCipherObject *self, PyObject *const *args, Py_ssize_t nargs, const char *name, Py_buffer *packet,
           Py_ssize_t *l4, uint64_t *ext_seq, uint64_t *ext_ack, int *hlen)
{
    if (check_ready(self) < 0)
        return -1;
    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError, "%s() takes 4 arguments (packet, l4, ext_seq, ext_ack), %zd given", name,
                     nargs);
        return -1;
    }
    *l4 = PyLong_AsSsize_t(args[1]);
    if (*l4 == -1 && PyErr_Occurred())
        return -1;
    *ext_seq = PyLong_AsUnsignedLongLong(args[2]);
    if (*ext_seq == (uint64_t)-1 && PyErr_Occurred())
        return -1;
    *ext_ack = PyLong_AsUnsignedLongLong(args[3]);
    if (*ext_ack == (uint64_t)-1 && PyErr_Occurred())
        return -1;
    if (PyObject_GetBuffer(args[0], packet, PyBUF_SIMPLE) < 0)
        return -1;
    if (check_l4(packet->buf, packet->len, *l4) < 0 || (*hlen = tcp_header_len(packet->buf, packet->len, *l4)) < 0) {
        PyBuffer_Release(packet);
        return -1;
    }
    return 0;
}

/* 0, or -1 with ValueError when ext_seq / ext_ack (with ACK set) do not have the header's 32-bit seq / ack as
   their low bits: the MAC covers the caller's 64-bit numbers, the kernel acts on the header's, so a caller that
   extended from stale state must not get a segment whose header says something else verified (or sealed). */
static int
check_extension(const unsigned char *tcp, uint64_t ext_seq, uint64_t ext_ack)
{
    uint32_t seq = (uint32_t)get16(tcp + 4) << 16 | get16(tcp + 6);
    uint32_t ack = (uint32_t)get16(tcp + 8) << 16 | get16(tcp + 10);
    if ((uint32_t)ext_seq != seq || (tcp[13] & TCP_FLAG_ACK && (uint32_t)ext_ack != ack)) {
        PyErr_Format(PyExc_ValueError, "extended seq/ack %llu/%llu do not end in the header's seq/ack %u/%u",
                     (unsigned long long)ext_seq, (unsigned long long)ext_ack, seq, ack);
        return -1;
    }
    return 0;
}

/* wire/compact.py dss_short_form: a DSS option with an 8-byte data ACK / DSN written in 4 bytes (their low 32
   bits, flags a / m cleared) into `out`; its size, or 0 when there is nothing to shorten (or its length does not
   match its flags): the caller copies it as it is */
static size_t
dss_short_form(const unsigned char *o, size_t len, unsigned char *out)
{
    unsigned flags = o[3];
    size_t ack_len = flags & 0x01 ? (flags & 0x02 ? 8 : 4) : 0;
    size_t dsn_len = flags & 0x04 ? (flags & 0x08 ? 8 : 4) : 0;
    size_t expected = 4 + ack_len + (dsn_len ? dsn_len + 6 : 0);
    if ((ack_len != 8 && dsn_len != 8) || !(len == expected || (dsn_len && len == expected + 2)))
        return 0;
    size_t i = 4, n = 4;
    memcpy(out, o, 4);
    if (ack_len) {
        memcpy(out + n, o + i + ack_len - 4, 4);
        i += ack_len;
        n += 4;
    }
    if (dsn_len) {
        memcpy(out + n, o + i + dsn_len - 4, 4);
        i += dsn_len;
        n += 4;
    }
    memcpy(out + n, o + i, len - i);
    n += len - i;
    out[1] = (unsigned char)n;
    out[3] = (unsigned char)(flags & ~((ack_len ? 0x02u : 0u) | (dsn_len ? 0x08u : 0u)));
    return n;
}

/* wire/compact.py compact_option_area: the option area without NOPs (nor an EOL and what follows), DSS in its
   short form, NOPs appended to a multiple of 4, into `out` (TCP_MAX_OPTION_SPACE bytes); its size, or -1 when an
   option's length is below 2 or runs past the end (the area stays as it is) */
static Py_ssize_t
compact_options(const unsigned char *o, size_t len, unsigned char *out)
{
    size_t i = 0, n = 0;
    while (i < len) {
        unsigned kind = o[i];
        if (kind == 0)
            break;
        if (kind == 1) {
            i++;
            continue;
        }
        if (i + 2 > len || o[i + 1] < 2 || i + o[i + 1] > len)
            return -1;
        size_t size = o[i + 1], done = 0;
        if (kind == 30 && size >= 4 && o[i + 2] >> 4 == 2)
            done = dss_short_form(o + i, size, out + n);
        if (!done) {
            memcpy(out + n, o + i, size);
            done = size;
        }
        n += done;
        i += size;
    }
    while (n % 4)
        out[n++] = 1;
    return (Py_ssize_t)n;
}

/*
 * The on-wire packet for kernel packet `in` (`len` bytes, TCP header at `l4` of `hlen` bytes, both checked by the
 * caller) into `out` (`cap` bytes): 1 with *out_len set, 0 when its options leave no room for the MAC option even
 * in their compact form (which the MAC then covers), -1 with a Python error (ValueError for bad input,
 * RuntimeError from OpenSSL, ENOMEM-free: out is the caller's).
 */
static int
seal_into(SegmentCipherObject *self, const unsigned char *in, Py_ssize_t len, Py_ssize_t l4, int hlen,
          uint64_t ext_seq, uint64_t ext_ack, unsigned char *out, Py_ssize_t cap, Py_ssize_t *out_len)
{
    Py_ssize_t options_len = hlen - TCP_HEADER_LEN;
    const unsigned char *options = in + l4 + TCP_HEADER_LEN;
    unsigned char compact[TCP_MAX_OPTION_SPACE];
    unsigned kernel_word = get16(in + l4 + 12);
    if (check_extension(in + l4, ext_seq, ext_ack) < 0)
        return -1;
    if (options_len + MAC_OPTION_LEN > TCP_MAX_OPTION_SPACE) {
        Py_ssize_t n = compact_options(options, (size_t)options_len, compact);
        if (n < 0 || n + MAC_OPTION_LEN > TCP_MAX_OPTION_SPACE)
            return 0;
        options = compact;
        options_len = n;
        kernel_word = (unsigned)(((TCP_HEADER_LEN + n) >> 2) << 12) | (kernel_word & 0x0FFF);
    }
    Py_ssize_t payload_len = len - l4 - hlen;
    Py_ssize_t wire_hlen = TCP_HEADER_LEN + options_len + MAC_OPTION_LEN;
    Py_ssize_t tcp_len = wire_hlen + payload_len;
    if (check_ip_len(in, l4, tcp_len) < 0)
        return -1;
    if (l4 + tcp_len > cap) {
        PyErr_Format(PyExc_ValueError, "a sealed packet of %zd bytes does not fit %zd", l4 + tcp_len, cap);
        return -1;
    }
    unsigned char *tcp = out + l4;
    unsigned char *ct = tcp + wire_hlen;
    memcpy(out, in, (size_t)(l4 + TCP_HEADER_LEN));
    memcpy(tcp + TCP_HEADER_LEN, options, (size_t)options_len);
    tcp[12] = (unsigned char)(((wire_hlen >> 2) << 4) | (in[l4 + 12] & 0x0F));
    tcp[16] = tcp[17] = 0;
    memcpy(tcp + TCP_HEADER_LEN + options_len, MAC_PREFIX, 4);
    if ((payload_len && keystream_xor(self, ext_seq, in + l4 + hlen, ct, payload_len) < 0) ||
        mac(self, ext_seq, ext_ack, in + l4, kernel_word, options, (size_t)options_len,
            ct, (size_t)payload_len, tcp + TCP_HEADER_LEN + options_len + 4) < 0)
        return -1;
    finish_packet(out, l4, tcp_len);
    *out_len = l4 + tcp_len;
    return 1;
}

/* The kernel packet for on-wire packet `in` into `out`, as seal_into: 1, 0 unless its option area ends with a MAC
   option that verifies, -1 with a Python error. */
static int
open_into(SegmentCipherObject *self, const unsigned char *in, Py_ssize_t len, Py_ssize_t l4, int hlen,
          uint64_t ext_seq, uint64_t ext_ack, unsigned char *out, Py_ssize_t cap, Py_ssize_t *out_len)
{
    const unsigned char *mac_opt = in + l4 + hlen - MAC_OPTION_LEN;
    if (check_extension(in + l4, ext_seq, ext_ack) < 0)
        return -1;
    if (hlen - TCP_HEADER_LEN < MAC_OPTION_LEN || memcmp(mac_opt, MAC_PREFIX, 4) != 0)
        return 0;
    int kernel_hlen = hlen - MAC_OPTION_LEN;
    Py_ssize_t ct_len = len - l4 - hlen;
    const unsigned char *ct = in + l4 + hlen;
    unsigned char tag[MAC_TAG_LEN];
    unsigned kernel_word = get16(in + l4 + 12) - ((MAC_OPTION_LEN >> 2) << 12);
    if (mac(self, ext_seq, ext_ack, in + l4, kernel_word, in + l4 + TCP_HEADER_LEN,
            (size_t)(kernel_hlen - TCP_HEADER_LEN), ct, (size_t)ct_len, tag) < 0)
        return -1;
    if (CRYPTO_memcmp(tag, mac_opt + 4, MAC_TAG_LEN) != 0)
        return 0;
    Py_ssize_t tcp_len = kernel_hlen + ct_len;
    if (check_ip_len(in, l4, tcp_len) < 0)  /* as the reference: a verified packet too long for the IP length */
        return -1;
    if (l4 + tcp_len > cap) {
        PyErr_Format(PyExc_ValueError, "an opened packet of %zd bytes does not fit %zd", l4 + tcp_len, cap);
        return -1;
    }
    memcpy(out, in, (size_t)(l4 + kernel_hlen));
    out[l4 + 12] = (unsigned char)(kernel_word >> 8);
    out[l4 + 16] = out[l4 + 17] = 0;
    if (ct_len && keystream_xor(self, ext_seq, ct, out + l4 + kernel_hlen, ct_len) < 0)
        return -1;
    finish_packet(out, l4, tcp_len);
    *out_len = l4 + tcp_len;
    return 1;
}

typedef int (*transform_fn)(SegmentCipherObject *, const unsigned char *, Py_ssize_t, Py_ssize_t, int, uint64_t,
                            uint64_t, unsigned char *, Py_ssize_t, Py_ssize_t *);

/* seal() / open() for Python: the result is built in a bytes object of the largest size, then shrunk */
static PyObject *
transform(SegmentCipherObject *self, PyObject *const *args, Py_ssize_t nargs, const char *name, transform_fn fn,
          Py_ssize_t grow)
{
    Py_buffer pkt;
    Py_ssize_t l4, out_len = 0;
    uint64_t ext_seq, ext_ack;
    int hlen;
    if (parse_args(self, args, nargs, name, &pkt, &l4, &ext_seq, &ext_ack, &hlen) < 0)
        return NULL;
    PyObject *result = PyBytes_FromStringAndSize(NULL, pkt.len + grow);
    if (result != NULL) {
        int rc = fn(self, pkt.buf, pkt.len, l4, hlen, ext_seq, ext_ack, (unsigned char *)PyBytes_AS_STRING(result),
                    pkt.len + grow, &out_len);
        if (rc <= 0) {
            Py_CLEAR(result);
            if (rc == 0)
                result = Py_NewRef(Py_None);
        } else if (out_len != pkt.len + grow) {
            _PyBytes_Resize(&result, out_len);
        }
    }
    PyBuffer_Release(&pkt);
    return result;
}

PyDoc_STRVAR(seal_doc, "seal(packet, l4, ext_seq, ext_ack) -> bytes | None\n\n"
             "The on-wire packet for kernel `packet`, or None when its options leave no room for the MAC option.\n"
             "ValueError when ext_seq (ext_ack, with ACK set) does not end in the header's seq (ack).");

static PyObject *
SegmentCipher_seal(SegmentCipherObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return transform(self, args, nargs, "seal", seal_into, MAC_OPTION_LEN);
}

PyDoc_STRVAR(open_doc, "open(packet, l4, ext_seq, ext_ack) -> bytes | None\n\n"
             "The kernel packet for on-wire `packet`; None unless its option area ends with a MAC option that "
             "verifies.\nValueError when ext_seq (ext_ack, with ACK set) does not end in the header's seq (ack).");

static PyObject *
SegmentCipher_open(SegmentCipherObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return transform(self, args, nargs, "open", open_into, -MAC_OPTION_LEN);
}

static int
SegmentCipher_init(SegmentCipherObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"suite", "secrets", NULL};
    PyObject *secrets, *attr[3] = {NULL, NULL, NULL};
    static const char *names[3] = {"enc", "mac", "salt"};
    char *buf[3];
    Py_ssize_t len[3];
    int suite, rc = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "iO", kwlist, &suite, &secrets))
        return -1;
    if (self->keystream != NULL) {
        PyErr_SetString(PyExc_TypeError, "SegmentCipher is initialised once");
        return -1;
    }
    for (int i = 0; i < 3; i++) {
        attr[i] = PyObject_GetAttrString(secrets, names[i]);
        if (attr[i] == NULL || PyBytes_AsStringAndSize(attr[i], &buf[i], &len[i]) < 0)
            goto out;
    }
    const EVP_CIPHER *cipher;
    if (suite == SUITE_AES128 && len[0] >= 16) {
        cipher = EVP_aes_128_ctr();
    } else if (suite == SUITE_CHACHA20 && len[0] >= 32) {
        cipher = EVP_chacha20();
    } else {
        PyErr_Format(PyExc_ValueError, "unknown symmetric suite %d or short key (%zd bytes)", suite, len[0]);
        goto out;
    }
    if (len[1] != 32 || len[2] != 12) {
        PyErr_Format(PyExc_ValueError, "mac must be 32 bytes and salt 12, not %zd and %zd", len[1], len[2]);
        goto out;
    }
    self->suite = suite;
    poly_key(&self->hash_key, (unsigned char *)buf[1]);
    memcpy(self->salt, buf[2], 12);
    self->keystream = EVP_CIPHER_CTX_new();
    self->prf = EVP_CIPHER_CTX_new();
    if (self->keystream == NULL || self->prf == NULL ||
        !EVP_EncryptInit_ex(self->keystream, cipher, NULL, (unsigned char *)buf[0], NULL) ||
        !EVP_EncryptInit_ex(self->prf, EVP_aes_128_ecb(), NULL, (unsigned char *)buf[1] + 16, NULL) ||
        !EVP_CIPHER_CTX_set_padding(self->prf, 0)) {
        openssl_failed("key setup");
        goto out;
    }
    rc = 0;
out:
    for (int i = 0; i < 3; i++)
        Py_XDECREF(attr[i]);
    return rc;
}

static void
SegmentCipher_dealloc(SegmentCipherObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    EVP_CIPHER_CTX_free(self->keystream);
    EVP_CIPHER_CTX_free(self->prf);
    OPENSSL_cleanse(&self->hash_key, sizeof self->hash_key);
    OPENSSL_cleanse(self->salt, sizeof self->salt);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

/* keystream(ext_seq, data) and tag(mac_input): the two primitives alone, for callers that assemble a segment
   themselves, and for the differential test against segment.SegmentKeys. */
static PyObject *
SegmentCipher_keystream(SegmentCipherObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer data;
    if (check_ready(self) < 0)
        return NULL;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "keystream(ext_seq, data)");
        return NULL;
    }
    uint64_t ext_seq = PyLong_AsUnsignedLongLong(args[0]);
    if (ext_seq == (uint64_t)-1 && PyErr_Occurred())
        return NULL;
    if (PyObject_GetBuffer(args[1], &data, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *out = PyBytes_FromStringAndSize(NULL, data.len);
    if (out != NULL && data.len &&
        keystream_xor(self, ext_seq, data.buf, (unsigned char *)PyBytes_AS_STRING(out), data.len) < 0)
        Py_CLEAR(out);
    PyBuffer_Release(&data);
    return out;
}

static PyObject *
SegmentCipher_tag(SegmentCipherObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer m;
    if (check_ready(self) < 0)
        return NULL;
    if (nargs != 1) {
        PyErr_SetString(PyExc_TypeError, "tag(mac_input)");
        return NULL;
    }
    if (PyObject_GetBuffer(args[0], &m, PyBUF_SIMPLE) < 0)
        return NULL;
    unsigned char hash[16], block[16];
    int outl;
    poly_hash(&self->hash_key, m.buf, (size_t)m.len, hash);
    PyBuffer_Release(&m);
    int ok = EVP_EncryptUpdate(self->prf, block, &outl, hash, 16);
    OPENSSL_cleanse(hash, sizeof hash);
    if (!ok) {
        openssl_failed("MAC");
        return NULL;
    }
    return PyBytes_FromStringAndSize((char *)block, MAC_TAG_LEN);
}

static PyMethodDef SegmentCipher_methods[] = {
    {"keystream", (PyCFunction)(void (*)(void))SegmentCipher_keystream, METH_FASTCALL,
     "keystream(ext_seq, data) -> data XOR the keystream at ext_seq"},
    {"tag", (PyCFunction)(void (*)(void))SegmentCipher_tag, METH_FASTCALL, "tag(mac_input) -> the 8-byte MAC"},
    {"seal", (PyCFunction)(void (*)(void))SegmentCipher_seal, METH_FASTCALL, seal_doc},
    {"open", (PyCFunction)(void (*)(void))SegmentCipher_open, METH_FASTCALL, open_doc},
    {NULL}
};

static PyType_Slot SegmentCipher_slots[] = {
    {Py_tp_dealloc, SegmentCipher_dealloc},
    {Py_tp_methods, SegmentCipher_methods},
    {Py_tp_doc, "SegmentCipher(suite, secrets): keys of one direction of one subflow and the per-segment "
                "transform (compiled; mptcrypt.crypto.segment.PySegmentCipher is the reference)."},
    {Py_tp_init, SegmentCipher_init},
    {Py_tp_new, PyType_GenericNew},
    {0, 0},
};

static PyType_Spec SegmentCipher_spec = {
    MODULE_NAME ".SegmentCipher", sizeof(SegmentCipherObject), 0, Py_TPFLAGS_DEFAULT, SegmentCipher_slots,
};

/*
 * FlowTable: the compiled fast path (issue 14 direction 3). The engine (core/engine.py, through
 * core/datapath.FastPath) installs an ENCRYPTING subflow here with its two SegmentCipher objects, its sequence
 * references and how far its sender may go before a REKEY; `packet()` (and the C entry point in the _FAST_API
 * capsule, which mptcrypt/daemon/_nfq.c calls between recvmmsg and the verdicts' sendmsg) then seals or opens an
 * ordinary data segment or pure ACK of that subflow exactly as core/datapath.protect / unprotect would, and
 * keeps the counters and per-subflow counts Python reads back (`pull`, `take_counters`). Anything else is
 * declined (0 / None) and goes to the Python engine unchanged: another IP layout, SYN / FIN / RST, an option it
 * does not know or an MPTCP option other than DSS, a segment older than the subflow's newest (the stale-signal
 * rule), a MAC that does not verify (the peer's next key generation, or an injection), the REKEY budget or time
 * reached, no room for the MAC option, a flow not installed. Declining never changes state.
 */
#define IPV4_FRAG_MASK 0x3FFF
#define TCPOPT_EOL 0
#define TCPOPT_NOP 1
#define TCPOPT_MPTCP 30
#define TCPOPT_EXP 253
#define MPTCP_SUB_DSS 2
#define FAST_COUNTERS 5          /* packets, segments_protected, bytes_encrypted, segments_verified, bytes_decrypted */

typedef struct {
    unsigned char local[16], remote[16];
    uint16_t lport, rport;
    unsigned char alen;          /* 4 or 16 */
} FlowKey;

typedef struct FlowEntry {
    struct FlowEntry *next;
    FlowKey key;
    uint64_t hash;
    SegmentCipherObject *tx, *rx;
    int64_t out_ref, in_ref, in_ack_max;  /* as Subflow's (the highest extended seq sent / received, ack verified) */
    int64_t tx_limit;            /* bytes_out (below) at which a REKEY is due: from then on Python protects */
    double tx_rekey_time;        /* now at which a REKEY is due */
    int in_ok;                   /* inbound handled here: the subflow is confirmed (an MP_CAPABLE option, which
                                    may carry keys to learn, is declined by options_known) */
    int opened;                  /* a segment verified since the last pull (Subflow.unmacked = 0) */
    double last_seen;
    int64_t bytes_out, bytes_in, segments_out, segments_in;  /* since the last pull */
} FlowEntry;

typedef struct {
    PyObject_HEAD
    FlowEntry **buckets;
    size_t nbuckets, count;      /* nbuckets a power of two (0 before the first install) */
    int64_t counters[FAST_COUNTERS];  /* since the last take_counters */
} FlowTableObject;

static PyTypeObject *SegmentCipherType, *FlowTableType;

static uint64_t
key_hash(const FlowKey *k)
{
    /* FNV-1a over the key: entries exist only for keyed flows, so an attacker cannot fill chains */
    uint64_t h = 0xcbf29ce484222325ull;
    const unsigned char *p = (const unsigned char *)k;
    for (size_t i = 0; i < sizeof *k; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h ^ (h >> 29);
}

static FlowEntry **
find_slot(FlowTableObject *t, const FlowKey *k, uint64_t h)
{
    if (t->nbuckets == 0)
        return NULL;
    FlowEntry **slot = &t->buckets[h & (t->nbuckets - 1)];
    while (*slot != NULL && ((*slot)->hash != h || memcmp(&(*slot)->key, k, sizeof *k) != 0))
        slot = &(*slot)->next;
    return slot;
}

static int
grow(FlowTableObject *t)
{
    size_t n = t->nbuckets ? t->nbuckets * 2 : 64;
    FlowEntry **b = PyMem_Calloc(n, sizeof *b);
    if (b == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (size_t i = 0; i < t->nbuckets; i++) {
        for (FlowEntry *e = t->buckets[i], *next; e != NULL; e = next) {
            next = e->next;
            e->next = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
        }
    }
    PyMem_Free(t->buckets);
    t->buckets = b;
    t->nbuckets = n;
    return 0;
}

/* (local addr bytes, local port, remote addr bytes, remote port): Subflow.key */
static int
key_from_tuple(PyObject *tuple, FlowKey *k)
{
    Py_buffer la, ra;
    int lp, rp;
    memset(k, 0, sizeof *k);
    if (!PyArg_ParseTuple(tuple, "y*iy*i", &la, &lp, &ra, &rp))
        return -1;
    int rc = 0;
    if ((la.len != 4 && la.len != 16) || la.len != ra.len || lp < 0 || lp > 0xFFFF || rp < 0 || rp > 0xFFFF) {
        PyErr_SetString(PyExc_ValueError, "a flow key is (local addr, local port, remote addr, remote port)");
        rc = -1;
    } else {
        k->alen = (unsigned char)la.len;
        memcpy(k->local, la.buf, (size_t)la.len);
        memcpy(k->remote, ra.buf, (size_t)ra.len);
        k->lport = (uint16_t)lp;
        k->rport = (uint16_t)rp;
    }
    PyBuffer_Release(&la);
    PyBuffer_Release(&ra);
    return rc;
}

static void
entry_free(FlowEntry *e)
{
    Py_XDECREF(e->tx);
    Py_XDECREF(e->rx);
    PyMem_Free(e);
}

static inline uint32_t
get32(const unsigned char *p)
{
    return (uint32_t)get16(p) << 16 | get16(p + 2);
}

/* core/datapath.extended: the 64-bit number nearest `ref` whose low 32 bits are `v` (negative: before the ISN) */
static inline int64_t
extend32(uint32_t v, int64_t ref)
{
    uint32_t d = v - (uint32_t)ref + 0x80000000u;
    return ref + (int64_t)d - 0x80000000ll;
}

/* 1 when every option is one this path knows (EOL, NOP, MSS, window scale, SACK-permitted, SACK, timestamps,
   MPTCP DSS, and inbound the mptcrypt option) and well-formed; 0 sends the segment to Python */
static int
options_known(const unsigned char *o, size_t n, int outbound)
{
    size_t i = 0;
    while (i < n) {
        unsigned kind = o[i];
        if (kind == TCPOPT_EOL)
            return 1;
        if (kind == TCPOPT_NOP) {
            i++;
            continue;
        }
        if (i + 2 > n || o[i + 1] < 2 || i + o[i + 1] > n)
            return 0;
        unsigned len = o[i + 1];
        switch (kind) {
        case 2: case 3: case 4: case 5: case 8:
            break;
        case TCPOPT_MPTCP:
            if (len < 3 || o[i + 2] >> 4 != MPTCP_SUB_DSS)
                return 0;
            break;
        case TCPOPT_EXP:
            if (outbound)
                return 0;
            break;
        default:
            return 0;
        }
        i += len;
    }
    return 1;
}

/*
 * The fast path for one packet: 1 when it was sealed (outbound) or opened (inbound) into `out` (`*out_len` bytes)
 * and every count updated, 0 when Python must handle it (nothing changed). Never leaves a Python error set.
 */
static int
fast_packet(PyObject *table, const unsigned char *in, Py_ssize_t len, int outbound, double now, unsigned char *out,
            Py_ssize_t cap, Py_ssize_t *out_len)
{
    FlowTableObject *t = (FlowTableObject *)table;
    if (Py_TYPE(table) != FlowTableType || t->count == 0 || len < IPV4_HEADER_LEN + TCP_HEADER_LEN)
        return 0;
    Py_ssize_t l4;
    const unsigned char *src, *dst;
    FlowKey k;
    memset(&k, 0, sizeof k);
    if (in[0] == 0x45) {  /* IPv4 without options, not a fragment, its total length the packet's */
        if (get16(in + 2) != len || in[9] != 6 || get16(in + 6) & IPV4_FRAG_MASK)
            return 0;
        l4 = IPV4_HEADER_LEN;
        src = in + 12;
        dst = in + 16;
        k.alen = 4;
    } else if (in[0] >> 4 == 6) {  /* IPv6 without extension headers */
        if (len < IPV6_HEADER_LEN + TCP_HEADER_LEN || in[6] != 6 || IPV6_HEADER_LEN + get16(in + 4) != len)
            return 0;
        l4 = IPV6_HEADER_LEN;
        src = in + 8;
        dst = in + 24;
        k.alen = 16;
    } else {
        return 0;
    }
    const unsigned char *tcp = in + l4;
    int hlen = (tcp[12] >> 4) * 4;
    unsigned flags = tcp[13];
    if (hlen < TCP_HEADER_LEN || l4 + hlen > len || flags & (TCP_FLAG_SYN | TCP_FLAG_FIN | TCP_FLAG_RST) ||
        !options_known(tcp + TCP_HEADER_LEN, (size_t)hlen - TCP_HEADER_LEN, outbound))
        return 0;
    memcpy(k.local, outbound ? src : dst, k.alen);
    memcpy(k.remote, outbound ? dst : src, k.alen);
    k.lport = get16(outbound ? tcp : tcp + 2);
    k.rport = get16(outbound ? tcp + 2 : tcp);
    uint64_t h = key_hash(&k);
    FlowEntry **slot = find_slot(t, &k, h), *e = slot ? *slot : NULL;
    if (e == NULL)
        return 0;
    int has_ack = (flags & TCP_FLAG_ACK) != 0;
    int64_t n = len - l4 - hlen, ext_seq, ext_ack;
    int rc;
    if (outbound) {
        ext_seq = extend32(get32(tcp + 4), e->out_ref);
        ext_ack = has_ack ? extend32(get32(tcp + 8), e->in_ref) : 0;
        if (ext_seq < 0 || ext_ack < 0 || e->bytes_out >= e->tx_limit || !(now < e->tx_rekey_time))
            return 0;
        rc = seal_into(e->tx, in, len, l4, hlen, (uint64_t)ext_seq, (uint64_t)ext_ack, out, cap, out_len);
    } else {
        ext_seq = extend32(get32(tcp + 4), e->in_ref);
        ext_ack = has_ack ? extend32(get32(tcp + 8), e->out_ref) : 0;
        if (!e->in_ok || ext_seq < 0 || ext_ack < 0 || ext_seq + n < e->in_ref || ext_ack < e->in_ack_max)
            return 0;  /* older than the newest: Python applies the stale-signal rule */
        rc = open_into(e->rx, in, len, l4, hlen, (uint64_t)ext_seq, (uint64_t)ext_ack, out, cap, out_len);
    }
    if (rc != 1) {
        if (rc < 0)
            PyErr_Clear();  /* Python's path meets the same error and reports it */
        return 0;
    }
    if (outbound) {
        if (ext_seq + n > e->out_ref)
            e->out_ref = ext_seq + n;
        e->bytes_out += n;
        e->segments_out++;
        t->counters[1]++;
        t->counters[2] += n;
    } else {
        e->in_ref = ext_seq + n;
        e->in_ack_max = ext_ack;
        e->opened = 1;
        e->bytes_in += n;
        e->segments_in++;
        t->counters[3]++;
        t->counters[4] += n;
    }
    if (now > e->last_seen)
        e->last_seen = now;
    t->counters[0]++;
    return 1;
}

PyDoc_STRVAR(ft_install_doc,
             "install(key, tx, rx, out_ref, in_ref, in_ack_max, tx_budget, tx_rekey_time, in_ok, last_seen)\n\n"
             "Add or update the subflow `key` (Subflow.key): its SegmentCiphers, sequence references, the bytes its "
             "sender may still protect before a REKEY is due, when one is due by time, whether inbound segments "
             "are handled here. Counts not yet pulled are kept.");

static PyObject *
FlowTable_install(FlowTableObject *self, PyObject *args)
{
    PyObject *key, *tx, *rx;
    long long out_ref, in_ref, in_ack_max, budget;
    double rekey_time, last_seen;
    int in_ok;
    FlowKey k;
    if (!PyArg_ParseTuple(args, "OO!O!LLLLdpd", &key, SegmentCipherType, &tx, SegmentCipherType, &rx, &out_ref,
                          &in_ref, &in_ack_max, &budget, &rekey_time, &in_ok, &last_seen) ||
        key_from_tuple(key, &k) < 0)
        return NULL;
    if (check_ready((SegmentCipherObject *)tx) < 0 || check_ready((SegmentCipherObject *)rx) < 0)
        return NULL;
    if (out_ref < 0 || in_ref < 0 || in_ack_max < 0 || out_ref >= 1ll << 62 || in_ref >= 1ll << 62 ||
        in_ack_max >= 1ll << 62) {
        PyErr_SetString(PyExc_ValueError, "sequence references must be in [0, 2**62)");
        return NULL;
    }
    uint64_t h = key_hash(&k);
    FlowEntry **slot = find_slot(self, &k, h), *e = slot ? *slot : NULL;
    if (e == NULL) {
        if (self->count + 1 > self->nbuckets && grow(self) < 0)
            return NULL;
        e = PyMem_Calloc(1, sizeof *e);
        if (e == NULL)
            return PyErr_NoMemory();
        e->key = k;
        e->hash = h;
        slot = find_slot(self, &k, h);
        *slot = e;
        self->count++;
    }
    Py_INCREF(tx);
    Py_INCREF(rx);
    Py_XSETREF(e->tx, (SegmentCipherObject *)tx);
    Py_XSETREF(e->rx, (SegmentCipherObject *)rx);
    e->out_ref = out_ref;
    e->in_ref = in_ref;
    e->in_ack_max = in_ack_max;
    /* saturating: the budget is "bytes before the REKEY", counted on top of what was not pulled yet */
    e->tx_limit = budget > INT64_MAX - e->bytes_out ? INT64_MAX : e->bytes_out + budget;
    e->tx_rekey_time = rekey_time;
    e->in_ok = in_ok;
    if (last_seen > e->last_seen)
        e->last_seen = last_seen;
    Py_RETURN_NONE;
}

/* (out_ref, in_ref, in_ack_max, last_seen, bytes_out, bytes_in, segments_out, segments_in, verified) of `e`,
   its counts then zeroed */
static PyObject *
entry_take(FlowEntry *e)
{
    PyObject *r = Py_BuildValue("(LLLdLLLLO)", (long long)e->out_ref, (long long)e->in_ref,
                                (long long)e->in_ack_max, e->last_seen, (long long)e->bytes_out,
                                (long long)e->bytes_in, (long long)e->segments_out, (long long)e->segments_in,
                                e->opened ? Py_True : Py_False);
    if (r != NULL) {
        e->tx_limit -= e->bytes_out;
        e->bytes_out = e->bytes_in = e->segments_out = e->segments_in = 0;
        e->opened = 0;
    }
    return r;
}

PyDoc_STRVAR(ft_pull_doc, "pull(key) -> (out_ref, in_ref, in_ack_max, last_seen, bytes_out, bytes_in, "
             "segments_out, segments_in, verified) | None\n\n"
             "The subflow's references and what it counted since the last pull (then zeroed); None if not installed.");

/* The slot holding the entry of Python flow key `key` (*slot NULL: not installed); NULL with an error for a bad
   key, or &absent when the table is empty */
static FlowEntry **
lookup(FlowTableObject *self, PyObject *key, FlowEntry **absent)
{
    FlowKey k;
    if (key_from_tuple(key, &k) < 0)
        return NULL;
    FlowEntry **slot = find_slot(self, &k, key_hash(&k));
    return slot ? slot : absent;
}

static PyObject *
FlowTable_pull(FlowTableObject *self, PyObject *key)
{
    FlowEntry *absent = NULL, **slot = lookup(self, key, &absent);
    if (slot == NULL)
        return NULL;
    if (*slot == NULL)
        Py_RETURN_NONE;
    return entry_take(*slot);
}

PyDoc_STRVAR(ft_remove_doc, "remove(key) -> what pull(key) returns, and the subflow is no longer handled here");

static PyObject *
FlowTable_remove(FlowTableObject *self, PyObject *key)
{
    FlowEntry *absent = NULL, **slot = lookup(self, key, &absent);
    if (slot == NULL)
        return NULL;
    if (*slot == NULL)
        Py_RETURN_NONE;
    FlowEntry *e = *slot;
    PyObject *r = entry_take(e);
    if (r != NULL) {
        *slot = e->next;
        self->count--;
        entry_free(e);
    }
    return r;
}

PyDoc_STRVAR(ft_take_doc, "take_counters() -> (packets, segments_protected, bytes_encrypted, segments_verified, "
             "bytes_decrypted) since the last call (then zeroed)");

static PyObject *
FlowTable_take_counters(FlowTableObject *self, PyObject *unused)
{
    int64_t *c = self->counters;
    PyObject *r = Py_BuildValue("(LLLLL)", (long long)c[0], (long long)c[1], (long long)c[2], (long long)c[3],
                                (long long)c[4]);
    if (r != NULL)
        memset(c, 0, sizeof self->counters);
    return r;
}

PyDoc_STRVAR(ft_packet_doc, "packet(packet, outbound, now) -> bytes | None\n\n"
             "The sealed (outbound) or opened (inbound) packet when the fast path handled it, None when the engine "
             "must (nothing changed then).");

static PyObject *
FlowTable_packet(FlowTableObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "packet(packet, outbound, now)");
        return NULL;
    }
    if (self->count == 0)
        Py_RETURN_NONE;
    int outbound = PyObject_IsTrue(args[1]);
    double now = PyFloat_AsDouble(args[2]);
    if (outbound < 0 || (now == -1.0 && PyErr_Occurred()))
        return NULL;
    Py_buffer pkt;
    if (PyObject_GetBuffer(args[0], &pkt, PyBUF_SIMPLE) < 0)
        return NULL;
    Py_ssize_t cap = pkt.len + MAC_OPTION_LEN, out_len = 0;
    PyObject *result = PyBytes_FromStringAndSize(NULL, cap);
    if (result != NULL) {
        if (fast_packet((PyObject *)self, pkt.buf, pkt.len, outbound, now,
                        (unsigned char *)PyBytes_AS_STRING(result), cap, &out_len) == 1) {
            if (out_len != cap)
                _PyBytes_Resize(&result, out_len);
        } else {
            Py_SETREF(result, Py_NewRef(Py_None));
        }
    }
    PyBuffer_Release(&pkt);
    return result;
}

static Py_ssize_t
FlowTable_len(FlowTableObject *self)
{
    return (Py_ssize_t)self->count;
}

static void
FlowTable_dealloc(FlowTableObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    for (size_t i = 0; i < self->nbuckets; i++) {
        for (FlowEntry *e = self->buckets[i], *next; e != NULL; e = next) {
            next = e->next;
            entry_free(e);
        }
    }
    PyMem_Free(self->buckets);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyMethodDef FlowTable_methods[] = {
    {"install", (PyCFunction)FlowTable_install, METH_VARARGS, ft_install_doc},
    {"pull", (PyCFunction)FlowTable_pull, METH_O, ft_pull_doc},
    {"remove", (PyCFunction)FlowTable_remove, METH_O, ft_remove_doc},
    {"take_counters", (PyCFunction)FlowTable_take_counters, METH_NOARGS, ft_take_doc},
    {"packet", (PyCFunction)(void (*)(void))FlowTable_packet, METH_FASTCALL, ft_packet_doc},
    {NULL}
};

static PyType_Slot FlowTable_slots[] = {
    {Py_tp_dealloc, FlowTable_dealloc},
    {Py_tp_methods, FlowTable_methods},
    {Py_mp_length, FlowTable_len},
    {Py_tp_doc, "FlowTable(): the compiled fast path's subflows (core/datapath.FastPath owns it)."},
    {Py_tp_new, PyType_GenericNew},
    {0, 0},
};

static PyType_Spec FlowTable_spec = {
    MODULE_NAME ".FlowTable", sizeof(FlowTableObject), 0, Py_TPFLAGS_DEFAULT, FlowTable_slots,
};

/* what mptcrypt/daemon/_nfq.c imports (PyCapsule_Import("mptcrypt.crypto._segment._FAST_API")) */
static MptcFastApi fast_api = {MPTC_FAST_API_VERSION, fast_packet};

PyDoc_STRVAR(assemble_doc, "assemble(packet, l4, options, payload) -> bytes\n\n"
             "The IP header of `packet` and its TCP header with `options` and `payload`, lengths and checksums "
             "fresh.");

static PyObject *
assemble(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer pkt, opts = {0}, payload = {0};
    PyObject *result = NULL;
    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError, "assemble() takes 4 arguments (packet, l4, options, payload), %zd given",
                     nargs);
        return NULL;
    }
    Py_ssize_t l4 = PyLong_AsSsize_t(args[1]);
    if (l4 == -1 && PyErr_Occurred())
        return NULL;
    if (PyObject_GetBuffer(args[0], &pkt, PyBUF_SIMPLE) < 0)
        return NULL;
    if (check_l4(pkt.buf, pkt.len, l4) < 0 || PyObject_GetBuffer(args[2], &opts, PyBUF_SIMPLE) < 0 ||
        PyObject_GetBuffer(args[3], &payload, PyBUF_SIMPLE) < 0)
        goto done;
    if (opts.len % 4 || opts.len > TCP_MAX_OPTION_SPACE) {
        PyErr_Format(PyExc_ValueError, "an option area of %zd bytes is not a multiple of 4 up to 40", opts.len);
        goto done;
    }
    Py_ssize_t hlen = TCP_HEADER_LEN + opts.len, tcp_len = hlen + payload.len;
    const unsigned char *in = pkt.buf;
    if (check_ip_len(in, l4, tcp_len) < 0)
        goto done;
    result = PyBytes_FromStringAndSize(NULL, l4 + tcp_len);
    if (result == NULL)
        goto done;
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
    memcpy(out, in, (size_t)(l4 + TCP_HEADER_LEN));
    out[l4 + 12] = (unsigned char)(((hlen >> 2) << 4) | (in[l4 + 12] & 0x0F));
    out[l4 + 16] = out[l4 + 17] = 0;
    memcpy(out + l4 + TCP_HEADER_LEN, opts.buf, (size_t)opts.len);
    memcpy(out + l4 + hlen, payload.buf, (size_t)payload.len);
    finish_packet(out, l4, tcp_len);
done:
    PyBuffer_Release(&pkt);
    if (opts.obj)
        PyBuffer_Release(&opts);
    if (payload.obj)
        PyBuffer_Release(&payload);
    return result;
}

PyDoc_STRVAR(poly1305_s0_doc, "poly1305_s0(r, message) -> bytes\n\n"
             "Poly1305 with key r (16 bytes, clamped here) and s = 0: the MAC's hash, exposed for tests.");

static PyObject *
poly1305_s0(PyObject *module, PyObject *args)
{
    Py_buffer r, msg;
    if (!PyArg_ParseTuple(args, "y*y*", &r, &msg))
        return NULL;
    PyObject *result = NULL;
    if (r.len != 16) {
        PyErr_SetString(PyExc_ValueError, "r must be 16 bytes");
    } else {
        PolyKey key;
        unsigned char out[16];
        poly_key(&key, r.buf);
        poly_hash(&key, msg.buf, (size_t)msg.len, out);
        OPENSSL_cleanse(&key, sizeof key);
        result = PyBytes_FromStringAndSize((char *)out, 16);
    }
    PyBuffer_Release(&r);
    PyBuffer_Release(&msg);
    return result;
}

static PyMethodDef module_methods[] = {
    {"assemble", (PyCFunction)(void (*)(void))assemble, METH_FASTCALL, assemble_doc},
    {"poly1305_s0", poly1305_s0, METH_VARARGS, poly1305_s0_doc},
    {NULL}
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, MODULE_NAME, "Compiled segment protection (docs/protocol.md §5).", -1, module_methods,
};

PyMODINIT_FUNC
PyInit__segment(void)
{
    PyObject *m = PyModule_Create(&moduledef);
    if (m == NULL)
        return NULL;
    /* the two types stay referenced from the statics (fast_packet and install check against them) */
    SegmentCipherType = (PyTypeObject *)PyType_FromSpec(&SegmentCipher_spec);
    FlowTableType = (PyTypeObject *)PyType_FromSpec(&FlowTable_spec);
    PyObject *capsule = PyCapsule_New(&fast_api, MPTC_FAST_API_CAPSULE, NULL);
    int ok = SegmentCipherType != NULL && FlowTableType != NULL && capsule != NULL &&
             PyModule_AddObjectRef(m, "SegmentCipher", (PyObject *)SegmentCipherType) == 0 &&
             PyModule_AddObjectRef(m, "FlowTable", (PyObject *)FlowTableType) == 0 &&
             PyModule_AddObjectRef(m, "_FAST_API", capsule) == 0 &&
             PyModule_AddIntConstant(m, "MAC_VERSION", MAC_VERSION) == 0 &&
             PyModule_AddStringConstant(m, "OPENSSL", OpenSSL_version(OPENSSL_VERSION)) == 0;
    Py_XDECREF(capsule);
    if (!ok) {
        Py_CLEAR(SegmentCipherType);
        Py_CLEAR(FlowTableType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
