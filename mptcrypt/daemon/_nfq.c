/*
 * mptcrypt.daemon._nfq: batched NFQUEUE I/O for mptcrypt/daemon/queue_batched.py (raw netlink, no library).
 *
 *   recv_batch(fd, max) -> [(packet_id, hook, payload), ...]   one recvmmsg for up to `max` queued packets,
 *                                                              [] when none is waiting (non-blocking)
 *   send_verdicts(fd, queue_num, [(packet_id, verdict, payload or None), ...])
 *                                                              the verdicts as consecutive netlink messages in
 *                                                              one sendmsg (split only past SEND_LIMIT bytes)
 *   recv_batch_fast(fd, max, queue_num, table, now)            recv_batch with the compiled fast path first
 *                                                              (mptcrypt.crypto._segment FlowTable): what it
 *                                                              seals or opens is verdicted here, never in Python
 *
 * Message layout (linux/netfilter/nfnetlink_queue.h): nlmsghdr | nfgenmsg | attributes; the socket, its options
 * and the queue's configuration stay in Python (queue_batched.py). A message longer than a receive slot arrives cut
 * (MSG_TRUNC): it is returned with payload None so that the caller drops it (fail-closed) and counts it.
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <linux/netlink.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_queue.h>

#include "../crypto/_fastpath_api.h"

#define MODULE_NAME "mptcrypt.daemon._nfq"
#define BATCH_MAX 64
#define SLOT_LEN (16 * 1024)      /* one queued packet's message: queue_batched.COPY_RANGE leaves room for headers */
#define HOOK_PRE_ROUTING 0        /* NF_INET_*: PRE_ROUTING (gateway mode) and LOCAL_OUT are outbound */
#define HOOK_LOCAL_OUT 3
#define VERDICT_ACCEPT 1          /* NF_ACCEPT */
#define SEND_LIMIT (128 * 1024)   /* below the socket's default send buffer (sendmsg fails past it) */
#define VERDICT_HDR_LEN (NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(struct nfgenmsg)) + NLA_HDRLEN + \
                         NLA_ALIGN(sizeof(struct nfqnl_msg_verdict_hdr)))

static unsigned char slots[BATCH_MAX][SLOT_LEN];

/* The packet id, hook and payload of one NFQNL_MSG_PACKET message (payload NULL when cut or absent); 0 when the
   message is not a queued packet */
static int
parse_raw(const unsigned char *msg, size_t len, int truncated, long *id_out, int *hook_out,
          const unsigned char **payload_out, size_t *payload_len_out)
{
    const struct nlmsghdr *nlh = (const struct nlmsghdr *)msg;
    if (len < NLMSG_HDRLEN + sizeof(struct nfgenmsg) || nlh->nlmsg_len < NLMSG_HDRLEN ||
        nlh->nlmsg_type != ((NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET))
        return 0;
    if (!truncated && nlh->nlmsg_len < len)
        len = nlh->nlmsg_len;
    size_t off = NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(struct nfgenmsg));
    long id = -1;
    int hook = -1;
    const unsigned char *payload = NULL;
    size_t payload_len = 0;
    while (off + NLA_HDRLEN <= len) {
        const struct nlattr *a = (const struct nlattr *)(msg + off);
        if (a->nla_len < NLA_HDRLEN)
            break;
        int type = a->nla_type & NLA_TYPE_MASK;
        if (type == NFQA_PACKET_HDR && a->nla_len >= NLA_HDRLEN + sizeof(struct nfqnl_msg_packet_hdr) &&
            off + a->nla_len <= len) {
            const struct nfqnl_msg_packet_hdr *ph = (const void *)(msg + off + NLA_HDRLEN);
            id = (long)ntohl(ph->packet_id);
            hook = ph->hook;
        } else if (type == NFQA_PAYLOAD && off + a->nla_len <= len) {
            payload = msg + off + NLA_HDRLEN;
            payload_len = a->nla_len - NLA_HDRLEN;
        }
        off += NLA_ALIGN(a->nla_len);
    }
    if (id < 0)
        return 0;
    *id_out = id;
    *hook_out = hook;
    *payload_out = truncated ? NULL : payload;
    *payload_len_out = payload_len;
    return 1;
}

static PyObject *
packet_tuple(long id, int hook, const unsigned char *payload, size_t payload_len)
{
    if (payload == NULL)
        return Py_BuildValue("(liO)", id, hook, Py_None);
    return Py_BuildValue("(liy#)", id, hook, (const char *)payload, (Py_ssize_t)payload_len);
}

