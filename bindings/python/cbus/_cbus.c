/* cbus._cbus: the CPython extension over the public C API (include/cbus/).
 *
 * The library's sources are compiled into this module (setup.py) with hidden
 * visibility, so the package needs no libcbus.so at run time.
 *
 * Rules kept here: every argument is checked and a wrong one raises
 * TypeError/ValueError naming it; an emit never raises for what the bus does
 * (a drop or a closed producer returns False: the host's callback must not
 * fail because telemetry did); waits release the GIL and wake for signals. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include <cbus/admit.h>
#include <cbus/bus.h>
#include <cbus/consumer.h>
#include <cbus/producer.h>

static PyObject *uuid_class;  /* uuid.UUID */
static PyObject *CbusError;   /* cbus.Error(OSError) */

static PyObject *raise_code(int rc, const char *what)
{
    PyObject *args = Py_BuildValue("(iss)", -rc, cbus_strerror(rc), what);
    if (args) {
        PyErr_SetObject(CbusError, args);
        Py_DECREF(args);
    }
    return NULL;
}

/* ---- argument helpers ----------------------------------------------------- */

/* A text argument: str or None.  Strings with lone surrogates are encoded
 * with "replace" (they cannot be UTF-8); the C calls take C strings, so a
 * text is cut at its first NUL. */
struct text {
    const char *s;    /* NULL for None */
    Py_ssize_t len;
    PyObject *keep;   /* the encoded bytes when we had to encode */
};

static int text_arg(PyObject *o, const char *argname, struct text *t)
{
    t->s = NULL;
    t->len = 0;
    t->keep = NULL;
    if (o == NULL || o == Py_None)
        return 0;
    if (!PyUnicode_Check(o)) {
        PyErr_Format(PyExc_TypeError, "%s must be str or None, not %.100s", argname,
                     Py_TYPE(o)->tp_name);
        return -1;
    }
    t->s = PyUnicode_AsUTF8AndSize(o, &t->len);
    if (t->s)
        return 0;
    if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError))
        return -1;
    PyErr_Clear();
    t->keep = PyUnicode_AsEncodedString(o, "utf-8", "replace");
    if (!t->keep)
        return -1;
    t->s = PyBytes_AS_STRING(t->keep);
    t->len = PyBytes_GET_SIZE(t->keep);
    return 0;
}

static void text_done(struct text *t)
{
    Py_CLEAR(t->keep);
}

/* An unsigned count: None (absent) or an int in 0..max. */
static int uint_arg(PyObject *o, const char *argname, uint64_t max, uint64_t *out, int *present)
{
    *present = 0;
    *out = 0;
    if (o == NULL || o == Py_None)
        return 0;
    if (!PyLong_Check(o) || PyBool_Check(o)) {
        PyErr_Format(PyExc_TypeError, "%s must be int or None, not %.100s", argname,
                     Py_TYPE(o)->tp_name);
        return -1;
    }
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (overflow || v < 0 || (uint64_t)v > max) {
        PyErr_Format(PyExc_ValueError, "%s must be in 0..%llu", argname, (unsigned long long)max);
        return -1;
    }
    *out = (uint64_t)v;
    *present = 1;
    return 0;
}

/* An id: uuid.UUID, 16 bytes, or a hex/UUID string. */
static int id_arg(PyObject *o, const char *argname, uint8_t id[16])
{
    if (PyObject_IsInstance(o, uuid_class) == 1) {
        PyObject *b = PyObject_GetAttrString(o, "bytes");
        if (!b)
            return -1;
        int ok = PyBytes_Check(b) && PyBytes_GET_SIZE(b) == 16;
        if (ok)
            memcpy(id, PyBytes_AS_STRING(b), 16);
        Py_DECREF(b);
        if (ok)
            return 0;
    } else if (PyBytes_Check(o)) {
        if (PyBytes_GET_SIZE(o) == 16) {
            memcpy(id, PyBytes_AS_STRING(o), 16);
            return 0;
        }
        PyErr_Format(PyExc_ValueError, "%s must be 16 bytes", argname);
        return -1;
    } else if (PyUnicode_Check(o)) {
        const char *s = PyUnicode_AsUTF8(o);
        if (s && cbus_id_parse(id, s) == 0)
            return 0;
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "%s is not a UUID or 32 hex digits", argname);
        return -1;
    }
    PyErr_Format(PyExc_TypeError, "%s must be uuid.UUID, bytes or str, not %.100s", argname,
                 Py_TYPE(o)->tp_name);
    return -1;
}

static PyObject *uuid_from(const uint8_t id[16])
{
    PyObject *b = PyBytes_FromStringAndSize((const char *)id, 16);
    if (!b)
        return NULL;
    PyObject *kw = Py_BuildValue("{sN}", "bytes", b);
    if (!kw)
        return NULL;
    PyObject *empty = PyTuple_New(0);
    PyObject *u = empty ? PyObject_Call(uuid_class, empty, kw) : NULL;
    Py_XDECREF(empty);
    Py_DECREF(kw);
    return u;
}

static int name_arg(PyObject *o, const char *argname, const char **out)
{
    if (!PyUnicode_Check(o)) {
        PyErr_Format(PyExc_TypeError, "%s must be str, not %.100s", argname, Py_TYPE(o)->tp_name);
        return -1;
    }
    const char *s = PyUnicode_AsUTF8(o);
    if (!s || cbus_name_valid(s) != 0) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError,
                     "%s must be 1..31 characters of [A-Za-z0-9_.-], not starting with '.'",
                     argname);
        return -1;
    }
    *out = s;
    return 0;
}

/* ---- Producer ------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    cbus_producer *p;   /* NULL once closed */
    pid_t pid;          /* the process that opened it */
} Producer;

static PyTypeObject ProducerType;

/* The producer to emit with, or NULL when closed or inherited across fork.
 * A fork child's copy is never used: its lanes and producer-table entry are
 * the parent's (the C library keeps them the parent's at close too). */
static inline cbus_producer *live(Producer *pr)
{
    if (!pr->p || pr->pid != getpid())
        return NULL;
    return pr->p;
}

static int Producer_init(Producer *self, PyObject *args, PyObject *kw)
{
    static char *kwl[] = {"bus", "name", NULL};
    PyObject *bus, *name = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|O:Producer", kwl, &bus, &name))
        return -1;
    const char *bus_name;
    if (name_arg(bus, "bus", &bus_name))
        return -1;
    struct text nm;
    if (text_arg(name, "name", &nm))
        return -1;
    if (self->p && self->pid == getpid())
        cbus_producer_close(self->p);
    self->p = NULL;
    struct cbus_producer_opts o = {.name = nm.s};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = cbus_producer_open(&self->p, bus_name, &o);
    Py_END_ALLOW_THREADS
    text_done(&nm);
    if (rc < 0) {
        self->p = NULL;
        raise_code(rc, bus_name);
        return -1;
    }
    self->pid = getpid();
    return 0;
}

