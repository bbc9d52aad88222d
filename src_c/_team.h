/* A team of two threads: the caller's thread and one helper thread, started on first use.
 * Used for the LSTM/GRU time loops (_rnn.pxi) and the epochs of mid-sized Dense models
 * (_train.pxi). A recurrent step is a chain of small GEMMs and cell passes (W6's LSTM: ~59 µs of
 * work per step on one core, 100 steps per batch) that no BLAS call can spread over two cores;
 * the team splits every step by units and meets once per step. A Dense step is a sequence of
 * phases cut in chunks that either thread takes (fastbp_chunks, below; _train.pxi).
 *
 * Why not OpenMP or BLAS's pool: a second pool that spins beside OpenBLAS's spinning workers
 * fights it for the cores (an OpenMP epilogue alternating with a threaded sgemm ran 25-30x
 * slower). So the team is used only where no BLAS call ran lately (fastbp_blas_called stamps
 * each one; OpenBLAS's idle workers spin for ~2^28 cycles), its regions make no BLAS call, and
 * it waits by spinning only briefly. */
#ifndef FASTBP_TEAM_H
#define FASTBP_TEAM_H

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <time.h>

typedef void (*fastbp_job)(void *ctx, int tid);

static int fastbp_team_wanted = 0;     /* set by set_team_threads: 2 = use the team */
static int fastbp_team_state = 0;      /* 0 not started, 1 running, -1 could not start */
static pthread_t fastbp_team_helper;
static pthread_mutex_t fastbp_team_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t fastbp_team_cv = PTHREAD_COND_INITIALIZER;
static pthread_mutex_t fastbp_team_busy = PTHREAD_MUTEX_INITIALIZER; /* one region at a time */
static atomic_ulong fastbp_team_gen, fastbp_team_done;
static atomic_int fastbp_team_sleeping;
static fastbp_job fastbp_team_fn;
static void *fastbp_team_ctx;
static atomic_llong fastbp_last_blas_ns; /* when gemm_rm last called BLAS (CLOCK_MONOTONIC) */
static long long fastbp_team_quiet_ns = 250000000LL; /* no team this soon after a BLAS call */
static atomic_ulong fastbp_team_regions;             /* regions run on the team (for tests) */
static long long fastbp_team_helper_late_ns = 0;     /* tests: the helper starts each job late */
static int fastbp_team_cpu = -1; /* the caller's CPU when the helper was last kept off it */
#ifdef __linux__
static cpu_set_t fastbp_team_cpus; /* the CPUs the helper was last allowed (valid: cpu >= 0) */
#endif