static PyObject *
parse_packet(const unsigned char *msg, size_t len, int truncated)
{
    long id;
    int hook;
    const unsigned char *payload;
    size_t payload_len;
    if (!parse_raw(msg, len, truncated, &id, &hook, &payload, &payload_len))
        return NULL;
    return packet_tuple(id, hook, payload, payload_len);
}

/* One non-blocking recvmmsg of up to `max` (1..BATCH_MAX, else BATCH_MAX) messages into `slots`: their count, or
   -1 with errno */
static int
drain(int fd, int max, struct mmsghdr *msgs, struct iovec *iov)
{
    if (max < 1 || max > BATCH_MAX)
        max = BATCH_MAX;
    memset(msgs, 0, sizeof(msgs[0]) * (size_t)max);
    for (int i = 0; i < max; i++) {
        iov[i].iov_base = slots[i];
        iov[i].iov_len = SLOT_LEN;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    int n;
    Py_BEGIN_ALLOW_THREADS
    n = recvmmsg(fd, msgs, (unsigned)max, MSG_DONTWAIT, NULL);
    Py_END_ALLOW_THREADS
    return n;
}

static PyObject *
recv_batch(PyObject *module, PyObject *args)
{
    int fd, max;
    if (!PyArg_ParseTuple(args, "ii", &fd, &max))
        return NULL;
    struct mmsghdr msgs[BATCH_MAX];
    struct iovec iov[BATCH_MAX];
    int n = drain(fd, max, msgs, iov);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return PyList_New(0);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    for (int i = 0; i < n; i++) {
        size_t len = msgs[i].msg_len;
        int truncated = (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) != 0;
        size_t off = 0;
        /* one skb may carry several messages; a cut one is the last */
        while (off + NLMSG_HDRLEN <= len) {
            const struct nlmsghdr *nlh = (const struct nlmsghdr *)(slots[i] + off);
            size_t mlen = nlh->nlmsg_len;
            if (mlen < NLMSG_HDRLEN)
                break;
            /* never parse past the bytes that arrived: a longer message is the one MSG_TRUNC cut (the last), or a
               lying one; either way mlen <= len - off below, so NLMSG_ALIGN(mlen) cannot wrap to 0 */
            int cut = off + mlen > len;
            if (cut && !truncated)
                break;
            PyObject *pkt = parse_packet(slots[i] + off, cut ? len - off : mlen, cut);
            if (pkt != NULL) {
                int rc = PyList_Append(out, pkt);
                Py_DECREF(pkt);
                if (rc < 0) {
                    Py_DECREF(out);
                    return NULL;
                }
            } else if (PyErr_Occurred()) {
                Py_DECREF(out);
                return NULL;
            }
            if (cut)
                break;
            off += NLMSG_ALIGN(mlen);
        }
    }
    return out;
}

/* Verdict messages gathered for one sendmsg: the caller's header storage (one per verdict) and iovecs (three per
   verdict: header, new payload, padding). */
typedef struct {
    int fd, queue_num, k, error;  /* error: the first sendmsg errno (the kernel keeps those packets queued) */
    size_t pending;
    struct iovec *iov;
} VerdictBatch;

static void
batch_flush(VerdictBatch *b)
{
    if (b->k > 0) {
        struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
        struct msghdr mh = {.msg_name = &kernel, .msg_namelen = sizeof kernel, .msg_iov = b->iov,
                            .msg_iovlen = (size_t)b->k};
        ssize_t rc;
        Py_BEGIN_ALLOW_THREADS
        rc = sendmsg(b->fd, &mh, 0);
        Py_END_ALLOW_THREADS
        if (rc < 0 && b->error == 0)
            b->error = errno;
    }
    b->k = 0;
    b->pending = 0;
}

/* One verdict (with `data` as the packet's new payload unless NULL) in header storage `h`; the batch is sent
   first when this one would take it past SEND_LIMIT. `h` and `data` must live until the batch is flushed. */
static void
batch_add(VerdictBatch *b, unsigned char *h, unsigned long id, int verdict, const void *data, size_t data_len)
{
    static const unsigned char pad[4] = {0};
    struct nlmsghdr *nlh = (struct nlmsghdr *)h;
    struct nfgenmsg *nfg = (struct nfgenmsg *)(h + NLMSG_HDRLEN);
    struct nlattr *va = (struct nlattr *)(h + NLMSG_HDRLEN + NLMSG_ALIGN(sizeof *nfg));
    struct nfqnl_msg_verdict_hdr *vh = (struct nfqnl_msg_verdict_hdr *)((unsigned char *)va + NLA_HDRLEN);
    size_t payload_attr = data ? NLA_HDRLEN + data_len : 0;
    nlh->nlmsg_len = (uint32_t)(VERDICT_HDR_LEN + NLA_ALIGN(payload_attr));
    nlh->nlmsg_type = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_VERDICT;
    nlh->nlmsg_flags = NLM_F_REQUEST;
    nlh->nlmsg_seq = nlh->nlmsg_pid = 0;
    nfg->nfgen_family = AF_UNSPEC;
    nfg->version = NFNETLINK_V0;
    nfg->res_id = htons((uint16_t)b->queue_num);
    va->nla_len = NLA_HDRLEN + sizeof *vh;
    va->nla_type = NFQA_VERDICT_HDR;
    vh->verdict = htonl((uint32_t)verdict);
    vh->id = htonl((uint32_t)id);
    if (b->pending + nlh->nlmsg_len > SEND_LIMIT && b->k > 0)
        batch_flush(b);
    if (data) {
        struct nlattr *pa = (struct nlattr *)(h + VERDICT_HDR_LEN);
        pa->nla_len = (uint16_t)payload_attr;
        pa->nla_type = NFQA_PAYLOAD;
        b->iov[b->k++] = (struct iovec){h, VERDICT_HDR_LEN + NLA_HDRLEN};
        b->iov[b->k++] = (struct iovec){(void *)data, data_len};
        if (NLA_ALIGN(payload_attr) != payload_attr)
            b->iov[b->k++] = (struct iovec){(void *)pad, NLA_ALIGN(payload_attr) - payload_attr};
    } else {
        b->iov[b->k++] = (struct iovec){h, VERDICT_HDR_LEN};
    }
    b->pending += nlh->nlmsg_len;
}

typedef unsigned char VerdictHead[VERDICT_HDR_LEN + NLA_HDRLEN];

static PyObject *
send_verdicts(PyObject *module, PyObject *args)
{
    int fd, queue_num;
    PyObject *items;
    if (!PyArg_ParseTuple(args, "iiO!", &fd, &queue_num, &PyList_Type, &items))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(items);
    if (n == 0)
        Py_RETURN_NONE;
    VerdictHead *heads = PyMem_Calloc((size_t)n, sizeof *heads);
    struct iovec *iov = PyMem_Calloc((size_t)n * 3, sizeof *iov);
    VerdictBatch b = {.fd = fd, .queue_num = queue_num, .iov = iov};
    PyObject *result = NULL;
    if (heads == NULL || iov == NULL) {
        PyErr_NoMemory();
        goto out;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(items, i);
        unsigned long id;
        int verdict;
        PyObject *payload;
        if (!PyArg_ParseTuple(item, "kiO", &id, &verdict, &payload))
            goto out;
        char *data = NULL;
        Py_ssize_t data_len = 0;
        if (payload != Py_None && PyBytes_AsStringAndSize(payload, &data, &data_len) < 0)
            goto out;
        batch_add(&b, heads[i], id, verdict, data, (size_t)data_len);
        if (b.error)
            break;
    }
    batch_flush(&b);
    if (b.error) {
        errno = b.error;
        PyErr_SetFromErrno(PyExc_OSError);
        goto out;
    }
    result = Py_NewRef(Py_None);
out:
    PyMem_Free(heads);
    PyMem_Free(iov);
    return result;
}

/* the fast path's output packets and their verdict headers: valid until the batch's sendmsg in recv_batch_fast */
static unsigned char fast_out[BATCH_MAX][SLOT_LEN];
static VerdictHead fast_heads[BATCH_MAX] __attribute__((aligned(8)));
static const MptcFastApi *fast_api;

PyDoc_STRVAR(recv_batch_fast_doc,
             "recv_batch_fast(fd, max, queue_num, table, now) -> ([(packet_id, hook, payload or None)], inbound, "
             "outbound, errno)\n\n"
             "recv_batch, with the compiled fast path first: each packet, in queue order, goes to FlowTable "
             "`table` (mptcrypt.crypto._segment); what it seals or opens is accepted with the new payload here, "
             "in one sendmsg before returning. From the first packet it declines on, every packet is returned for "
             "the Python engine, so the engine sees a flow's packets in order. `inbound` / `outbound` count the "
             "packets handled here; errno is that of a failed verdict sendmsg (0: none).");

static PyObject *
recv_batch_fast(PyObject *module, PyObject *args)
{
    int fd, max, queue_num;
    PyObject *table;
    double now;
    if (!PyArg_ParseTuple(args, "iiiOd", &fd, &max, &queue_num, &table, &now))
        return NULL;
    if (fast_api == NULL) {
        const MptcFastApi *api = PyCapsule_Import(MPTC_FAST_API_CAPSULE, 0);
        if (api == NULL)
            return NULL;
        if (api->version != MPTC_FAST_API_VERSION) {
            PyErr_Format(PyExc_ImportError, "mptcrypt.crypto._segment fast path API v%d, this build needs v%d "
                         "(`pip install -e .`)", api->version, MPTC_FAST_API_VERSION);
            return NULL;
        }
        fast_api = api;
    }
    struct mmsghdr msgs[BATCH_MAX];
    struct iovec iov[BATCH_MAX];
    int n = drain(fd, max, msgs, iov);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return Py_BuildValue("([]iii)", 0, 0, 0);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    struct iovec viov[BATCH_MAX * 3];
    VerdictBatch b = {.fd = fd, .queue_num = queue_num, .iov = viov};
    int handled = 0, inbound = 0, outbound_n = 0, to_python = 0;
    for (int i = 0; i < n; i++) {
        size_t len = msgs[i].msg_len;
        int truncated = (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) != 0;
        size_t off = 0;
        while (off + NLMSG_HDRLEN <= len) {  /* as recv_batch */
            const struct nlmsghdr *nlh = (const struct nlmsghdr *)(slots[i] + off);
            size_t mlen = nlh->nlmsg_len;
            if (mlen < NLMSG_HDRLEN)
                break;
            int cut = off + mlen > len;
            if (cut && !truncated)
                break;
            long id;
            int hook;
            const unsigned char *payload;
            size_t payload_len;
            if (parse_raw(slots[i] + off, cut ? len - off : mlen, cut, &id, &hook, &payload, &payload_len)) {
                int outbound = hook == HOOK_LOCAL_OUT || hook == HOOK_PRE_ROUTING;
                Py_ssize_t out_len;
                if (!to_python && payload != NULL && handled < BATCH_MAX &&
                    fast_api->packet(table, payload, (Py_ssize_t)payload_len, outbound, now, fast_out[handled],
                                     SLOT_LEN, &out_len) == 1) {
                    batch_add(&b, fast_heads[handled], (unsigned long)id, VERDICT_ACCEPT, fast_out[handled],
                              (size_t)out_len);
                    handled++;
                    if (outbound)
                        outbound_n++;
                    else
                        inbound++;
                } else {
                    to_python = 1;
                    PyObject *pkt = packet_tuple(id, hook, payload, payload_len);
                    if (pkt == NULL || PyList_Append(out, pkt) < 0) {
                        Py_XDECREF(pkt);
                        Py_DECREF(out);
                        batch_flush(&b);  /* what was decided still gets its verdict */
                        return NULL;
                    }
                    Py_DECREF(pkt);
                }
            }
            if (cut)
                break;
            off += NLMSG_ALIGN(mlen);
        }
    }
    batch_flush(&b);
    return Py_BuildValue("(Niii)", out, inbound, outbound_n, b.error);
}

static PyMethodDef methods[] = {
    {"recv_batch", recv_batch, METH_VARARGS, "recv_batch(fd, max) -> [(packet_id, hook, payload or None)]"},
    {"send_verdicts", send_verdicts, METH_VARARGS,
     "send_verdicts(fd, queue_num, [(packet_id, verdict, payload or None)]): one sendmsg"},
    {"recv_batch_fast", recv_batch_fast, METH_VARARGS, recv_batch_fast_doc},
    {NULL}
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, MODULE_NAME, "Batched NFQUEUE netlink I/O (mptcrypt/daemon/queue_batched.py).", -1, methods,
};

PyMODINIT_FUNC
PyInit__nfq(void)
{
    PyObject *m = PyModule_Create(&moduledef);
    if (m != NULL && (PyModule_AddIntConstant(m, "BATCH_MAX", BATCH_MAX) < 0 ||
                      PyModule_AddIntConstant(m, "SLOT_LEN", SLOT_LEN) < 0)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
