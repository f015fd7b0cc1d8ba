/* One-pass body scanner: the C twin of pop3tap.protocol._bodyscan.scan_chunk_python.
 *
 * scan_chunk(data, pos, limit, prev_cr) -> (end, newlines, bare_lf)
 *
 * Looks at data[pos:limit] only. Jumps from LF to LF with memchr; at each LF counts it,
 * notes whether the byte before it is a CR (prev_cr stands for the byte before pos), and
 * checks whether ". CRLF" or ". LF" follows (RFC 1939 section 3: a line that is exactly
 * "." ends the body). A terminator must lie wholly before limit; one cut by limit is
 * found by the caller on the next chunk. end is the offset just past the terminator, or
 * -1; newlines counts the LFs up to end (terminator included) or up to limit.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

static PyObject *
scan_chunk(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    Py_ssize_t pos, limit, newlines = 0, end = -1;
    int prev_cr, bare = 0;

    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "scan_chunk takes 4 arguments");
        return NULL;
    }
    pos = PyLong_AsSsize_t(args[1]);
    if (pos == -1 && PyErr_Occurred())
        return NULL;
    limit = PyLong_AsSsize_t(args[2]);
    if (limit == -1 && PyErr_Occurred())
        return NULL;
    prev_cr = PyObject_IsTrue(args[3]);
    if (prev_cr < 0)
        return NULL;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    if (pos < 0 || limit > view.len || pos > limit) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "scan_chunk: pos and limit out of range");
        return NULL;
    }
    {
        const unsigned char *base = (const unsigned char *)view.buf;
        const unsigned char *start = base + pos, *stop = base + limit, *p = start;
        while (p < stop) {
            const unsigned char *lf = memchr(p, '\n', (size_t)(stop - p));
            if (lf == NULL)
                break;
            newlines++;
            if ((lf > start ? lf[-1] : (prev_cr ? '\r' : 0)) != '\r')
                bare = 1;
            if (stop - lf > 2 && lf[1] == '.') {
                if (lf[2] == '\n') {
                    newlines++;
                    bare = 1;  /* the LF after the dot has no CR before it */
                    end = (lf + 3) - base;
                    break;
                }
                if (stop - lf > 3 && lf[2] == '\r' && lf[3] == '\n') {
                    newlines++;
                    end = (lf + 4) - base;
                    break;
                }
            }
            p = lf + 1;
        }
    }
    PyBuffer_Release(&view);
    return Py_BuildValue("(nnO)", end, newlines, bare ? Py_True : Py_False);
}

static PyMethodDef methods[] = {
    {"scan_chunk", (PyCFunction)(void (*)(void))scan_chunk, METH_FASTCALL,
     "scan_chunk(data, pos, limit, prev_cr) -> (end, newlines, bare_lf)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "pop3tap.protocol._bodyscan_c",
    "One-pass C scanner for multi-line POP3 bodies.", 0, methods,
};

PyMODINIT_FUNC
PyInit__bodyscan_c(void)
{
    return PyModule_Create(&module);
}
