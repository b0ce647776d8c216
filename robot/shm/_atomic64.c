/* Sequentially consistent 64-bit atomic load/store at a raw address (a shared-memory word).
 *
 * The `atomics` package does the same through cffi at ~4 us per call, which made a ring-buffer put
 * cost more than copying a 640x480x3 frame. These are plain GCC __atomic builtins: ~50 ns per call.
 * Addresses come from numpy views that the caller keeps alive for as long as it uses them.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

static PyObject *a64_load(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 1) { PyErr_SetString(PyExc_TypeError, "load(addr)"); return NULL; }
    uint64_t *p = (uint64_t *)PyLong_AsVoidPtr(args[0]);
    if (p == NULL && PyErr_Occurred()) return NULL;
    if (((uintptr_t)p & 7u) != 0) { PyErr_SetString(PyExc_ValueError, "address not 8-byte aligned"); return NULL; }
    return PyLong_FromUnsignedLongLong(__atomic_load_n(p, __ATOMIC_SEQ_CST));
}

static PyObject *a64_store(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) { PyErr_SetString(PyExc_TypeError, "store(addr, value)"); return NULL; }
    uint64_t *p = (uint64_t *)PyLong_AsVoidPtr(args[0]);
    if (p == NULL && PyErr_Occurred()) return NULL;
    if (((uintptr_t)p & 7u) != 0) { PyErr_SetString(PyExc_ValueError, "address not 8-byte aligned"); return NULL; }
    unsigned long long v = PyLong_AsUnsignedLongLong(args[1]);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    __atomic_store_n(p, (uint64_t)v, __ATOMIC_SEQ_CST);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"load", (PyCFunction)(void (*)(void))a64_load, METH_FASTCALL, "load(addr) -> int: seq_cst 64-bit load"},
    {"store", (PyCFunction)(void (*)(void))a64_store, METH_FASTCALL, "store(addr, value): seq_cst 64-bit store"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_atomic64", NULL, -1, methods};

PyMODINIT_FUNC PyInit__atomic64(void) { return PyModule_Create(&module); }
