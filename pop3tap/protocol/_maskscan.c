/* The C twin of pop3tap.protocol._masklines.mask_run_python.
 *
 * mask_run(data, pos) -> (masked, end)
 *
 * From pos (a line start) takes parts of lines as long as the line rule of
 * pop3tap.protocol._commands.mask_line decides them without state, and returns them masked
 * with the end of the run. A line is cut into parts at lone CRs. A part whose first word
 * (after separators: 0x00-0x20 but CR and LF, and 0x7f) begins with no secret verb is
 * clear and taken up to its LF, CR LF or lone CR (what follows a lone CR is classified as
 * a line of its own), even when the chunk holds no LF yet. A part whose first word begins
 * with PASS or APOP in any case, followed by anything but a letter, decides the rest of
 * the line (RFC 1939 section 7): its secret is replaced by "********" up to the line end,
 * lone CRs included; it is taken only with its LF. A part beginning with AUTH ends the run
 * (every line after an AUTH waits for the pairing's verdict, RFC 5034 section 4), and so
 * does a part without its end yet (a CR at the end may be half of a CR LF).
 *
 * mask_lines(block) -> masked
 *
 * The C twin of _masklines.mask_lines_python: every line masked whole (lines held after an
 * AUTH that overflow the bound, or after the pairing was given up).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

static const char PLACEHOLDER[] = "********";
#define PLACEHOLDER_LEN 8

static int
is_sep(unsigned char c)
{
    return (c <= 0x20 && c != '\r' && c != '\n') || c == 0x7f;
}

static int
is_letter(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

enum verb { VERB_NONE, VERB_PASS, VERB_APOP, VERB_AUTH };

/* The secret verb that the word [w, e) begins with, as secret_verb() decides. */
static enum verb
verb_of(const unsigned char *w, const unsigned char *e)
{
    unsigned char up[4];
    int i;

    if (e - w < 4 || (e - w > 4 && is_letter(w[4])))
        return VERB_NONE;
    for (i = 0; i < 4; i++)
        up[i] = (w[i] >= 'a' && w[i] <= 'z') ? (unsigned char)(w[i] - 0x20) : w[i];
    if (memcmp(up, "PASS", 4) == 0)
        return VERB_PASS;
    if (memcmp(up, "APOP", 4) == 0)
        return VERB_APOP;
    if (memcmp(up, "AUTH", 4) == 0)
        return VERB_AUTH;
    return VERB_NONE;
}

/* End of the word that starts at p (a separator, a CR or the part's end). */
static const unsigned char *
word_end(const unsigned char *p, const unsigned char *end)
{
    while (p < end && !is_sep(*p) && *p != '\r')
        p++;
    return p;
}

static const unsigned char *
separators_end(const unsigned char *p, const unsigned char *end)
{
    while (p < end && is_sep(*p))
        p++;
    return p;
}

/* Where the secret of a PASS/APOP part with first word [w, e) begins, or NULL. */
static const unsigned char *
secret_start(enum verb verb, const unsigned char *w, const unsigned char *e,
             const unsigned char *end)
{
    if (e - w > 4)
        return w + 4; /* glued to a non-letter: all of it is secret */
    if (verb == VERB_APOP) {
        if (e >= end || !is_sep(*e))
            return NULL;
        e = word_end(separators_end(e, end), end);
    }
    if (e < end && is_sep(*e))
        return e + 1;
    return NULL;
}

/* Mask the line [p, lf] whose first part begins with PASS or APOP; return the bytes
 * written to out (at most 8 more than the line's). */
static Py_ssize_t
mask_line(const unsigned char *p, const unsigned char *lf, unsigned char *out)
{
    const unsigned char *content_end = (lf > p && lf[-1] == '\r') ? lf - 1 : lf;
    const unsigned char *cr = memchr(p, '\r', (size_t)(content_end - p));
    const unsigned char *part_end = cr ? cr : content_end;
    const unsigned char *w = separators_end(p, part_end);
    const unsigned char *e = word_end(w, part_end);
    const unsigned char *cut = secret_start(verb_of(w, e), w, e, part_end);
    Py_ssize_t n;

    if (cut == NULL && cr != NULL)
        cut = cr + 1; /* a lone CR before the secret began: the rest is secret */
    if (cut == NULL || cut >= content_end) {
        n = lf + 1 - p;
        memcpy(out, p, (size_t)n);
        return n;
    }
    n = cut - p;
    memcpy(out, p, (size_t)n);
    memcpy(out + n, PLACEHOLDER, PLACEHOLDER_LEN);
    n += PLACEHOLDER_LEN;
    memcpy(out + n, content_end, (size_t)(lf + 1 - content_end));
    return n + (lf + 1 - content_end);
}