static void Producer_dealloc(Producer *self)
{
    if (self->p && self->pid == getpid())
        cbus_producer_close(self->p);
    self->p = NULL;
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Producer_close(Producer *self, PyObject *unused)
{
    (void)unused;
    /* In a fork child this frees the child's copy only (producer.h). */
    if (self->p)
        cbus_producer_close(self->p);
    self->p = NULL;
    Py_RETURN_NONE;
}

static PyObject *Producer_enter(PyObject *self, PyObject *unused)
{
    (void)unused;
    Py_INCREF(self);
    return self;
}

static PyObject *Producer_exit(Producer *self, PyObject *args)
{
    (void)args;
    return Producer_close(self, NULL);
}

static PyObject *Producer_stats(Producer *self, PyObject *unused)
{
    (void)unused;
    cbus_producer *p = live(self);
    if (!p) {
        PyErr_SetString(PyExc_ValueError, "producer is closed (or was opened before a fork)");
        return NULL;
    }
    struct cbus_producer_stats st;
    int rc = cbus_producer_stats(p, &st);
    if (rc < 0)
        return raise_code(rc, "stats");
    return Py_BuildValue("{sKsKsKsK}", "emitted", (unsigned long long)st.emitted, "dropped",
                         (unsigned long long)st.dropped, "waited_ns",
                         (unsigned long long)st.waited_ns, "max_wait_ns",
                         (unsigned long long)st.max_wait_ns);
}

static PyObject *Producer_check(Producer *self, PyObject *unused)
{
    (void)unused;
    cbus_producer *p = live(self);
    if (!p) {
        PyErr_SetString(PyExc_ValueError, "producer is closed (or was opened before a fork)");
        return NULL;
    }
    return PyLong_FromLong(cbus_producer_check(p));
}

static PyObject *Producer_get_closed(Producer *self, void *c)
{
    (void)c;
    return PyBool_FromLong(live(self) == NULL);
}

/* ---- Run: a cbus_ctx bound to its producer --------------------------------- */

typedef struct {
    PyObject_HEAD
    Producer *producer;
    cbus_ctx *ctx;
} Run;

static PyTypeObject RunType;

static int run_configure(Run *r, PyObject *kw);

static const char *const ctx_keys[] = {"provider", "model", "user", "session", "request_id",
                                       "agent", "tenant", NULL};

static int run_set_string(cbus_ctx *ctx, int i, const char *s)
{
    switch (i) {
    case 0: return cbus_ctx_set_provider(ctx, s);
    case 1: return cbus_ctx_set_model(ctx, s);
    case 2: return cbus_ctx_set_user(ctx, s);
    case 3: return cbus_ctx_set_session(ctx, s);
    case 4: return cbus_ctx_set_request_id(ctx, s);
    case 5: return cbus_ctx_set_agent(ctx, s);
    default: return cbus_ctx_set_tenant(ctx, s);
    }
}

/* Applies the keyword arguments of Producer.run()/Run.child(). */
static int run_configure(Run *r, PyObject *kw)
{
    if (!kw)
        return 0;
    PyObject *key, *val;
    Py_ssize_t pos = 0;
    while (PyDict_Next(kw, &pos, &key, &val)) {
        const char *k = PyUnicode_AsUTF8(key);
        if (!k)
            return -1;
        int done = 0;
        for (int i = 0; ctx_keys[i]; i++) {
            if (strcmp(k, ctx_keys[i]) == 0) {
                struct text t;
                if (text_arg(val, k, &t))
                    return -1;
                run_set_string(r->ctx, i, t.s);
                text_done(&t);
                done = 1;
                break;
            }
        }
        if (done)
            continue;
        uint8_t id[16];
        if (strcmp(k, "run_id") == 0 || strcmp(k, "parent_run_id") == 0 ||
            strcmp(k, "trace_id") == 0) {
            if (val == Py_None)
                memset(id, 0, sizeof id);
            else if (id_arg(val, k, id))
                return -1;
            if (k[0] == 'r')
                cbus_ctx_set_run_id(r->ctx, id);
            else if (k[0] == 'p')
                cbus_ctx_set_parent_run_id(r->ctx, id);
            else
                cbus_ctx_set_trace_id(r->ctx, id);
        } else if (strcmp(k, "tags") == 0) {
            if (val == Py_None)
                continue;
            PyObject *seq = PySequence_Fast(val, "tags must be a sequence of str");
            if (!seq)
                return -1;
            for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
                struct text t;
                PyObject *it = PySequence_Fast_GET_ITEM(seq, i);
                if (it == Py_None || text_arg(it, "tags item", &t)) {
                    if (it == Py_None)
                        PyErr_SetString(PyExc_TypeError, "tags item must be str, not None");
                    Py_DECREF(seq);
                    return -1;
                }
                cbus_ctx_add_tag(r->ctx, t.s); /* -E2BIG is counted in the body */
                text_done(&t);
            }
            Py_DECREF(seq);
        } else if (strcmp(k, "metadata") == 0) {
            if (val == Py_None)
                continue;
            if (!PyDict_Check(val)) {
                PyErr_Format(PyExc_TypeError, "metadata must be dict or None, not %.100s",
                             Py_TYPE(val)->tp_name);
                return -1;
            }
            PyObject *mk, *mv;
            Py_ssize_t mpos = 0;
            while (PyDict_Next(val, &mpos, &mk, &mv)) {
                struct text tk, tv;
                if (mk == Py_None || text_arg(mk, "metadata key", &tk)) {
                    if (mk == Py_None)
                        PyErr_SetString(PyExc_TypeError, "metadata key must be str, not None");
                    return -1;
                }
                /* values are shown as text: non-str values by their str() */
                PyObject *sv = PyUnicode_Check(mv) ? (Py_INCREF(mv), mv) : PyObject_Str(mv);
                if (!sv || text_arg(sv, "metadata value", &tv)) {
                    Py_XDECREF(sv);
                    text_done(&tk);
                    return -1;
                }
                cbus_ctx_set_metadata(r->ctx, tk.s, tv.s);
                text_done(&tk);
                text_done(&tv);
                Py_DECREF(sv);
            }
        } else {
            PyErr_Format(PyExc_TypeError, "unexpected keyword argument '%s'", k);
            return -1;
        }
    }
    return 0;
}

static Run *run_new(Producer *pr, const cbus_ctx *parent, PyObject *kw)
{
    Run *r = PyObject_New(Run, &RunType);
    if (!r)
        return NULL;
    r->ctx = cbus_ctx_new();
    Py_INCREF(pr);
    r->producer = pr;
    if (!r->ctx) {
        Py_DECREF(r);
        return (Run *)PyErr_NoMemory();
    }
    if (parent)
        cbus_ctx_child(r->ctx, parent);
    if (run_configure(r, kw)) {
        Py_DECREF(r);
        return NULL;
    }
    return r;
}

static void Run_dealloc(Run *self)
{
    cbus_ctx_free(self->ctx);
    Py_XDECREF(self->producer);
    PyObject_Free(self);
}

static PyObject *Producer_run(Producer *self, PyObject *args, PyObject *kw)
{
    if (PyTuple_GET_SIZE(args) != 0) {
        PyErr_SetString(PyExc_TypeError, "run() takes keyword arguments only");
        return NULL;
    }
    return (PyObject *)run_new(self, NULL, kw);
}

static PyObject *Run_child(Run *self, PyObject *args, PyObject *kw)
{
    if (PyTuple_GET_SIZE(args) != 0) {
        PyErr_SetString(PyExc_TypeError, "child() takes keyword arguments only");
        return NULL;
    }
    return (PyObject *)run_new(self->producer, self->ctx, kw);
}

static PyObject *Run_enter(PyObject *self, PyObject *unused)
{
    (void)unused;
    Py_INCREF(self);
    return self;
}

static PyObject *Run_exit(PyObject *self, PyObject *args)
{
    (void)self;
    (void)args;
    Py_RETURN_FALSE;
}

static PyObject *emitted(int rc)
{
    /* -EAGAIN (dropped) and -ESTALE (closed/truncated) are counted by the
     * library; the host is told by the return value only. */
    if (rc == 0)
        Py_RETURN_TRUE;
    Py_RETURN_FALSE;
}

static PyObject *Run_get_id(Run *self, void *which)
{
    const struct cbus_event *t = &self->ctx->tmpl;
    switch ((intptr_t)which) {
    case 0: return uuid_from(t->run_id);
    case 1:
        if (cbus_id_is_zero(t->parent_run_id))
            Py_RETURN_NONE;
        return uuid_from(t->parent_run_id);
    default: return uuid_from(t->trace_id);
    }
}