static inline long long fastbp_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* A flag one thread sets and another reads (the team's stop decision: _train.pxi) */
static inline int fastbp_flag_get(const int *flag) {
    return __atomic_load_n(flag, __ATOMIC_ACQUIRE);
}
static inline void fastbp_flag_set(int *flag, int value) {
    __atomic_store_n(flag, value, __ATOMIC_RELEASE);
}

static inline void fastbp_blas_called(void) {
    atomic_store_explicit(&fastbp_last_blas_ns, fastbp_now_ns(), memory_order_relaxed);
}

/* Set in a thread while it runs the serial fallback of work the team refused (BLAS ran within
 * the quiet time, say): gemm_rm then keeps that work's products off BLAS (the small-GEMM
 * kernel takes them, gemm_noblas). Else the fallback's own BLAS calls (an LSTM's input
 * projection and weight gradients, W3's layers) would be stamped and refuse the team the next
 * region too, so that a fit started within 0.25 s of a BLAS call would stay serial to its end
 * (W6 right after W5 in the runner: 8-9 ms a step instead of 5). fastbp_blas_avoid(1) sets it
 * and returns the old value for fastbp_blas_restore. */
static __thread int fastbp_no_blas = 0;
static inline int fastbp_blas_avoid(int avoid) {
    int old = fastbp_no_blas;
    if (avoid) fastbp_no_blas = 1;
    return old;
}
static inline void fastbp_blas_restore(int old) { fastbp_no_blas = old; }
static inline int fastbp_blas_avoided(void) { return fastbp_no_blas; }

static inline void fastbp_pause(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* One check of a wait: a pause for the first ~50k (tens of µs), then the core yielded on every
 * further one (the other thread was descheduled). */
static inline void fastbp_backoff(long *spins) {
    if (++*spins < 50000) fastbp_pause();
    else sched_yield();
}

/* Spin until *v != old (fastbp_backoff). */
static inline void fastbp_wait_change(atomic_ulong *v, unsigned long old) {
    long spins = 0;
    while (atomic_load_explicit(v, memory_order_acquire) == old) fastbp_backoff(&spins);
}

/* Helper: run each new job as thread 1; between jobs spin 2 ms (a training step's next region
 * comes sooner: W6's median step 6.5-6.9 -> 5.4-6.5 ms against 200 µs, where the helper slept
 * through Adam and the Python between steps), then sleep on the condition variable; at once
 * where fastbp called BLAS meanwhile (its pool's workers want the core this one spins on: a
 * 32x784x100 epoch right after a team epoch took 3x as long). */
static void *fastbp_team_main(void *arg) {
    (void)arg;
    unsigned long seen = 0;
    for (;;) {
        long long t0 = fastbp_now_ns();
        long spins = 0;
        while (atomic_load_explicit(&fastbp_team_gen, memory_order_acquire) == seen) {
            fastbp_pause();
            if (++spins % 256 == 0 &&
                (fastbp_now_ns() - t0 > 2000000 ||
                 atomic_load_explicit(&fastbp_last_blas_ns, memory_order_relaxed) > t0)) {
                pthread_mutex_lock(&fastbp_team_mu);
                atomic_store(&fastbp_team_sleeping, 1);
                while (atomic_load(&fastbp_team_gen) == seen)
                    pthread_cond_wait(&fastbp_team_cv, &fastbp_team_mu);
                atomic_store(&fastbp_team_sleeping, 0);
                pthread_mutex_unlock(&fastbp_team_mu);
            }
        }
        seen = atomic_load_explicit(&fastbp_team_gen, memory_order_acquire);
        if (fastbp_team_helper_late_ns > 0) { /* tests: a helper whose core was taken */
            struct timespec ts = {fastbp_team_helper_late_ns / 1000000000LL,
                                  fastbp_team_helper_late_ns % 1000000000LL};
            nanosleep(&ts, NULL);
        }
        fastbp_team_fn(fastbp_team_ctx, 1);
        atomic_store_explicit(&fastbp_team_done, seen, memory_order_release);
    }
    return NULL;
}

/* A fork()ed child has no helper thread: start afresh there. */
static void fastbp_team_after_fork(void) {
    fastbp_team_state = 0;
    fastbp_team_cpu = -1;
    atomic_store(&fastbp_team_gen, 0);
    atomic_store(&fastbp_team_done, 0);
    atomic_store(&fastbp_team_sleeping, 0);
    pthread_mutex_init(&fastbp_team_mu, NULL);
    pthread_cond_init(&fastbp_team_cv, NULL);
    pthread_mutex_init(&fastbp_team_busy, NULL);
}

static int fastbp_team_start(void) {
    if (fastbp_team_state == 0) {
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&fastbp_team_helper, &attr, fastbp_team_main, NULL) == 0) {
            static int registered = 0;
            if (!registered) {
                pthread_atfork(NULL, NULL, fastbp_team_after_fork);
                registered = 1;
            }
            fastbp_team_state = 1;
        } else {
            fastbp_team_state = -1;
        }
        pthread_attr_destroy(&attr);
    }
    return fastbp_team_state == 1;
}

/* Keep the helper off the caller's CPU. A helper woken from its sleep was often placed on the
 * waker's CPU (the scheduler's wake-affine choice), and the two then spun against each other
 * for the whole region: meetings of 3-40 µs instead of ~0.1 µs, digits epochs 3x slower than
 * one thread (measured: regions of 2000 meetings after a 20 ms pause, 29 of 50 slow). The
 * helper may run on any CPU the caller may, but the one the caller is on now (one system call
 * to ask, a second only when that set changes). Returns 0 where the caller may use one CPU
 * only (taskset after import): two spinning threads on one CPU, so the region runs serially. */
static int fastbp_team_place(void) {
#ifdef __linux__
    int cpu = sched_getcpu();
    cpu_set_t set;
    if (cpu < 0 || sched_getaffinity(0, sizeof set, &set) != 0) return 1; /* cannot tell */
    CPU_CLR(cpu, &set);
    if (CPU_COUNT(&set) == 0) return 0;
    if (fastbp_team_cpu >= 0 && CPU_EQUAL(&set, &fastbp_team_cpus)) return 1;
    if (pthread_setaffinity_np(fastbp_team_helper, sizeof set, &set) == 0) {
        fastbp_team_cpus = set;
        fastbp_team_cpu = cpu;
    }
#endif
    return 1;
}

/* For tests: in[i] = 1 where the helper may run on CPU i (i < n); returns 0, or -1 where there
 * is no helper or no way to ask. */
static int fastbp_team_helper_cpus(unsigned char *in, int n) {
#ifdef __linux__
    cpu_set_t set;
    if (fastbp_team_state != 1 ||
        pthread_getaffinity_np(fastbp_team_helper, sizeof set, &set) != 0)
        return -1;
    for (int i = 0; i < n; i++) in[i] = i < CPU_SETSIZE && CPU_ISSET(i, &set);
    return 0;
#else
    (void)in;
    (void)n;
    return -1;
#endif
}

/* Run fn(ctx, 0) here and fn(ctx, 1) on the helper, and return 1 when both are done; or return
 * 0 without running anything where the team is off, busy (another thread's region), could not
 * start, BLAS ran within the last 0.25 s (its workers may still spin on the other core), or the
 * caller may use one CPU only. */
