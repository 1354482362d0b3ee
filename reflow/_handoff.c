/*
 * reflow._handoff: a one-slot rendezvous between exactly two threads, the
 * event loop ("caller") and one inline handler thread ("worker").
 *
 * Why it exists: a synchronous inline handler runs off the event loop, so a
 * call is two thread hand-offs (loop -> worker -> loop). Parking both threads
 * in the kernel costs two wake-ups, and on a small VM an idle vCPU is slow to
 * wake (tens of microseconds). Here each side first spins for a bounded time,
 * with the GIL released, on an atomic state word; only when the spin window
 * passes does it park on a condition variable. The side that hands over
 * publishes the new state only after it has released the GIL, so the spinning
 * side takes an uncontended GIL when it sees the change: nobody waits on the
 * GIL itself.
 *
 * States (one call at a time):
 *
 *   EMPTY      nothing posted
 *   POSTED     an item is posted; the caller waits for it synchronously
 *   POSTED_D   an item is posted; nobody waits ("detached")
 *   RUNNING    the worker took the item; the caller waits for it
 *   RUNNING_D  the worker took the item; nobody waits
 *   DONE       the worker put the result in the slot for the waiting caller
 *
 * A caller whose wait passes its timeout detaches the call with one
 * compare-and-swap (POSTED -> POSTED_D, RUNNING -> RUNNING_D); the worker
 * finishing tries RUNNING -> DONE. Exactly one of them wins, so a call is
 * either answered through the slot or handed to the caller's other path
 * (`PENDING` returned to both sides), never both, never neither.
 *
 * Python objects are only touched with the GIL held: a reference is taken
 * before the GIL is released and the pointer handed over; the receiver owns
 * it.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#if defined(__linux__)
#include <sched.h> /* sched_getcpu: a read of the rseq area with glibc >= 2.35 */
#define HAVE_GETCPU 1
#endif

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

enum {
    EMPTY = 0,
    POSTED = 1,
    POSTED_D = 2,
    RUNNING = 3,
    RUNNING_D = 4,
    DONE = 5,
};

static PyObject *PENDING; /* the "not (yet) through the slot" marker */

typedef struct {
    PyObject_HEAD
    _Atomic int state;
    _Atomic int closed;
    _Atomic int caller_parked;
    _Atomic int worker_parked;
    /* The CPU each side last ran on while it waited (-1: not known). */
    _Atomic int caller_cpu;
    _Atomic int worker_cpu;
    PyObject *item;   /* caller -> worker, owned while in the slot */
    PyObject *result; /* worker -> caller, owned while in the slot */
    pthread_mutex_t mutex;
    pthread_cond_t caller_cond;
    pthread_cond_t worker_cond;
    int initialised;
    /* Spin back-off, each side's own (see spin_or_skip). */
    struct backoff {
        int skip;     /* waits left that do not spin */
        int penalty;  /* how many the next miss skips */
    } caller_backoff, worker_backoff;
    /* Counters, for tests and tuning: waits that ended while spinning, or parked. */
    Py_ssize_t caller_spun, caller_parked_n, worker_spun, worker_parked_n;
} Handoff;

static inline void
cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
    __asm__ __volatile__("yield" ::: "memory");
#else
    atomic_signal_fence(memory_order_seq_cst);
#endif
}

static inline int64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void
deadline_to_timespec(int64_t deadline_ns, struct timespec *ts)
{
#if defined(__APPLE__)
    /* No pthread_condattr_setclock: convert to the realtime clock. */
    struct timespec real;
    clock_gettime(CLOCK_REALTIME, &real);
    int64_t left = deadline_ns - now_ns();
    if (left < 0) {
        left = 0;
    }
    int64_t abs_ns = (int64_t)real.tv_sec * 1000000000 + real.tv_nsec + left;
    ts->tv_sec = (time_t)(abs_ns / 1000000000);
    ts->tv_nsec = (long)(abs_ns % 1000000000);
#else
    ts->tv_sec = (time_t)(deadline_ns / 1000000000);
    ts->tv_nsec = (long)(deadline_ns % 1000000000);
#endif
}

/* The worker waits for these states (or `closed`). */
static inline int
has_work(Handoff *h)
{
    int s = atomic_load(&h->state);
    return s == POSTED || s == POSTED_D || atomic_load(&h->closed);
}

