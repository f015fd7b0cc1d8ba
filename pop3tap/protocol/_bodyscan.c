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

/* body_stats(data, pos, limit) -> (crs, dot_lines, stuffed, odd, first_odd)
 *
 * The C twin of pop3tap.protocol._bodyscan.body_stats_python, for pop3tap lint and diff:
 * one pass over data[pos:limit] counting CR bytes and the lines that begin with a dot
 * (an LF at p followed by '.', for p + 2 < limit so the byte after the dot is known).
 * A dot line is stuffed ("..", RFC 1939 section 3), a terminator candidate (". CR" or
 * ". LF") or odd (anything else: a line the server did not dot-stuff). first_odd is the
 * offset of the LF before the first odd line, or -1.
 */
static PyObject *
body_stats(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    Py_ssize_t pos, limit, crs = 0, dots = 0, stuffed = 0, odd = 0, first_odd = -1;

    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "body_stats takes 3 arguments");
        return NULL;
    }
    pos = PyLong_AsSsize_t(args[1]);
    if (pos == -1 && PyErr_Occurred())
        return NULL;
    limit = PyLong_AsSsize_t(args[2]);
    if (limit == -1 && PyErr_Occurred())
        return NULL;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    if (pos < 0 || limit > view.len || pos > limit) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "body_stats: pos and limit out of range");
        return NULL;
    }
    {
        /* Line by line with memchr (a few SIMD calls per line, not a test per byte). */
        const unsigned char *base = (const unsigned char *)view.buf;
        const unsigned char *p = base + pos, *stop = base + limit;
        while (p < stop) {
            const unsigned char *lf = memchr(p, '\n', (size_t)(stop - p));
            const unsigned char *end = lf != NULL ? lf : stop, *cr = p;
            while (cr < end && (cr = memchr(cr, '\r', (size_t)(end - cr))) != NULL) {
                crs++;
                cr++;
            }
            if (lf == NULL)
                break;
            if (stop - lf > 2 && lf[1] == '.') {
                unsigned char after = lf[2];
                dots++;
                if (after == '.') {
                    stuffed++;
                } else if (after != '\r' && after != '\n') {
                    odd++;
                    if (first_odd < 0)
                        first_odd = lf - base;
                }
            }
            p = lf + 1;
        }
    }
    PyBuffer_Release(&view);
    return Py_BuildValue("(nnnnn)", crs, dots, stuffed, odd, first_odd);
}

static PyMethodDef methods[] = {
    {"scan_chunk", (PyCFunction)(void (*)(void))scan_chunk, METH_FASTCALL,
     "scan_chunk(data, pos, limit, prev_cr) -> (end, newlines, bare_lf)"},
    {"body_stats", (PyCFunction)(void (*)(void))body_stats, METH_FASTCALL,
     "body_stats(data, pos, limit) -> (crs, dot_lines, stuffed, odd, first_odd)"},
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