/* Runs with one optional text: (text=None). */
#define RUN_TEXT1(meth, cfn, argname)                                                  \
    static PyObject *Run_##meth(Run *self, PyObject *args, PyObject *kw)               \
    {                                                                                  \
        static char *kwl[] = {argname, NULL};                                          \
        PyObject *a = Py_None;                                                         \
        if (!PyArg_ParseTupleAndKeywords(args, kw, "|O:" #meth, kwl, &a))              \
            return NULL;                                                               \
        struct text t;                                                                 \
        if (text_arg(a, argname, &t))                                                  \
            return NULL;                                                               \
        cbus_producer *p = live(self->producer);                                       \
        int rc = p ? cfn(p, self->ctx, t.s) : -ESTALE;                                 \
        text_done(&t);                                                                 \
        return emitted(rc);                                                            \
    }

/* Runs with two optional texts. */
#define RUN_TEXT2(meth, cfn, a1, a2)                                                   \
    static PyObject *Run_##meth(Run *self, PyObject *args, PyObject *kw)               \
    {                                                                                  \
        static char *kwl[] = {a1, a2, NULL};                                           \
        PyObject *o1 = Py_None, *o2 = Py_None;                                         \
        if (!PyArg_ParseTupleAndKeywords(args, kw, "|OO:" #meth, kwl, &o1, &o2))       \
            return NULL;                                                               \
        struct text t1, t2;                                                            \
        if (text_arg(o1, a1, &t1))                                                     \
            return NULL;                                                               \
        if (text_arg(o2, a2, &t2)) {                                                   \
            text_done(&t1);                                                            \
            return NULL;                                                               \
        }                                                                              \
        cbus_producer *p = live(self->producer);                                       \
        int rc = p ? cfn(p, self->ctx, t1.s, t2.s) : -ESTALE;                          \
        text_done(&t1);                                                                \
        text_done(&t2);                                                                \
        return emitted(rc);                                                            \
    }

RUN_TEXT1(chain_end, cbus_chain_end, "outputs")
RUN_TEXT1(tool_end, cbus_tool_end, "output")
RUN_TEXT1(agent_finish, cbus_agent_finish, "output")
RUN_TEXT1(text, cbus_text, "text")
RUN_TEXT2(chain_start, cbus_chain_start, "name", "inputs")
RUN_TEXT2(chain_error, cbus_chain_error, "error_type", "message")
RUN_TEXT2(tool_start, cbus_tool_start, "name", "input")
RUN_TEXT2(tool_error, cbus_tool_error, "error_type", "message")
RUN_TEXT2(agent_action, cbus_agent_action, "tool", "tool_input")
RUN_TEXT2(retriever_start, cbus_retriever_start, "name", "query")
RUN_TEXT2(retriever_error, cbus_retriever_error, "error_type", "message")
RUN_TEXT2(custom, cbus_custom, "name", "data")
RUN_TEXT2(tool_event, cbus_tool_event, "name", "data")

/* Explicit conversations (cbus_conversation_*): -EINVAL and -E2BIG are the
 * caller's mistakes and raise ValueError; a drop is False, as for every emit. */
static PyObject *conv_result(int rc, const char *what)
{
    if (rc == -EINVAL) {
        PyErr_Format(PyExc_ValueError, "%s: an argument is missing or malformed (ids 1..%d "
                     "bytes without control characters, role user/assistant/tool/system, "
                     "title 1..%d bytes, state 1..32 of [a-z0-9_-]; no conversation_id needs "
                     "the run's session)", what, CBUS_CONV_ID_MAX, CBUS_CONV_TITLE_MAX);
        return NULL;
    }
    if (rc == -E2BIG) {
        PyErr_Format(PyExc_ValueError, "%s: the fields do not fit %d bytes of JSON", what,
                     CBUS_CONV_FIELDS_MAX);
        return NULL;
    }
    return emitted(rc);
}

/* (conversation_id=None, <text>=None) for create, rename, set_state. */
#define RUN_CONV2(meth, cfn, a2)                                                       \
    static PyObject *Run_##meth(Run *self, PyObject *args, PyObject *kw)               \
    {                                                                                  \
        static char *kwl[] = {"conversation_id", a2, NULL};                            \
        PyObject *o1 = Py_None, *o2 = Py_None;                                         \
        if (!PyArg_ParseTupleAndKeywords(args, kw, "|OO:" #meth, kwl, &o1, &o2))       \
            return NULL;                                                               \
        struct text t1, t2;                                                            \
        if (text_arg(o1, "conversation_id", &t1))                                      \
            return NULL;                                                               \
        if (text_arg(o2, a2, &t2)) {                                                   \
            text_done(&t1);                                                            \
            return NULL;                                                               \
        }                                                                              \
        cbus_producer *p = live(self->producer);                                       \
        int rc = p ? cfn(p, self->ctx, t1.s, t2.s) : -ESTALE;                          \
        text_done(&t1);                                                                \
        text_done(&t2);                                                                \
        return conv_result(rc, #meth);                                                 \
    }

RUN_CONV2(conversation_create, cbus_conversation_create, "title")
RUN_CONV2(conversation_rename, cbus_conversation_rename, "title")
RUN_CONV2(conversation_set_state, cbus_conversation_set_state, "state")

#define CONV_META_MAX 64

static PyObject *Run_conversation_message(Run *self, PyObject *args, PyObject *kw)
{
    static char *kwl[] = {"role", "text", "id", "parent_id", "metadata", "conversation_id", NULL};
    PyObject *o[6] = {Py_None, Py_None, Py_None, Py_None, Py_None, Py_None};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|O$OOOO:conversation_message", kwl, &o[0],
                                     &o[1], &o[2], &o[3], &o[4], &o[5]))
        return NULL;
    static const char *const names[] = {"role", "text", "id", "parent_id", "metadata",
                                        "conversation_id"};
    struct text t[6] = {{0}};
    struct text mt[2 * CONV_META_MAX] = {{0}};
    const char *meta[2 * CONV_META_MAX + 1];
    int nm = 0, bad = 0;
    PyObject *res = NULL;
    for (int i = 0; i < 6 && !bad; i++)
        if (i != 4 && text_arg(o[i], names[i], &t[i]))
            bad = 1;
    if (!bad && o[4] != Py_None) {
        if (!PyDict_Check(o[4])) {
            PyErr_SetString(PyExc_TypeError, "metadata must be a dict of str to str, or None");
            bad = 1;
        } else if (PyDict_Size(o[4]) > CONV_META_MAX) {
            PyErr_Format(PyExc_ValueError, "metadata: at most %d keys", CONV_META_MAX);
            bad = 1;
        } else {
            PyObject *k, *v;
            Py_ssize_t pos = 0;
            while (!bad && PyDict_Next(o[4], &pos, &k, &v)) {
                if (text_arg(k, "metadata key", &mt[nm]) || k == Py_None ||
                    text_arg(v, "metadata value", &mt[nm + 1]) || v == Py_None) {
                    if (!PyErr_Occurred())
                        PyErr_SetString(PyExc_TypeError, "metadata keys and values must be str");
                    bad = 1;
                    nm += 2;
                    break;
                }
                meta[nm] = mt[nm].s;
                meta[nm + 1] = mt[nm + 1].s;
                nm += 2;
            }
            meta[nm] = NULL;
        }
    }
    if (!bad) {
        struct cbus_conv_message m = {.id = t[2].s, .role = t[0].s, .text = t[1].s,
                                      .text_len = (size_t)t[1].len, .parent_id = t[3].s,
                                      .metadata = o[4] != Py_None ? meta : NULL};
        cbus_producer *p = live(self->producer);
        int rc = p ? cbus_conversation_message(p, self->ctx, t[5].s, &m) : -ESTALE;
        res = conv_result(rc, "conversation_message");
    }
    for (int i = 0; i < 6; i++)
        text_done(&t[i]);
    for (int i = 0; i < nm; i++)
        text_done(&mt[i]);
    return res;
}

static int start_info(PyObject *pc, PyObject *est, PyObject *mt, struct cbus_llm_start_info *info)
{
    uint64_t v;
    int pr;
    memset(info, 0, sizeof *info);
    if (uint_arg(pc, "prompt_count", UINT32_MAX, &v, &pr))
        return -1;
    info->prompt_count = (uint32_t)v;
    if (uint_arg(est, "est_input_tokens", UINT32_MAX, &v, &pr))
        return -1;
    info->est_input_tokens = (uint32_t)v;
    if (uint_arg(mt, "max_tokens", UINT32_MAX, &v, &pr))
        return -1;
    info->max_tokens = (uint32_t)v;
    return 0;
}

static PyObject *Run_llm_start(Run *self, PyObject *args, PyObject *kw)
{
    static char *kwl[] = {"prompt", "prompt_count", "est_input_tokens", "max_tokens", "system", NULL};
    PyObject *o = Py_None, *pc = Py_None, *est = Py_None, *mt = Py_None, *sy = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|O$OOOO:llm_start", kwl, &o, &pc, &est, &mt, &sy))
        return NULL;
    struct cbus_llm_start_info info;
    if (start_info(pc, est, mt, &info))
        return NULL;
    struct text t, ts;
    if (text_arg(o, "prompt", &t))
        return NULL;
    if (text_arg(sy, "system", &ts)) {
        text_done(&t);
        return NULL;
    }
    cbus_producer *p = live(self->producer);
    int rc = !p    ? -ESTALE
             : ts.s ? cbus_llm_start_system(p, self->ctx, t.s, ts.s, (size_t)ts.len, &info)
                    : cbus_llm_start(p, self->ctx, t.s, &info);
    text_done(&t);
    text_done(&ts);
    return emitted(rc);
}

static PyObject *Run_chat_model_start(Run *self, PyObject *args, PyObject *kw)
{
    static char *kwl[] = {"last_message", "messages", "prompt_count", "est_input_tokens",
                          "max_tokens", "system", NULL};
    PyObject *o = Py_None, *m = Py_None, *pc = Py_None, *est = Py_None, *mt = Py_None,
             *sy = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|O$OOOOO:chat_model_start", kwl, &o, &m, &pc,
                                     &est, &mt, &sy))
        return NULL;
    struct cbus_llm_start_info info;
    if (start_info(pc, est, mt, &info))
        return NULL;
    struct text t, tm, ts;
    if (text_arg(o, "last_message", &t))
        return NULL;
    if (text_arg(m, "messages", &tm)) {
        text_done(&t);
        return NULL;
    }
    if (text_arg(sy, "system", &ts)) {
        text_done(&t);
        text_done(&tm);
        return NULL;
    }
    cbus_producer *p = live(self->producer);
    int rc;
    if (!p)
        rc = -ESTALE;
    else if (ts.s)
        rc = cbus_chat_model_start_system(p, self->ctx, tm.s, tm.s ? (size_t)tm.len : 0, ts.s,
                                          (size_t)ts.len, t.s, &info);
    else if (tm.s)
        rc = cbus_chat_model_start_messages(p, self->ctx, tm.s, (size_t)tm.len, t.s, &info);
    else
        rc = cbus_chat_model_start(p, self->ctx, t.s, &info);
    text_done(&t);
    text_done(&tm);
    text_done(&ts);
    return emitted(rc);
}

/* The hot path: positional str only, no keyword parsing. */
static PyObject *Run_llm_new_token(Run *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 1) {
        PyErr_SetString(PyExc_TypeError, "llm_new_token() takes exactly one argument (token)");
        return NULL;
    }
    struct text t;
    if (text_arg(args[0], "token", &t))
        return NULL;
    cbus_producer *p = live(self->producer);
    int rc = p ? cbus_llm_new_token(p, self->ctx, t.s ? t.s : "", (size_t)t.len) : -ESTALE;
    text_done(&t);
    return emitted(rc);
}

static PyObject *Run_chat_model_stream(Run *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 1) {
        PyErr_SetString(PyExc_TypeError, "chat_model_stream() takes exactly one argument (chunk)");
        return NULL;
    }
    struct text t;
    if (text_arg(args[0], "chunk", &t))
        return NULL;
    cbus_producer *p = live(self->producer);
    int rc = p ? cbus_chat_model_stream(p, self->ctx, t.s ? t.s : "", (size_t)t.len) : -ESTALE;
    text_done(&t);
    return emitted(rc);
}

static PyObject *Run_llm_end(Run *self, PyObject *args, PyObject *kw)
{
    static char *kwl[] = {"output", "input_tokens", "output_tokens", "cache_read_tokens",
                          "cache_creation_tokens", "reasoning_tokens", "generations",
                          "finish_reason", "duration_ns", "ttft_ns", "messages", "response_id", NULL};
    PyObject *o = Py_None, *a[9] = {Py_None, Py_None, Py_None, Py_None, Py_None,
                                    Py_None, Py_None, Py_None, Py_None};
    PyObject *m = Py_None, *rid = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|O$OOOOOOOOOOO:llm_end", kwl, &o, &a[0], &a[1],
                                     &a[2], &a[3], &a[4], &a[5], &a[6], &a[7], &a[8], &m, &rid))
        return NULL;
    /* checked here, before anything is emitted: the library refuses a bad
     * id with -EINVAL and then emits no end at all */
    const char *rs = NULL;
    if (rid != Py_None) {
        Py_ssize_t rl = 0;
        rs = PyUnicode_Check(rid) ? PyUnicode_AsUTF8AndSize(rid, &rl) : NULL;
        int ok = rs && rl > 0 && rl <= CBUS_RESPONSE_ID_MAX;
        for (Py_ssize_t i = 0; ok && i < rl; i++)
            ok = (unsigned char)rs[i] > 0x20 && (unsigned char)rs[i] < 0x7f;
        if (!ok) {
            PyErr_Clear();
            PyErr_Format(PyExc_ValueError,
                         "response_id must be a str of 1..%d printable ASCII characters without spaces",
                         CBUS_RESPONSE_ID_MAX);
            return NULL;
        }
    }
    struct cbus_usage u;
    memset(&u, 0, sizeof u);
    static const unsigned bits[5] = {CBUS_USAGE_INPUT, CBUS_USAGE_OUTPUT, CBUS_USAGE_CACHE_READ,
                                     CBUS_USAGE_CACHE_CREATION, CBUS_USAGE_REASONING};
    uint32_t *fields[5] = {&u.input_tokens, &u.output_tokens, &u.cache_read_tokens,
                           &u.cache_creation_tokens, &u.reasoning_tokens};
    uint64_t v;
    int present;
    for (int i = 0; i < 5; i++) {
        if (uint_arg(a[i], kwl[i + 1], UINT32_MAX, &v, &present))
            return NULL;
        *fields[i] = (uint32_t)v;
        if (present)
            u.usage_present |= (uint8_t)bits[i];
    }
    if (uint_arg(a[5], "generations", UINT16_MAX, &v, &present))
        return NULL;
    u.generations = (uint16_t)v;
    if (a[6] != Py_None) {
        const char *fr = PyUnicode_Check(a[6]) ? PyUnicode_AsUTF8(a[6]) : NULL;
        if (!fr) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "finish_reason must be str or None, not %.100s",
                         Py_TYPE(a[6])->tp_name);
            return NULL;
        }
        int r = cbus_finish_reason_from_name(fr);
        u.finish_reason = (uint8_t)(r < 0 ? CBUS_FINISH_OTHER : r);
    }
    if (uint_arg(a[7], "duration_ns", INT64_MAX, &v, &present))
        return NULL;
    if (present) {
        u.duration_ns = v;
        u.usage_present |= CBUS_USAGE_DURATION;
    }
    if (uint_arg(a[8], "ttft_ns", INT64_MAX, &v, &present))
        return NULL;
    if (present) {
        u.ttft_ns = v;
        u.usage_present |= CBUS_USAGE_TTFT;
    }
    struct text t, tm;
    if (text_arg(o, "output", &t))
        return NULL;
    if (text_arg(m, "messages", &tm)) {
        text_done(&t);
        return NULL;
    }
    cbus_producer *p = live(self->producer);
    int rc;
    if (!p)
        rc = -ESTALE;
    else if (rs)
        rc = cbus_llm_end_response(p, self->ctx, &u, tm.s ? NULL : t.s, tm.s, tm.s ? (size_t)tm.len : 0, rs);
    else if (tm.s)
        rc = cbus_llm_end_messages(p, self->ctx, &u, tm.s, (size_t)tm.len);
    else
        rc = cbus_llm_end(p, self->ctx, &u, t.s);
    text_done(&t);
    text_done(&tm);
    return emitted(rc);
}