static int fastbp_team_run(fastbp_job fn, void *ctx) {
    if (fastbp_team_wanted < 2) return 0;
    if (fastbp_now_ns() - atomic_load_explicit(&fastbp_last_blas_ns, memory_order_relaxed)
        < fastbp_team_quiet_ns)
        return 0;
    if (pthread_mutex_trylock(&fastbp_team_busy) != 0) return 0;
    if (!fastbp_team_start()) {
        pthread_mutex_unlock(&fastbp_team_busy);
        return 0;
    }
    if (!fastbp_team_place()) {
        pthread_mutex_unlock(&fastbp_team_busy);
        return 0;
    }
    fastbp_team_fn = fn;
    fastbp_team_ctx = ctx;
    pthread_mutex_lock(&fastbp_team_mu); /* no wake-up lost between its check and its wait */
    unsigned long gen = atomic_fetch_add(&fastbp_team_gen, 1) + 1;
    if (atomic_load(&fastbp_team_sleeping)) pthread_cond_signal(&fastbp_team_cv);
    pthread_mutex_unlock(&fastbp_team_mu);
    fn(ctx, 0);
    fastbp_wait_change(&fastbp_team_done, gen - 1);
    atomic_fetch_add(&fastbp_team_regions, 1);
    pthread_mutex_unlock(&fastbp_team_busy);
    return 1;
}

/* The two threads of a region meet: each returns once both have arrived. */
typedef struct {
    atomic_int arrived;
    atomic_ulong phase;
} fastbp_barrier;

static inline void fastbp_barrier_init(fastbp_barrier *b) {
    atomic_init(&b->arrived, 0);
    atomic_init(&b->phase, 0);
}

static inline void fastbp_barrier_wait(fastbp_barrier *b) {
    unsigned long ph = atomic_load_explicit(&b->phase, memory_order_acquire);
    if (atomic_fetch_add_explicit(&b->arrived, 1, memory_order_acq_rel) == 1) {
        atomic_store_explicit(&b->arrived, 0, memory_order_relaxed);
        atomic_store_explicit(&b->phase, ph + 1, memory_order_release);
    } else {
        fastbp_wait_change(&b->phase, ph);
    }
}

/* Shared work: the region's work as a sequence of phases, each cut in chunks that either thread
 * takes as it comes free; a phase ends when all its chunks are finished. Unlike a meeting,
 * nobody waits for a thread that is not running (its core taken by another process or the
 * hypervisor) unless it holds a chunk: the other takes all the chunks it has not claimed, and
 * it skips the finished phases when it runs again. Thread 0 takes a phase's chunks from the
 * front, thread 1 from the back: at equal speed each does the same half every step (a layer's
 * same columns, whose weights and gradients then stay in its core's cache, as with fixed halves:
 * taken in one order by both, W3's steps were 2-5% slower, in-process A/B).
 *
 * The claims are one word: the phase's number (high 32 bits; phases are numbered from 1 in a
 * region, both threads know each one's number and chunk count), the chunks taken from the
 * front and from the back (16 bits each). The finished chunks of all phases are counted in one
 * sequence: a phase ends where that count reaches the chunks of all phases up to it. */
typedef struct {
    atomic_ullong claims; /* phase << 32 | taken from the back << 16 | taken from the front */
    atomic_llong done;    /* chunks finished, all phases */
} fastbp_chunks;

enum { FASTBP_MAX_CHUNKS = 0xffff }; /* chunks of one phase at most */

static inline void fastbp_chunks_init(fastbp_chunks *q) {
    atomic_init(&q->claims, 0);
    atomic_init(&q->done, 0);
}

/* Claim a chunk of phase ph (of n chunks), from the back or the front: its index, or -1 where
 * all are taken. A thread asks within a phase only once every earlier phase is finished, so a
 * word with an older phase's number is this phase's start; a newer number, its end. */
static inline int fastbp_claim(fastbp_chunks *q, unsigned int ph, int n, int back) {
    unsigned long long w = atomic_load_explicit(&q->claims, memory_order_relaxed), nw;
    for (;;) {
        int d = (int)((unsigned int)(w >> 32) - ph); /* (wraps around) */
        unsigned int f = d < 0 ? 0 : (unsigned int)(w & 0xffff);
        unsigned int b = d < 0 ? 0 : (unsigned int)((w >> 16) & 0xffff);
        if (d > 0 || (int)(f + b) >= n) return -1;
        if (back) b++;
        else f++;
        nw = (unsigned long long)ph << 32 | (unsigned long long)b << 16 | f;
        if (atomic_compare_exchange_weak_explicit(&q->claims, &w, nw, memory_order_acq_rel,
                                                  memory_order_relaxed))
            return back ? n - (int)b : (int)f - 1;
    }
}

/* A claimed chunk is finished: what it wrote is seen by whoever waits for it. */
static inline void fastbp_finished(fastbp_chunks *q) {
    atomic_fetch_add_explicit(&q->done, 1, memory_order_release);
}

/* Wait until end chunks are finished, all phases counted (fastbp_backoff). */
static inline void fastbp_wait_done(fastbp_chunks *q, long long end) {
    long spins = 0;
    while (atomic_load_explicit(&q->done, memory_order_acquire) < end) fastbp_backoff(&spins);
}

#endif