static PyObject *
mask_run(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    Py_ssize_t pos, written = 0;
    const unsigned char *data, *p, *end, *lf, *brk, *w;
    enum verb verb;
    unsigned char *out;
    PyObject *masked, *result;

    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "mask_run takes 2 arguments");
        return NULL;
    }
    pos = PyLong_AsSsize_t(args[1]);
    if (pos == -1 && PyErr_Occurred())
        return NULL;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    if (pos < 0 || pos > view.len) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "mask_run: pos out of range");
        return NULL;
    }
    data = (const unsigned char *)view.buf;
    end = data + view.len;
    if (view.len - pos > (PY_SSIZE_T_MAX - 16) / 3) {
        PyBuffer_Release(&view);
        return PyErr_NoMemory();
    }
    /* A masked line is at most 8 bytes longer than the 6 bytes it needs ("PASS1\n"). */
    out = PyMem_Malloc((size_t)(view.len - pos) * 3 + 16);
    if (out == NULL) {
        PyBuffer_Release(&view);
        return PyErr_NoMemory();
    }
    p = data + pos;
    while (p < end) {
        /* One part: up to its CR or LF, each byte looked at once. */
        brk = p;
        while (brk < end && *brk != '\r' && *brk != '\n')
            brk++;
        if (brk == end)
            break; /* a part without its end yet */
        w = separators_end(p, brk);
        verb = verb_of(w, word_end(w, brk));
        if (verb == VERB_AUTH)
            break;
        if (verb == VERB_NONE) {
            /* A clear part: it ends its line (LF, CR LF) or, at a lone CR, the next part
               is classified as a line of its own. A CR at the end is still undecided. */
            if (*brk == '\r' && (brk + 1 >= end || brk[1] == '\n'))
                brk = (brk + 1 < end) ? brk + 1 : NULL;
            if (brk == NULL)
                break;
            memcpy(out + written, p, (size_t)(brk + 1 - p));
            written += brk + 1 - p;
            p = brk + 1;
            continue;
        }
        /* PASS or APOP: the part decides the rest of its line, which needs its LF. */
        lf = memchr(brk, '\n', (size_t)(end - brk));
        if (lf == NULL)
            break;
        written += mask_line(p, lf, out + written);
        p = lf + 1;
    }
    masked = PyBytes_FromStringAndSize((const char *)out, written);
    PyMem_Free(out);
    result = masked ? Py_BuildValue("(Nn)", masked, (Py_ssize_t)(p - data)) : NULL;
    PyBuffer_Release(&view);
    return result;
}

static PyObject *
mask_lines(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    Py_ssize_t written = 0;
    const unsigned char *p, *end, *lf, *content_end;
    unsigned char *out;
    PyObject *masked;

    if (nargs != 1) {
        PyErr_SetString(PyExc_TypeError, "mask_lines takes 1 argument");
        return NULL;
    }
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    if (view.len > (PY_SSIZE_T_MAX - 16) / 5) {
        PyBuffer_Release(&view);
        return PyErr_NoMemory();
    }
    /* A masked line is at most 8 bytes longer than the 2 bytes it needs ("x\n"). */
    out = PyMem_Malloc((size_t)view.len * 5 + 16);
    if (out == NULL) {
        PyBuffer_Release(&view);
        return PyErr_NoMemory();
    }
    p = (const unsigned char *)view.buf;
    end = p + view.len;
    while (p < end) {
        lf = memchr(p, '\n', (size_t)(end - p));
        if (lf == NULL) {
            memcpy(out + written, PLACEHOLDER, PLACEHOLDER_LEN); /* content up to the end */
            written += PLACEHOLDER_LEN;
            break;
        }
        content_end = (lf > p && lf[-1] == '\r') ? lf - 1 : lf;
        if (content_end > p) {
            memcpy(out + written, PLACEHOLDER, PLACEHOLDER_LEN);
            written += PLACEHOLDER_LEN;
        }
        memcpy(out + written, content_end, (size_t)(lf + 1 - content_end));
        written += lf + 1 - content_end;
        p = lf + 1;
    }
    masked = PyBytes_FromStringAndSize((const char *)out, written);
    PyMem_Free(out);
    PyBuffer_Release(&view);
    return masked;
}

static PyMethodDef methods[] = {
    {"mask_lines", (PyCFunction)(void (*)(void))mask_lines, METH_FASTCALL,
     "mask_lines(block) -> masked"},
    {"mask_run", (PyCFunction)(void (*)(void))mask_run, METH_FASTCALL,
     "mask_run(data, pos) -> (masked, end)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "pop3tap.protocol._maskscan_c",
    "C masking of whole client lines whose secret the line rule decides alone.", 0, methods,
};

PyMODINIT_FUNC
PyInit__maskscan_c(void)
{
    return PyModule_Create(&module);
}