static PyObject *Run_llm_error(Run *self, PyObject *args, PyObject *kw)
{
    static char *kwl[] = {"error_type", "message", "http_status", NULL};
    PyObject *o1 = Py_None, *o2 = Py_None, *hs = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|OO$O:llm_error", kwl, &o1, &o2, &hs))
        return NULL;
    uint64_t status;
    int present;
    if (uint_arg(hs, "http_status", 999, &status, &present))
        return NULL;
    struct text t1, t2;
    if (text_arg(o1, "error_type", &t1))
        return NULL;
    if (text_arg(o2, "message", &t2)) {
        text_done(&t1);
        return NULL;
    }
    cbus_producer *p = live(self->producer);
    int rc = p ? cbus_llm_error(p, self->ctx, t1.s, t2.s, (int)status) : -ESTALE;
    text_done(&t1);
    text_done(&t2);
    return emitted(rc);
}

static PyObject *Run_retriever_end(Run *self, PyObject *args, PyObject *kw)
{
    static char *kwl[] = {"document_count", "documents", NULL};
    PyObject *o = Py_None, *d = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|OO:retriever_end", kwl, &o, &d))
        return NULL;
    uint64_t n;
    int present;
    if (uint_arg(o, "document_count", UINT32_MAX, &n, &present))
        return NULL;
    struct text t;
    if (text_arg(d, "documents", &t))
        return NULL;
    cbus_producer *p = live(self->producer);
    int rc = p ? cbus_retriever_end_documents(p, self->ctx, (uint32_t)n, t.s) : -ESTALE;
    text_done(&t);
    return emitted(rc);
}

static PyObject *Run_retry(Run *self, PyObject *args, PyObject *kw)
{
    static char *kwl[] = {"attempt", "backoff_ns", "reason", NULL};
    PyObject *oa = Py_None, *ob = Py_None, *orr = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|OOO:retry", kwl, &oa, &ob, &orr))
        return NULL;
    uint64_t att, bo;
    int present;
    if (uint_arg(oa, "attempt", UINT32_MAX, &att, &present) ||
        uint_arg(ob, "backoff_ns", INT64_MAX, &bo, &present))
        return NULL;
    struct text t;
    if (text_arg(orr, "reason", &t))
        return NULL;
    cbus_producer *p = live(self->producer);
    int rc = p ? cbus_retry(p, self->ctx, (uint32_t)att, bo, t.s) : -ESTALE;
    text_done(&t);
    return emitted(rc);
}

static PyObject *Run_admit(Run *self, PyObject *unused)
{
    (void)unused;
    cbus_producer *p = live(self->producer);
    if (!p)
        return Py_BuildValue("(sd)", "allow", 0.0); /* no bus, no verdict: fail open */
    uint64_t after = 0;
    int v = cbus_admit(p, self->ctx, &after);
    const char *s = v == CBUS_THROTTLED          ? "throttle"
                    : v == CBUS_BUDGET_EXCEEDED  ? "budget_exceeded"
                    : v == CBUS_ADMIT_STALE      ? "stale"
                                                 : "allow";
    return Py_BuildValue("(sd)", s, v == CBUS_THROTTLED ? (double)after / 1e9 : 0.0);
}