static inline int
is_done(Handoff *h)
{
    return atomic_load(&h->state) == DONE;
}

static inline int
current_cpu(void)
{
#ifdef HAVE_GETCPU
    return sched_getcpu();
#else
    return -1;
#endif
}

/* Spin until `ready(h)` or `spin_ns` pass: 1 if ready, 0 if not, -1 if it
 * stopped early because the other side is on this CPU (see below). The clock is read
 * every few rounds only: a read costs about as much as a few pauses. Then
 * too this side notes its CPU in `mine`, and stops if the other side last
 * waited on this same CPU: the other is then not running (two threads do not
 * run on one CPU at once), and most likely queued behind this very spin. */
static int
spin(Handoff *h, int (*ready)(Handoff *), int64_t spin_ns, _Atomic int *mine,
     _Atomic int *other)
{
    if (ready(h)) {
        return 1;
    }
    if (spin_ns <= 0) {
        return 0;
    }
    int64_t until = now_ns() + spin_ns;
    for (;;) {
        int cpu = current_cpu();
        atomic_store_explicit(mine, cpu, memory_order_relaxed);
        if (cpu >= 0 && atomic_load_explicit(other, memory_order_relaxed) == cpu) {
            return ready(h) ? 1 : -1;
        }
        for (int i = 0; i < 16; i++) {
            cpu_relax();
            if (ready(h)) {
                return 1;
            }
        }
        if (now_ns() >= until) {
            return ready(h);
        }
    }
}

/* A spin that fails means the other thread was not running: the machine
 * has fewer free CPUs than spinning threads, and spinning only takes a CPU
 * from a thread that needs one. So after a miss the next waits skip the spin
 * (1, 2, 4 ... up to MAX_SKIP of them), and one that succeeds ends that. */
#define MAX_SKIP 64

static int
spin_or_skip(Handoff *h, int (*ready)(Handoff *), int64_t spin_ns, struct backoff *b,
             _Atomic int *mine, _Atomic int *other)
{
    if (spin_ns <= 0) {
        return ready(h);
    }
    if (b->skip > 0) {
        b->skip--;
        return ready(h);
    }
    int spun = spin(h, ready, spin_ns, mine, other);
    if (spun == 1) {
        b->penalty = 1;
        return 1;
    }
    if (spun < 0) {
        return 0; /* not a miss of the spin: it was cut short at once */
    }
    b->skip = b->penalty;
    if (b->penalty < MAX_SKIP) {
        b->penalty *= 2;
    }
    return 0;
}

/* Park until `ready(h)`; with deadline_ns < 0 without a time limit. 1 if
 * ready. The parked flag is set (seq_cst) before the state is read again,
 * and the other side reads the flag after it has stored the state: one of
 * the two sees the other's write, so a wake-up is never lost. */
static int
park(Handoff *h, int (*ready)(Handoff *), _Atomic int *parked, pthread_cond_t *cond,
     int64_t deadline_ns)
{
    struct timespec ts;
    int ok;
    if (deadline_ns >= 0) {
        deadline_to_timespec(deadline_ns, &ts);
    }
    pthread_mutex_lock(&h->mutex);
    atomic_store(parked, 1);
    while (!(ok = ready(h))) {
        if (deadline_ns < 0) {
            pthread_cond_wait(cond, &h->mutex);
        }
        else if (pthread_cond_timedwait(cond, &h->mutex, &ts) == ETIMEDOUT) {
            ok = ready(h);
            break;
        }
    }
    atomic_store(parked, 0);
    pthread_mutex_unlock(&h->mutex);
    return ok;
}

static void
wake(Handoff *h, _Atomic int *parked, pthread_cond_t *cond)
{
    if (atomic_load(parked)) {
        pthread_mutex_lock(&h->mutex);
        pthread_cond_signal(cond);
        pthread_mutex_unlock(&h->mutex);
    }
}

static int
spin_ns_arg(double seconds, int64_t *out)
{
    if (!(seconds >= 0.0) || seconds > 3600.0) {
        PyErr_SetString(PyExc_ValueError, "a wait must be between 0 and 3600 seconds");
        return -1;
    }
    *out = (int64_t)(seconds * 1e9);
    return 0;
}

