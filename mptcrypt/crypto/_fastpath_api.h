/*
 * The C entry point of mptcrypt.crypto._segment's fast path (FlowTable), for mptcrypt/daemon/_nfq.c:
 * PyCapsule_Import(MPTC_FAST_API_CAPSULE) gives a MptcFastApi. `packet(table, in, len, outbound, now, out, cap,
 * &out_len)` returns 1 when it sealed / opened `in` into `out` for a subflow installed in FlowTable `table`, 0 when
 * the Python engine must handle the packet (nothing changed); it never leaves a Python error set. The GIL must be
 * held (the table belongs to the engine).
 */
#ifndef MPTC_FASTPATH_API_H
#define MPTC_FASTPATH_API_H

#include <Python.h>

#define MPTC_FAST_API_CAPSULE "mptcrypt.crypto._segment._FAST_API"
#define MPTC_FAST_API_VERSION 1

typedef struct {
    int version;
    int (*packet)(PyObject *table, const unsigned char *in, Py_ssize_t len, int outbound, double now,
                  unsigned char *out, Py_ssize_t cap, Py_ssize_t *out_len);
} MptcFastApi;

#endif