/* ---- Event ---------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    struct cbus_event ev;
    PyObject *body;   /* bytes or None */
} Event;

static PyTypeObject EventType;

static void Event_dealloc(Event *self)
{
    Py_XDECREF(self->body);
    PyObject_Free(self);
}

static PyObject *field_str(const char *f, size_t size)
{
    size_t n = strnlen(f, size);
    /* shared memory is not trusted: bytes that are not UTF-8 are replaced */
    return PyUnicode_DecodeUTF8(f, (Py_ssize_t)n, "replace");
}

#define EV_FIELD(fname)                                                  \
    static PyObject *Event_get_##fname(Event *self, void *c)             \
    {                                                                    \
        (void)c;                                                         \
        return field_str(self->ev.fname, sizeof self->ev.fname);         \
    }
EV_FIELD(provider)
EV_FIELD(model)
EV_FIELD(user)
EV_FIELD(session)
EV_FIELD(agent)
EV_FIELD(tenant)
EV_FIELD(request_id)
EV_FIELD(name)
EV_FIELD(preview)

static PyObject *Event_get_kind(Event *self, void *c)
{
    (void)c;
    const char *n = cbus_kind_name(self->ev.kind);
    if (!n)
        return PyUnicode_FromFormat("kind%u", (unsigned)self->ev.kind);
    return PyUnicode_FromString(n);
}

static PyObject *Event_get_int(Event *self, void *which)
{
    const struct cbus_event *e = &self->ev;
    switch ((intptr_t)which) {
    case 0: return PyLong_FromUnsignedLong(e->kind);
    case 1: return PyLong_FromUnsignedLong(e->flags);
    case 2: return PyLong_FromUnsignedLong(e->pid);
    case 3: return PyLong_FromUnsignedLong(e->tid);
    case 4: return PyLong_FromUnsignedLongLong(e->event_id);
    case 5: return PyLong_FromUnsignedLongLong(e->ts_realtime_ns);
    default: return PyLong_FromUnsignedLongLong(e->ts_mono_ns);
    }
}

static PyObject *Event_get_id(Event *self, void *which)
{
    const uint8_t *id = (intptr_t)which == 0   ? self->ev.run_id
                        : (intptr_t)which == 1 ? self->ev.parent_run_id
                                               : self->ev.trace_id;
    if (cbus_id_is_zero(id))
        Py_RETURN_NONE;
    return uuid_from(id);
}

static PyObject *Event_get_body(Event *self, void *c)
{
    (void)c;
    Py_INCREF(self->body);
    return self->body;
}

static int body_section(Event *self, unsigned type, const char **data, uint32_t *len)
{
    if (self->body == Py_None)
        return 0;
    struct cbus_body_section sec;
    int r = cbus_body_find(PyBytes_AS_STRING(self->body), (size_t)PyBytes_GET_SIZE(self->body),
                           type, &sec, data);
    if (r != 1)
        return 0;
    *len = sec.len;
    return 1;
}

/* The event's whole text: the body's text section, else the preview. */
static PyObject *Event_get_text(Event *self, void *c)
{
    const char *d;
    uint32_t len;
    if (body_section(self, CBUS_BODY_TEXT, &d, &len))
        return PyUnicode_DecodeUTF8(d, len, "replace");
    return Event_get_preview(self, c);
}

static PyObject *Event_get_messages(Event *self, void *c)
{
    (void)c;
    const char *d;
    uint32_t len;
    if (body_section(self, CBUS_BODY_MESSAGES, &d, &len))
        return PyUnicode_DecodeUTF8(d, len, "replace");
    Py_RETURN_NONE;
}

/* An LLM start's system instructions (gen_ai.system_instructions JSON or
 * text), an llm_end's response id: None when the body has none. */
static PyObject *Event_get_system(Event *self, void *c)
{
    (void)c;
    const char *d;
    uint32_t len;
    if (body_section(self, CBUS_BODY_SYSTEM, &d, &len))
        return PyUnicode_DecodeUTF8(d, len, "replace");
    Py_RETURN_NONE;
}

static PyObject *Event_get_response_id(Event *self, void *c)
{
    (void)c;
    const char *d;
    uint32_t len;
    if (body_section(self, CBUS_BODY_RESPONSE_ID, &d, &len))
        return PyUnicode_DecodeUTF8(d, len, "replace");
    Py_RETURN_NONE;
}

/* Sections of a type this build does not know (a newer producer's): counted,
 * as the renderers' skipped_sections and the Node addon's skippedSections. */
static PyObject *Event_get_skipped_sections(Event *self, void *c)
{
    (void)c;
    long n = 0;
    if (self->body != Py_None) {
        size_t off = 0;
        struct cbus_body_section sec;
        const char *d;
        while (cbus_body_next(PyBytes_AS_STRING(self->body), (size_t)PyBytes_GET_SIZE(self->body),
                              &off, &sec, &d) == 1)
            if (sec.type == 0 || sec.type > CBUS_BODY_RESPONSE_ID) /* the newest type layout.h has */
                n++;
    }
    return PyLong_FromLong(n);
}

/* NUL-separated strings of a body section, as a list. */
static PyObject *nul_list(const char *d, uint32_t len)
{
    PyObject *l = PyList_New(0);
    uint32_t i = 0;
    while (l && i < len) {
        const char *end = memchr(d + i, '\0', len - i);
        uint32_t n = end ? (uint32_t)(end - (d + i)) : len - i;
        PyObject *s = PyUnicode_DecodeUTF8(d + i, n, "replace");
        if (!s || PyList_Append(l, s)) {
            Py_XDECREF(s);
            Py_CLEAR(l);
            break;
        }
        Py_DECREF(s);
        i += n + 1;
    }
    return l;
}

static PyObject *Event_get_tags(Event *self, void *c)
{
    (void)c;
    const char *d;
    uint32_t len;
    if (body_section(self, CBUS_BODY_TAGS, &d, &len))
        return nul_list(d, len);
    return PyList_New(0);
}

static PyObject *Event_get_metadata(Event *self, void *c)
{
    (void)c;
    const char *d;
    uint32_t len;
    PyObject *m = PyDict_New();
    if (!m || !body_section(self, CBUS_BODY_METADATA, &d, &len))
        return m;
    PyObject *l = nul_list(d, len);
    if (!l) {
        Py_DECREF(m);
        return NULL;
    }
    /* a key set again carries its new value later: the last one wins */
    for (Py_ssize_t i = 0; i + 1 < PyList_GET_SIZE(l); i += 2) {
        if (PyDict_SetItem(m, PyList_GET_ITEM(l, i), PyList_GET_ITEM(l, i + 1))) {
            Py_DECREF(l);
            Py_DECREF(m);
            return NULL;
        }
    }
    Py_DECREF(l);
    return m;
}

/* llm_end usage as a dict of the counts the producer reported (absent is
 * not zero), or None for other kinds. */
static PyObject *Event_get_usage(Event *self, void *c)
{
    (void)c;
    if (self->ev.kind != CBUS_EV_LLM_END)
        Py_RETURN_NONE;
    const struct cbus_usage *u = &self->ev.u.usage;
    PyObject *d = PyDict_New();
    if (!d)
        return NULL;
    struct { unsigned bit; const char *key; uint64_t v; } f[] = {
        {CBUS_USAGE_INPUT, "input_tokens", u->input_tokens},
        {CBUS_USAGE_OUTPUT, "output_tokens", u->output_tokens},
        {CBUS_USAGE_CACHE_READ, "cache_read_tokens", u->cache_read_tokens},
        {CBUS_USAGE_CACHE_CREATION, "cache_creation_tokens", u->cache_creation_tokens},
        {CBUS_USAGE_REASONING, "reasoning_tokens", u->reasoning_tokens},
        {CBUS_USAGE_DURATION, "duration_ns", u->duration_ns},
        {CBUS_USAGE_TTFT, "ttft_ns", u->ttft_ns},
    };
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        if (!(u->usage_present & f[i].bit))
            continue;
        PyObject *v = PyLong_FromUnsignedLongLong(f[i].v);
        if (!v || PyDict_SetItemString(d, f[i].key, v)) {
            Py_XDECREF(v);
            Py_DECREF(d);
            return NULL;
        }
        Py_DECREF(v);
    }
    if (u->generations) {
        PyObject *v = PyLong_FromUnsignedLong(u->generations);
        if (!v || PyDict_SetItemString(d, "generations", v)) {
            Py_XDECREF(v);
            Py_DECREF(d);
            return NULL;
        }
        Py_DECREF(v);
    }
    const char *fr = u->finish_reason ? cbus_finish_reason_name(u->finish_reason) : NULL;
    if (fr) {
        PyObject *v = PyUnicode_FromString(fr);
        if (!v || PyDict_SetItemString(d, "finish_reason", v)) {
            Py_XDECREF(v);
            Py_DECREF(d);
            return NULL;
        }
        Py_DECREF(v);
    }
    return d;
}