/* --- the caller's side (the event loop) -------------------------------------- */

static int
post(Handoff *h, PyObject *item)
{
    if (atomic_load(&h->state) != EMPTY) {
        PyErr_SetString(PyExc_RuntimeError, "a call is already in progress");
        return -1;
    }
    if (atomic_load(&h->closed)) {
        PyErr_SetString(PyExc_RuntimeError, "the hand-off is closed");
        return -1;
    }
    Py_INCREF(item);
    h->item = item;
    return 0;
}

PyDoc_STRVAR(call_doc,
"call(item, spin, timeout, /)\n--\n\n"
"Hand ``item`` to the worker and wait for its result: spin for ``spin``\n"
"seconds, then park until ``timeout`` seconds have passed in all. Returns\n"
"the result, or PENDING if the call was not done by then: it is then\n"
"detached, and the worker's finish() returns PENDING instead.");

static PyObject *
Handoff_call(Handoff *h, PyObject *const *args, Py_ssize_t nargs)
{
    double spin_s, timeout_s;
    int64_t spin_for, timeout;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "call() takes 3 arguments");
        return NULL;
    }
    spin_s = PyFloat_AsDouble(args[1]);
    timeout_s = PyFloat_AsDouble(args[2]);
    if (PyErr_Occurred() || spin_ns_arg(spin_s, &spin_for) < 0 ||
        spin_ns_arg(timeout_s, &timeout) < 0) {
        return NULL;
    }
    if (post(h, args[0]) < 0) {
        return NULL;
    }
    if (spin_for > timeout) {
        spin_for = timeout;
    }
    PyObject *result = NULL;
    Py_BEGIN_ALLOW_THREADS
    int64_t started = now_ns();
    atomic_store_explicit(&h->caller_cpu, current_cpu(), memory_order_relaxed);
    /* Published with the GIL already released: a spinning worker gets it
     * uncontended. */
    atomic_store(&h->state, POSTED);
    wake(h, &h->worker_parked, &h->worker_cond);
    int ok = spin_or_skip(h, is_done, spin_for, &h->caller_backoff, &h->caller_cpu,
                          &h->worker_cpu);
    if (ok) {
        h->caller_spun++;
    }
    else if (timeout > spin_for) {
        h->caller_parked_n++;
        ok = park(h, is_done, &h->caller_parked, &h->caller_cond, started + timeout);
    }
    if (!ok) {
        /* Detach, unless the worker finished just now. */
        for (;;) {
            int s = atomic_load(&h->state);
            int to = s == POSTED ? POSTED_D : s == RUNNING ? RUNNING_D : -1;
            if (to < 0) {
                break; /* DONE */
            }
            if (atomic_compare_exchange_weak(&h->state, &s, to)) {
                break;
            }
        }
        ok = is_done(h);
    }
    if (ok) {
        result = h->result;
        h->result = NULL;
        atomic_store(&h->state, EMPTY);
    }
    Py_END_ALLOW_THREADS
    if (result == NULL) {
        return Py_NewRef(PENDING);
    }
    return result;
}

PyDoc_STRVAR(send_doc,
"send(item, /)\n--\n\n"
"Hand ``item`` to the worker without waiting: its finish() returns PENDING.");

