// Threads contending one pthread mutex with a known hold time; each thread
// times its own pthread_mutex_lock calls, and the main thread its
// pthread_join calls (futex sleeps too). Prints the threads' summed lock
// wait in ns, the contended acquisitions and the join wait in ns; then the
// acquisitions per second as `perf bench` prints its rates (the benchmark
// reads that line).
// Usage: mutex_contend THREADS SECONDS HOLD_US
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static double seconds;
static long hold_us;

struct result {
    long long wait_ns;
    long long slow;
    long long acquired;
};

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void spin_us(long us) {
    long long end = now_ns() + us * 1000;
    while (now_ns() < end) {
    }
}

// The contending function the profile must name.
__attribute__((noinline)) static void update_shared_counter(struct result *r) {
    long long t0 = now_ns();
    pthread_mutex_lock(&lock);
    long long waited = now_ns() - t0;
    r->wait_ns += waited;
    r->acquired++;
    if (waited > 20000)
        r->slow++;
    spin_us(hold_us);
    pthread_mutex_unlock(&lock);
}

static void *worker(void *arg) {
    struct result *r = arg;
    long long end = now_ns() + (long long)(seconds * 1e9);
    while (now_ns() < end) {
        update_shared_counter(r);
        spin_us(hold_us / 4);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s THREADS SECONDS HOLD_US\n", argv[0]);
        return 2;
    }
    int n = atoi(argv[1]);
    seconds = atof(argv[2]);
    hold_us = atol(argv[3]);
    pthread_t t[64];
    struct result r[64] = {0};
    if (n < 1 || n > 64)
        return 2;
    for (int i = 0; i < n; i++)
        pthread_create(&t[i], NULL, worker, &r[i]);
    long long wait = 0, slow = 0, join_ns = 0, acquired = 0;
    for (int i = 0; i < n; i++) {
        long long t0 = now_ns();
        pthread_join(t[i], NULL);
        join_ns += now_ns() - t0;
        wait += r[i].wait_ns;
        slow += r[i].slow;
        acquired += r[i].acquired;
    }
    printf("%lld %lld %lld\n", wait, slow, join_ns);
    printf("Averaged %.0f operations/sec\n", acquired / seconds);
    return 0;
}