static PyObject *Event_get_kindnum(Event *self, void *which)
{
    const struct cbus_event *e = &self->ev;
    switch ((intptr_t)which) {
    case 0: /* http_status */
        if (cbus_kind_name(e->kind) && strstr(cbus_kind_name(e->kind), "_error"))
            return PyLong_FromLong(e->u.error.http_status);
        Py_RETURN_NONE;
    case 1:
        if (e->kind == CBUS_EV_LLM_NEW_TOKEN)
            return PyLong_FromUnsignedLong(e->u.token.index);
        Py_RETURN_NONE;
    case 2:
        if (e->kind == CBUS_EV_RETRIEVER_END)
            return PyLong_FromUnsignedLong(e->u.retriever.document_count);
        Py_RETURN_NONE;
    case 3:
        if (e->kind == CBUS_EV_RETRY)
            return PyLong_FromUnsignedLong(e->u.retry.attempt);
        Py_RETURN_NONE;
    default:
        if (e->kind == CBUS_EV_RETRY)
            return PyLong_FromUnsignedLongLong(e->u.retry.backoff_ns);
        Py_RETURN_NONE;
    }
}

static PyObject *Event_repr(Event *self)
{
    const char *n = cbus_kind_name(self->ev.kind);
    char run[37];
    cbus_id_uuid(run, self->ev.run_id);
    return PyUnicode_FromFormat("<cbus.Event %s id=%llu run=%s>", n ? n : "?",
                                (unsigned long long)self->ev.event_id, run);
}

/* ---- Consumer ------------------------------------------------------------- */

#define POLL_MAX 256

typedef struct {
    PyObject_HEAD
    cbus_consumer *c;     /* NULL once closed */
    pid_t pid;
    struct cbus_event *evs;
    struct cbus_body *bodies;
    void *buf;
    size_t buflen;
} Consumer;

static PyTypeObject ConsumerType;

static int Consumer_init(Consumer *self, PyObject *args, PyObject *kw)
{
    static char *kwl[] = {"bus", "name", "lossless", "start", "keep", NULL};
    PyObject *bus, *name, *start = NULL;
    int lossless = 0, keep = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|$pOp:Consumer", kwl, &bus, &name, &lossless,
                                     &start, &keep))
        return -1;
    const char *bus_name, *cname;
    if (name_arg(bus, "bus", &bus_name) || name_arg(name, "name", &cname))
        return -1;
    unsigned st = CBUS_START_NEWEST;
    if (start) {
        const char *s = PyUnicode_Check(start) ? PyUnicode_AsUTF8(start) : NULL;
        if (!s) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "start must be str, not %.100s",
                         Py_TYPE(start)->tp_name);
            return -1;
        }
        if (strcmp(s, "newest") == 0)
            st = CBUS_START_NEWEST;
        else if (strcmp(s, "oldest") == 0)
            st = CBUS_START_OLDEST;
        else if (strcmp(s, "resume") == 0)
            st = CBUS_START_RESUME;
        else {
            PyErr_SetString(PyExc_ValueError, "start must be 'newest', 'oldest' or 'resume'");
            return -1;
        }
    }
    if (self->c) {
        cbus_consumer_detach(self->c);
        self->c = NULL;
    }
    struct cbus_consumer_opts o = {.name = cname,
                                   .mode = lossless ? CBUS_LOSSLESS : CBUS_LOSSY,
                                   .start = st,
                                   .flags = keep ? CBUS_CONSUMER_KEEP : 0};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = cbus_consumer_attach(&self->c, bus_name, &o);
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        self->c = NULL;
        raise_code(rc, bus_name);
        return -1;
    }
    self->pid = getpid();
    self->buflen = cbus_bus_body_limit(cbus_consumer_bus(self->c));
    if (self->buflen < 16 * 1024 * 1024 / 4)
        self->buflen = self->buflen * 8 > (size_t)4 << 20 ? (size_t)4 << 20 : self->buflen * 8;
    if (self->buflen < cbus_bus_body_limit(cbus_consumer_bus(self->c)))
        self->buflen = cbus_bus_body_limit(cbus_consumer_bus(self->c));
    PyMem_Free(self->evs);
    PyMem_Free(self->bodies);
    PyMem_Free(self->buf);
    self->evs = PyMem_Malloc(POLL_MAX * sizeof *self->evs);
    self->bodies = PyMem_Malloc(POLL_MAX * sizeof *self->bodies);
    self->buf = PyMem_Malloc(self->buflen);
    if (!self->evs || !self->bodies || !self->buf) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static void Consumer_dealloc(Consumer *self)
{
    if (self->c && self->pid == getpid())
        cbus_consumer_detach(self->c);
    PyMem_Free(self->evs);
    PyMem_Free(self->bodies);
    PyMem_Free(self->buf);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static cbus_consumer *consumer_live(Consumer *self)
{
    if (!self->c || self->pid != getpid()) {
        PyErr_SetString(PyExc_ValueError, "consumer is closed (or was attached before a fork)");
        return NULL;
    }
    return self->c;
}

static PyObject *Consumer_close(Consumer *self, PyObject *unused)
{
    (void)unused;
    if (self->c && self->pid == getpid())
        cbus_consumer_detach(self->c);
    self->c = NULL;
    Py_RETURN_NONE;
}

static PyObject *Consumer_exit(Consumer *self, PyObject *args)
{
    (void)args;
    return Consumer_close(self, NULL);
}

static PyObject *make_event(const struct cbus_event *ev, const struct cbus_body *b)
{
    Event *e = PyObject_New(Event, &EventType);
    if (!e)
        return NULL;
    e->ev = *ev;
    if (b && b->data && b->len)
        e->body = PyBytes_FromStringAndSize(b->data, b->len);
    else
        e->body = (Py_INCREF(Py_None), Py_None);
    if (!e->body) {
        e->body = NULL;
        Py_DECREF(e);
        return NULL;
    }
    return (PyObject *)e;
}

static PyObject *Consumer_poll(Consumer *self, PyObject *args, PyObject *kw)
{
    static char *kwl[] = {"max", NULL};
    PyObject *om = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|O:poll", kwl, &om))
        return NULL;
    uint64_t max = 64;
    int present;
    if (uint_arg(om, "max", POLL_MAX, &max, &present))
        return NULL;
    if (present && max == 0) {
        PyErr_Format(PyExc_ValueError, "max must be in 1..%d", POLL_MAX);
        return NULL;
    }
    cbus_consumer *c = consumer_live(self);
    if (!c)
        return NULL;
    int n = cbus_consumer_poll_bodies(c, self->evs, self->bodies, (unsigned)max, self->buf,
                                      self->buflen);
    if (n < 0)
        return raise_code(n, "poll");
    PyObject *l = PyList_New(n);
    for (int i = 0; l && i < n; i++) {
        PyObject *e = make_event(&self->evs[i], &self->bodies[i]);
        if (!e) {
            Py_CLEAR(l);
            break;
        }
        PyList_SET_ITEM(l, i, e);
    }
    return l;
}

/* Waits up to timeout seconds (None: for ever) in slices of 100 ms with the
 * GIL released, running signal handlers between slices (Ctrl-C raises
 * KeyboardInterrupt).  Returns True when events may be there. */
static int consumer_wait(Consumer *self, double timeout)
{
    uint64_t deadline = timeout < 0 ? UINT64_MAX : cbus_now_ns() + (uint64_t)(timeout * 1e9);
    for (;;) {
        cbus_consumer *c = consumer_live(self);
        if (!c)
            return -1;
        uint64_t now = cbus_now_ns();
        if (now >= deadline)
            return 0;
        uint64_t slice = deadline - now < 100000000u ? deadline - now : 100000000u;
        int r;
        Py_BEGIN_ALLOW_THREADS
        r = cbus_consumer_wait(c, slice);
        Py_END_ALLOW_THREADS
        if (r == 1)
            return 1;
        if (r == -ESTALE) {
            raise_code(r, "wait");
            return -1;
        }
        if (PyErr_CheckSignals())
            return -1;
    }
}

static int timeout_arg(PyObject *o, double *out)
{
    *out = -1;
    if (o == Py_None)
        return 0;
    if (!PyFloat_Check(o) && !(PyLong_Check(o) && !PyBool_Check(o))) {
        PyErr_Format(PyExc_TypeError, "timeout must be a number or None, not %.100s",
                     Py_TYPE(o)->tp_name);
        return -1;
    }
    double t = PyFloat_AsDouble(o);
    if (t == -1 && PyErr_Occurred())
        return -1;
    if (!(t >= 0) || t > 1e9) {
        PyErr_SetString(PyExc_ValueError, "timeout must be >= 0 seconds");
        return -1;
    }
    *out = t;
    return 0;
}

static PyObject *Consumer_wait(Consumer *self, PyObject *args, PyObject *kw)
{
    static char *kwl[] = {"timeout", NULL};
    PyObject *ot = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|O:wait", kwl, &ot))
        return NULL;
    double t;
    if (timeout_arg(ot, &t))
        return NULL;
    int r = consumer_wait(self, t);
    if (r < 0)
        return NULL;
    return PyBool_FromLong(r);
}

static PyObject *Consumer_iternext(Consumer *self)
{
    /* one event at a time, so a commit after each covers exactly it */
    for (;;) {
        cbus_consumer *c = consumer_live(self);
        if (!c)
            return NULL;
        int n = cbus_consumer_poll_bodies(c, self->evs, self->bodies, 1, self->buf,
                                          self->buflen);
        if (n < 0)
            return raise_code(n, "poll");
        if (n == 1)
            return make_event(&self->evs[0], &self->bodies[0]);
        if (consumer_wait(self, -1) < 0)
            return NULL;
    }
}

static PyObject *Consumer_commit(Consumer *self, PyObject *unused)
{
    (void)unused;
    cbus_consumer *c = consumer_live(self);
    if (!c)
        return NULL;
    int rc = cbus_consumer_commit(c);
    if (rc < 0)
        return raise_code(rc, "commit");
    Py_RETURN_NONE;
}

static PyObject *Consumer_stats(Consumer *self, PyObject *unused)
{
    (void)unused;
    cbus_consumer *c = consumer_live(self);
    if (!c)
        return NULL;
    struct cbus_consumer_stats s;
    int rc = cbus_consumer_stats(c, &s);
    if (rc < 0)
        return raise_code(rc, "stats");
    return Py_BuildValue("{sKsKsKsKsKsKsKsOsKsIsK}", "consumed", (unsigned long long)s.consumed,
                         "lost", (unsigned long long)s.lost, "abandoned",
                         (unsigned long long)s.abandoned, "read_pos",
                         (unsigned long long)s.read_pos, "cursor", (unsigned long long)s.cursor,
                         "tail", (unsigned long long)s.tail, "lag", (unsigned long long)s.lag,
                         "tethered", s.tethered ? Py_True : Py_False, "untethered_count",
                         (unsigned long long)s.untethered_count, "lanes", s.lanes,
                         "body_slots", (unsigned long long)s.body_slots);
}

static PyObject *Consumer_get_closed(Consumer *self, void *c)
{
    (void)c;
    return PyBool_FromLong(!self->c || self->pid != getpid());
}

/* ---- module functions ----------------------------------------------------- */

static PyObject *mod_create_bus(PyObject *m, PyObject *args, PyObject *kw)
{
    (void)m;
    static char *kwl[] = {"name", "capacity", "lanes", "lossless_wait_ns", "stall_timeout_ns",
                          "body_limit", "exist_ok", NULL};
    PyObject *name, *a[5] = {Py_None, Py_None, Py_None, Py_None, Py_None};
    int exist_ok = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|$OOOOOp:create_bus", kwl, &name, &a[0], &a[1],
                                     &a[2], &a[3], &a[4], &exist_ok))
        return NULL;
    const char *bn;
    if (name_arg(name, "name", &bn))
        return NULL;
    uint64_t v[5];
    int present;
    for (int i = 0; i < 5; i++)
        if (uint_arg(a[i], kwl[i + 1], i == 2 || i == 3 ? INT64_MAX : UINT32_MAX, &v[i],
                     &present))
            return NULL;
    struct cbus_create_opts o = {.capacity = v[0],
                                 .lanes = (uint32_t)v[1],
                                 .lossless_wait_ns = v[2],
                                 .stall_timeout_ns = v[3],
                                 .body_limit = (uint32_t)v[4]};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = cbus_bus_create(bn, &o);
    Py_END_ALLOW_THREADS
    if (rc == -EEXIST && exist_ok)
        Py_RETURN_FALSE;
    if (rc == -EINVAL) {
        PyErr_SetString(PyExc_ValueError, "create_bus: an option is out of range (bus.h)");
        return NULL;
    }
    if (rc < 0)
        return raise_code(rc, bn);
    Py_RETURN_TRUE;
}