static PyObject *
Handoff_send(Handoff *h, PyObject *item)
{
    if (post(h, item) < 0) {
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    atomic_store(&h->state, POSTED_D);
    wake(h, &h->worker_parked, &h->worker_cond);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* --- the worker's side (the handler thread) ------------------------------------ */

/* With the GIL released: wait for an item (or closing) and take it; NULL
 * once closed. */
static PyObject *
take_item(Handoff *h, int64_t spin_for)
{
    for (;;) {
        if (spin_or_skip(h, has_work, spin_for, &h->worker_backoff, &h->worker_cpu,
                         &h->caller_cpu)) {
            h->worker_spun++;
        }
        else {
            h->worker_parked_n++;
            park(h, has_work, &h->worker_parked, &h->worker_cond, -1);
        }
        if (atomic_load(&h->closed)) {
            return NULL;
        }
        int s = atomic_load(&h->state);
        if (s == POSTED || s == POSTED_D) {
            /* The caller may detach POSTED meanwhile: then take POSTED_D. */
            int to = s == POSTED ? RUNNING : RUNNING_D;
            if (atomic_compare_exchange_strong(&h->state, &s, to)) {
                atomic_store_explicit(&h->worker_cpu, current_cpu(), memory_order_relaxed);
                PyObject *item = h->item;
                h->item = NULL;
                return item;
            }
        }
    }
}

PyDoc_STRVAR(wait_doc,
"wait(spin, /)\n--\n\n"
"Wait for the next item: spin for ``spin`` seconds, then park. Returns the\n"
"item, or None once the hand-off is closed.");

static PyObject *
Handoff_wait(Handoff *h, PyObject *arg)
{
    int64_t spin_for;
    double spin_s = PyFloat_AsDouble(arg);
    if (PyErr_Occurred() || spin_ns_arg(spin_s, &spin_for) < 0) {
        return NULL;
    }
    PyObject *item;
    Py_BEGIN_ALLOW_THREADS
    item = take_item(h, spin_for);
    Py_END_ALLOW_THREADS
    if (item == NULL) {
        Py_RETURN_NONE;
    }
    return item;
}

PyDoc_STRVAR(finish_doc,
"finish(result, spin, /)\n--\n\n"
"Hand ``result`` to the waiting caller and wait for the next item (as\n"
"wait()). If the caller has detached the call, returns PENDING at once\n"
"instead: the result must reach the caller some other way.");

static PyObject *
Handoff_finish(Handoff *h, PyObject *const *args, Py_ssize_t nargs)
{
    int64_t spin_for;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "finish() takes 2 arguments");
        return NULL;
    }
    double spin_s = PyFloat_AsDouble(args[1]);
    if (PyErr_Occurred() || spin_ns_arg(spin_s, &spin_for) < 0) {
        return NULL;
    }
    int s = atomic_load(&h->state);
    if (s != RUNNING && s != RUNNING_D) {
        PyErr_SetString(PyExc_RuntimeError, "no call is running");
        return NULL;
    }
    PyObject *result = args[0];
    Py_INCREF(result);
    PyObject *item = NULL;
    int detached = 0;
    Py_BEGIN_ALLOW_THREADS
    h->result = result;
    int expected = RUNNING;
    if (atomic_compare_exchange_strong(&h->state, &expected, DONE)) {
        if (atomic_load(&h->caller_parked)) {
            /* The caller has to be woken, and needs a CPU for that: this
             * thread spinning could be what keeps it from one. */
            spin_for = 0;
            wake(h, &h->caller_parked, &h->caller_cond);
        }
        item = take_item(h, spin_for);
    }
    else {
        /* RUNNING_D: nobody reads the slot; this side ends the call. */
        h->result = NULL;
        atomic_store(&h->state, EMPTY);
        detached = 1;
    }
    Py_END_ALLOW_THREADS
    if (detached) {
        Py_DECREF(result);
        return Py_NewRef(PENDING);
    }
    if (item == NULL) {
        Py_RETURN_NONE;
    }
    return item;
}

PyDoc_STRVAR(close_doc,
"close()\n--\n\n"
"Make the worker's waits return None from now on (any thread may call it).");

