/*
 * mptcrypt.daemon._nfq: batched NFQUEUE I/O for mptcrypt/daemon/queue_batched.py (raw netlink, no library).
 *
 *   recv_batch(fd, max) -> [(packet_id, hook, payload), ...]   one recvmmsg for up to `max` queued packets,
 *                                                              [] when none is waiting (non-blocking)
 *   send_verdicts(fd, queue_num, [(packet_id, verdict, payload or None), ...])
 *                                                              the verdicts as consecutive netlink messages in
 *                                                              one sendmsg (split only past SEND_LIMIT bytes)
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

#define MODULE_NAME "mptcrypt.daemon._nfq"
#define BATCH_MAX 64
#define SLOT_LEN (16 * 1024)      /* one queued packet's message: queue_batched.COPY_RANGE leaves room for headers */
#define SEND_LIMIT (128 * 1024)   /* below the socket's default send buffer (sendmsg fails past it) */
#define VERDICT_HDR_LEN (NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(struct nfgenmsg)) + NLA_HDRLEN + \
                         NLA_ALIGN(sizeof(struct nfqnl_msg_verdict_hdr)))

static unsigned char slots[BATCH_MAX][SLOT_LEN];

static PyObject *
parse_packet(const unsigned char *msg, size_t len, int truncated)
{
    const struct nlmsghdr *nlh = (const struct nlmsghdr *)msg;
    if (len < NLMSG_HDRLEN + sizeof(struct nfgenmsg) || nlh->nlmsg_len < NLMSG_HDRLEN ||
        nlh->nlmsg_type != ((NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET))
        return NULL;
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
        return NULL;
    if (truncated || payload == NULL)
        return Py_BuildValue("(liO)", id, hook, Py_None);
    return Py_BuildValue("(liy#)", id, hook, (const char *)payload, (Py_ssize_t)payload_len);
}

static PyObject *
recv_batch(PyObject *module, PyObject *args)
{
    int fd, max;
    if (!PyArg_ParseTuple(args, "ii", &fd, &max))
        return NULL;
    if (max < 1 || max > BATCH_MAX)
        max = BATCH_MAX;
    struct mmsghdr msgs[BATCH_MAX];
    struct iovec iov[BATCH_MAX];
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

static int
flush(int fd, struct iovec *iov, int n)
{
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    struct msghdr mh = {.msg_name = &kernel, .msg_namelen = sizeof kernel, .msg_iov = iov, .msg_iovlen = (size_t)n};
    ssize_t rc;
    Py_BEGIN_ALLOW_THREADS
    rc = sendmsg(fd, &mh, 0);
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 0;
}

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
    unsigned char (*heads)[VERDICT_HDR_LEN + NLA_HDRLEN] = PyMem_Calloc((size_t)n, sizeof *heads);
    struct iovec *iov = PyMem_Calloc((size_t)n * 3, sizeof *iov);
    static const unsigned char pad[4] = {0};
    PyObject *result = NULL;
    if (heads == NULL || iov == NULL) {
        PyErr_NoMemory();
        goto out;
    }
    int k = 0;
    size_t pending = 0;
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
        unsigned char *h = heads[i];
        struct nlmsghdr *nlh = (struct nlmsghdr *)h;
        struct nfgenmsg *nfg = (struct nfgenmsg *)(h + NLMSG_HDRLEN);
        struct nlattr *va = (struct nlattr *)(h + NLMSG_HDRLEN + NLMSG_ALIGN(sizeof *nfg));
        struct nfqnl_msg_verdict_hdr *vh = (struct nfqnl_msg_verdict_hdr *)((unsigned char *)va + NLA_HDRLEN);
        size_t payload_attr = data ? NLA_HDRLEN + (size_t)data_len : 0;
        nlh->nlmsg_len = (uint32_t)(VERDICT_HDR_LEN + NLA_ALIGN(payload_attr));
        nlh->nlmsg_type = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_VERDICT;
        nlh->nlmsg_flags = NLM_F_REQUEST;
        nfg->nfgen_family = AF_UNSPEC;
        nfg->version = NFNETLINK_V0;
        nfg->res_id = htons((uint16_t)queue_num);
        va->nla_len = NLA_HDRLEN + sizeof *vh;
        va->nla_type = NFQA_VERDICT_HDR;
        vh->verdict = htonl((uint32_t)verdict);
        vh->id = htonl((uint32_t)id);
        if (pending + nlh->nlmsg_len > SEND_LIMIT && k > 0) {
            if (flush(fd, iov, k) < 0)
                goto out;
            k = 0;
            pending = 0;
        }
        if (data) {
            struct nlattr *pa = (struct nlattr *)(h + VERDICT_HDR_LEN);
            pa->nla_len = (uint16_t)payload_attr;
            pa->nla_type = NFQA_PAYLOAD;
            iov[k++] = (struct iovec){h, VERDICT_HDR_LEN + NLA_HDRLEN};
            iov[k++] = (struct iovec){data, (size_t)data_len};
            if (NLA_ALIGN(payload_attr) != payload_attr)
                iov[k++] = (struct iovec){(void *)pad, NLA_ALIGN(payload_attr) - payload_attr};
        } else {
            iov[k++] = (struct iovec){h, VERDICT_HDR_LEN};
        }
        pending += nlh->nlmsg_len;
    }
    if (k > 0 && flush(fd, iov, k) < 0)
        goto out;
    result = Py_NewRef(Py_None);
out:
    PyMem_Free(heads);
    PyMem_Free(iov);
    return result;
}

static PyMethodDef methods[] = {
    {"recv_batch", recv_batch, METH_VARARGS, "recv_batch(fd, max) -> [(packet_id, hook, payload or None)]"},
    {"send_verdicts", send_verdicts, METH_VARARGS,
     "send_verdicts(fd, queue_num, [(packet_id, verdict, payload or None)]): one sendmsg"},
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