static PyObject *mod_destroy_bus(PyObject *m, PyObject *name)
{
    (void)m;
    const char *bn;
    if (name_arg(name, "name", &bn))
        return NULL;
    int rc = cbus_bus_destroy(bn);
    if (rc == -ENOENT)
        Py_RETURN_FALSE;
    if (rc < 0)
        return raise_code(rc, bn);
    Py_RETURN_TRUE;
}

static PyObject *mod_now_ns(PyObject *m, PyObject *unused)
{
    (void)m;
    (void)unused;
    return PyLong_FromUnsignedLongLong(cbus_now_ns());
}

/* ---- type tables ---------------------------------------------------------- */

static PyMethodDef Producer_methods[] = {
    {"run", (PyCFunction)(void (*)(void))Producer_run, METH_VARARGS | METH_KEYWORDS,
     "run(*, provider=None, model=None, user=None, session=None, request_id=None, agent=None,\n"
     "    tenant=None, run_id=None, parent_run_id=None, trace_id=None, tags=None,\n"
     "    metadata=None) -> Run\n\nA new run context (new run id and trace id unless given)."},
    {"close", (PyCFunction)Producer_close, METH_NOARGS,
     "Flushes counters and releases the producer; a second close does nothing."},
    {"stats", (PyCFunction)Producer_stats, METH_NOARGS,
     "{'emitted', 'dropped', 'waited_ns', 'max_wait_ns'}"},
    {"check", (PyCFunction)Producer_check, METH_NOARGS,
     "0 while the bus name still refers to our segment, else a negative errno (producer.h)."},
    {"__enter__", Producer_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)Producer_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef Producer_getset[] = {
    {"closed", (getter)Producer_get_closed, NULL,
     "True once closed, or in a process forked after the open.", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyTypeObject ProducerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "cbus.Producer",
    .tp_basicsize = sizeof(Producer),
    .tp_dealloc = (destructor)Producer_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Producer(bus, name=None)\n\nOpens bus BUS for emitting events.  Emits return "
              "True, or False when the event was dropped or the producer is closed; they "
              "never raise for what the bus does.  A producer opened before fork() emits "
              "nothing in the child (False): open a new one there.",
    .tp_methods = Producer_methods,
    .tp_getset = Producer_getset,
    .tp_init = (initproc)Producer_init,
    .tp_new = PyType_GenericNew,
};

#define KWM(name, doc) \
    {#name, (PyCFunction)(void (*)(void))Run_##name, METH_VARARGS | METH_KEYWORDS, doc}

static PyMethodDef Run_methods[] = {
    KWM(child, "child(**run kwargs) -> Run: a child run (parent_run_id = this run's id)."),
    KWM(llm_start, "llm_start(prompt=None, *, prompt_count=None, est_input_tokens=None, "
                   "max_tokens=None) -> bool"),
    KWM(chat_model_start, "chat_model_start(last_message=None, *, messages=None (JSON str), "
                          "prompt_count=None, est_input_tokens=None, max_tokens=None) -> bool"),
    {"llm_new_token", (PyCFunction)(void (*)(void))Run_llm_new_token, METH_FASTCALL,
     "llm_new_token(token: str) -> bool"},
    {"chat_model_stream", (PyCFunction)(void (*)(void))Run_chat_model_stream, METH_FASTCALL,
     "chat_model_stream(chunk: str) -> bool"},
    KWM(llm_end, "llm_end(output=None, *, input_tokens=None, output_tokens=None, "
                 "cache_read_tokens=None, cache_creation_tokens=None, reasoning_tokens=None, "
                 "generations=None, finish_reason=None, duration_ns=None, ttft_ns=None, "
                 "messages=None) -> bool\n\nA count left out (None) is reported as absent, "
                 "not zero."),
    KWM(llm_error, "llm_error(error_type=None, message=None, *, http_status=None) -> bool"),
    KWM(chain_start, "chain_start(name=None, inputs=None) -> bool"),
    KWM(chain_end, "chain_end(outputs=None) -> bool"),
    KWM(chain_error, "chain_error(error_type=None, message=None) -> bool"),
    KWM(tool_start, "tool_start(name=None, input=None) -> bool"),
    KWM(tool_end, "tool_end(output=None) -> bool"),
    KWM(tool_error, "tool_error(error_type=None, message=None) -> bool"),
    KWM(tool_event, "tool_event(name=None, data=None) -> bool"),
    KWM(agent_action, "agent_action(tool=None, tool_input=None) -> bool"),
    KWM(agent_finish, "agent_finish(output=None) -> bool"),
    KWM(retriever_start, "retriever_start(name=None, query=None) -> bool"),
    KWM(retriever_end, "retriever_end(document_count=None, documents=None) -> bool\n\ndocuments: the retrieved documents as text (a JSON array of {id, content, metadata}), whole in the body"),
    KWM(retriever_error, "retriever_error(error_type=None, message=None) -> bool"),
    KWM(text, "text(text=None) -> bool"),
    KWM(retry, "retry(attempt=None, backoff_ns=None, reason=None) -> bool"),
    KWM(custom, "custom(name=None, data=None) -> bool"),
    KWM(conversation_create, "conversation_create(conversation_id=None, title=None) -> bool\n\n"
                             "Explicit chat history (cbus-history): conversation_id None = the "
                             "run's session.  ValueError for a malformed argument."),
    KWM(conversation_rename, "conversation_rename(conversation_id=None, title=None) -> bool"),
    KWM(conversation_set_state, "conversation_set_state(conversation_id=None, state=None) -> bool"),
    KWM(conversation_message, "conversation_message(role, text=None, *, id=None, parent_id=None, "
                              "metadata=None (dict of str), conversation_id=None) -> bool"),
    {"admit", (PyCFunction)Run_admit, METH_NOARGS,
     "admit() -> (verdict, retry_after_s): verdict is 'allow', 'throttle', "
     "'budget_exceeded' or 'stale'; retry_after_s is set for 'throttle'."},
    {"__enter__", Run_enter, METH_NOARGS, NULL},
    {"__exit__", Run_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef Run_getset[] = {
    {"run_id", (getter)Run_get_id, NULL, "uuid.UUID", (void *)0},
    {"parent_run_id", (getter)Run_get_id, NULL, "uuid.UUID or None", (void *)1},
    {"trace_id", (getter)Run_get_id, NULL, "uuid.UUID (the 128-bit W3C trace id)", (void *)2},
    {NULL, NULL, NULL, NULL, NULL}};

static PyTypeObject RunType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "cbus.Run",
    .tp_basicsize = sizeof(Run),
    .tp_dealloc = (destructor)Run_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A run context (Producer.run(), Run.child()): run ids and who/what the events "
              "are about.  Used by one thread at a time.",
    .tp_methods = Run_methods,
    .tp_getset = Run_getset,
};

#define EVG(fname, doc) {#fname, (getter)Event_get_##fname, NULL, doc, NULL}
static PyGetSetDef Event_getset[] = {
    EVG(kind, "the kind's name ('llm_end')"),
    {"kind_id", (getter)Event_get_int, NULL, "the kind's number", (void *)0},
    {"flags", (getter)Event_get_int, NULL, "CBUS_TRUNC_* and CBUS_FLAG_* bits", (void *)1},
    {"pid", (getter)Event_get_int, NULL, NULL, (void *)2},
    {"tid", (getter)Event_get_int, NULL, NULL, (void *)3},
    {"event_id", (getter)Event_get_int, NULL, NULL, (void *)4},
    {"ts_realtime_ns", (getter)Event_get_int, NULL, NULL, (void *)5},
    {"ts_mono_ns", (getter)Event_get_int, NULL, NULL, (void *)6},
    {"run_id", (getter)Event_get_id, NULL, "uuid.UUID or None", (void *)0},
    {"parent_run_id", (getter)Event_get_id, NULL, "uuid.UUID or None", (void *)1},
    {"trace_id", (getter)Event_get_id, NULL, "uuid.UUID or None", (void *)2},
    EVG(provider, NULL), EVG(model, NULL), EVG(user, NULL), EVG(session, NULL),
    EVG(agent, NULL), EVG(tenant, NULL), EVG(request_id, NULL),
    EVG(name, "tool, chain, custom event name or error type"),
    EVG(preview, "the text's start (cut to the event's field)"),
    EVG(body, "the body bytes (sections, docs/bodies.md) or None"),
    EVG(text, "the whole text (body text section, else the preview)"),
    EVG(messages, "chat messages JSON or None"),
    EVG(system, "an LLM start's system instructions (JSON parts or text) or None"),
    EVG(response_id, "an llm_end's provider response id or None"),
    EVG(skipped_sections, "body sections of a type this build does not know (a newer producer's): their count"),
    EVG(tags, "list of the run's tags (start events)"),
    EVG(metadata, "dict of the run's metadata (start events)"),
    EVG(usage, "llm_end: dict of the reported counts (absent keys were not reported)"),
    {"http_status", (getter)Event_get_kindnum, NULL, "*_error: HTTP status (0 = none)", (void *)0},
    {"token_index", (getter)Event_get_kindnum, NULL, "llm_new_token: chunk index", (void *)1},
    {"document_count", (getter)Event_get_kindnum, NULL, "retriever_end", (void *)2},
    {"attempt", (getter)Event_get_kindnum, NULL, "retry", (void *)3},
    {"backoff_ns", (getter)Event_get_kindnum, NULL, "retry", (void *)4},
    {NULL, NULL, NULL, NULL, NULL}};

static PyTypeObject EventType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "cbus.Event",
    .tp_basicsize = sizeof(Event),
    .tp_dealloc = (destructor)Event_dealloc,
    .tp_repr = (reprfunc)Event_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One event read from a bus (a copy: strings are decoded with 'replace').",
    .tp_getset = Event_getset,
};

static PyMethodDef Consumer_methods[] = {
    {"poll", (PyCFunction)(void (*)(void))Consumer_poll, METH_VARARGS | METH_KEYWORDS,
     "poll(max=64) -> list[Event]: what is there now (max 1..256), never blocks."},
    {"wait", (PyCFunction)(void (*)(void))Consumer_wait, METH_VARARGS | METH_KEYWORDS,
     "wait(timeout=None) -> bool: sleeps until events may be there (True) or timeout "
     "seconds pass (False); releases the GIL; Ctrl-C raises KeyboardInterrupt."},
    {"commit", (PyCFunction)Consumer_commit, METH_NOARGS,
     "Publishes the read position: what a lossless consumer lets producers overwrite, and "
     "where start='resume' continues."},
    {"stats", (PyCFunction)Consumer_stats, METH_NOARGS, "dict of cbus_consumer_stats"},
    {"close", (PyCFunction)Consumer_close, METH_NOARGS, "Detaches; a second close does nothing."},
    {"__enter__", (PyCFunction)Producer_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)Consumer_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL}};
#undef KWM

static PyGetSetDef Consumer_getset[] = {
    {"closed", (getter)Consumer_get_closed, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyTypeObject ConsumerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "cbus.Consumer",
    .tp_basicsize = sizeof(Consumer),
    .tp_dealloc = (destructor)Consumer_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Consumer(bus, name, *, lossless=False, start='newest', keep=False)\n\n"
              "Reads events.  Iterating blocks for the next event (GIL released); poll(max) "
              "returns what is there now.  keep=True parks the name and committed cursor at "
              "close so start='resume' continues after a restart or a crash.",
    .tp_methods = Consumer_methods,
    .tp_getset = Consumer_getset,
    .tp_init = (initproc)Consumer_init,
    .tp_new = PyType_GenericNew,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)Consumer_iternext,
};

static PyMethodDef module_methods[] = {
    {"create_bus", (PyCFunction)(void (*)(void))mod_create_bus, METH_VARARGS | METH_KEYWORDS,
     "create_bus(name, *, capacity=None, lanes=None, lossless_wait_ns=None, "
     "stall_timeout_ns=None, body_limit=None, exist_ok=False) -> bool"},
    {"destroy_bus", mod_destroy_bus, METH_O, "destroy_bus(name) -> bool (False: none)"},
    {"now_ns", mod_now_ns, METH_NOARGS, "Monotonic ns on the clock events are stamped with."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "cbus._cbus",
                                        "cbus C extension (use the cbus package).", -1,
                                        module_methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__cbus(void);
PyMODINIT_FUNC PyInit__cbus(void)
{
    PyObject *uuid = PyImport_ImportModule("uuid");
    if (!uuid)
        return NULL;
    uuid_class = PyObject_GetAttrString(uuid, "UUID");
    Py_DECREF(uuid);
    if (!uuid_class)
        return NULL;
    if (PyType_Ready(&ProducerType) || PyType_Ready(&RunType) || PyType_Ready(&EventType) ||
        PyType_Ready(&ConsumerType))
        return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (!m)
        return NULL;
    CbusError = PyErr_NewExceptionWithDoc("cbus.Error",
                                          "A cbus call failed: args are (errno, text, what).",
                                          PyExc_OSError, NULL);
    if (!CbusError || PyModule_AddObjectRef(m, "Error", CbusError) ||
        PyModule_AddObjectRef(m, "Producer", (PyObject *)&ProducerType) ||
        PyModule_AddObjectRef(m, "Run", (PyObject *)&RunType) ||
        PyModule_AddObjectRef(m, "Event", (PyObject *)&EventType) ||
        PyModule_AddObjectRef(m, "Consumer", (PyObject *)&ConsumerType) ||
        PyModule_AddStringConstant(m, "library_version", cbus_version())) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