static PyObject *
Handoff_close(Handoff *h, PyObject *Py_UNUSED(ignored))
{
    Py_BEGIN_ALLOW_THREADS
    atomic_store(&h->closed, 1);
    pthread_mutex_lock(&h->mutex);
    pthread_cond_broadcast(&h->worker_cond);
    pthread_mutex_unlock(&h->mutex);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

PyDoc_STRVAR(stats_doc,
"stats()\n--\n\n"
"How the waits so far ended: {'caller_spun', 'caller_parked', 'worker_spun',\n"
"'worker_parked'} (the worker's counts read from another thread are a\n"
"snapshot).");

static PyObject *
Handoff_stats(Handoff *h, PyObject *Py_UNUSED(ignored))
{
    return Py_BuildValue("{snsnsnsn}", "caller_spun", h->caller_spun, "caller_parked",
                         h->caller_parked_n, "worker_spun", h->worker_spun, "worker_parked",
                         h->worker_parked_n);
}

static PyObject *
Handoff_get_closed(Handoff *h, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(atomic_load(&h->closed));
}

/* --- the type ------------------------------------------------------------------ */

static PyObject *
Handoff_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    if (PyTuple_GET_SIZE(args) != 0 || (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0)) {
        PyErr_SetString(PyExc_TypeError, "Handoff() takes no arguments");
        return NULL;
    }
    Handoff *h = (Handoff *)type->tp_alloc(type, 0);
    if (h == NULL) {
        return NULL;
    }
    atomic_init(&h->state, EMPTY);
    atomic_init(&h->closed, 0);
    atomic_init(&h->caller_parked, 0);
    atomic_init(&h->worker_parked, 0);
    atomic_init(&h->caller_cpu, -1);
    atomic_init(&h->worker_cpu, -1);
    h->item = h->result = NULL;
    h->caller_backoff.skip = h->worker_backoff.skip = 0;
    h->caller_backoff.penalty = h->worker_backoff.penalty = 1;
    h->caller_spun = h->caller_parked_n = h->worker_spun = h->worker_parked_n = 0;
    pthread_condattr_t attr;
    if (pthread_mutex_init(&h->mutex, NULL) != 0 || pthread_condattr_init(&attr) != 0) {
        Py_DECREF(h);
        return PyErr_NoMemory();
    }
#if !defined(__APPLE__)
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
#endif
    int failed = pthread_cond_init(&h->caller_cond, &attr) != 0;
    if (!failed && pthread_cond_init(&h->worker_cond, &attr) != 0) {
        pthread_cond_destroy(&h->caller_cond);
        failed = 1;
    }
    pthread_condattr_destroy(&attr);
    if (failed) {
        pthread_mutex_destroy(&h->mutex);
        Py_DECREF(h);
        return PyErr_NoMemory();
    }
    h->initialised = 1;
    return (PyObject *)h;
}

static void
Handoff_dealloc(Handoff *h)
{
    /* Only reached when neither thread holds a reference, so neither waits. */
    Py_CLEAR(h->item);
    Py_CLEAR(h->result);
    if (h->initialised) {
        pthread_cond_destroy(&h->caller_cond);
        pthread_cond_destroy(&h->worker_cond);
        pthread_mutex_destroy(&h->mutex);
    }
    Py_TYPE(h)->tp_free((PyObject *)h);
}

static PyMethodDef Handoff_methods[] = {
    {"call", (PyCFunction)(void (*)(void))Handoff_call, METH_FASTCALL, call_doc},
    {"send", (PyCFunction)Handoff_send, METH_O, send_doc},
    {"wait", (PyCFunction)Handoff_wait, METH_O, wait_doc},
    {"finish", (PyCFunction)(void (*)(void))Handoff_finish, METH_FASTCALL, finish_doc},
    {"close", (PyCFunction)Handoff_close, METH_NOARGS, close_doc},
    {"stats", (PyCFunction)Handoff_stats, METH_NOARGS, stats_doc},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Handoff_getset[] = {
    {"closed", (getter)Handoff_get_closed, NULL, "Whether close() was called.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyDoc_STRVAR(Handoff_doc,
"Handoff()\n--\n\n"
"A one-slot rendezvous between a caller thread and one worker thread that\n"
"spins (the GIL released) for a bounded time before it parks.");

static PyTypeObject HandoffType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "reflow._handoff.Handoff",
    .tp_basicsize = sizeof(Handoff),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = Handoff_doc,
    .tp_new = Handoff_new,
    .tp_dealloc = (destructor)Handoff_dealloc,
    .tp_methods = Handoff_methods,
    .tp_getset = Handoff_getset,
};

static struct PyModuleDef handoff_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "reflow._handoff",
    .m_doc = "A spin-then-park hand-off between the event loop and a handler thread.",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__handoff(void)
{
    if (PyType_Ready(&HandoffType) < 0) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&handoff_module);
    if (module == NULL) {
        return NULL;
    }
    if (PENDING == NULL) {
        PENDING = PyObject_CallNoArgs((PyObject *)&PyBaseObject_Type);
        if (PENDING == NULL) {
            Py_DECREF(module);
            return NULL;
        }
    }
    if (PyModule_AddObjectRef(module, "PENDING", PENDING) < 0 ||
        PyModule_AddObjectRef(module, "Handoff", (PyObject *)&HandoffType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
