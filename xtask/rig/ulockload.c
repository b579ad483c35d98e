/* Guest load of the kernel matrix's user-lock test: futex waits with a
 * count and a length the test sets. Thread A takes a pthread mutex, lets
 * thread B know (a flag, no futex), holds the mutex HOLD_MS, releases it;
 * B, told, calls pthread_mutex_lock from wait_for_holder and sleeps in
 * the kernel until A releases. ROUNDS rounds, once PATH_GO exists; then
 * PATH_DONE is created and it sleeps until killed. Static, with frame
 * pointers in its own code, so it runs from a busybox initramfs.
 *
 * usage: ulockload ROUNDS HOLD_MS PATH_GO PATH_DONE
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static volatile int held, released;
static int rounds;
static long hold_ms;

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000 };
	nanosleep(&ts, NULL);
}

/* The function the test expects waits in. */
__attribute__((noinline)) static void wait_for_holder(void)
{
	pthread_mutex_lock(&lock);
	pthread_mutex_unlock(&lock);
}

static void *waiter(void *arg)
{
	(void)arg;
	for (int r = 0; r < rounds; r++) {
		while (held != r + 1)
			sched_yield();
		/* A holds the mutex now: this lock sleeps until it is released. */
		wait_for_holder();
		released = r + 1;
	}
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: %s ROUNDS HOLD_MS PATH_GO PATH_DONE\n", argv[0]);
		return 2;
	}
	rounds = atoi(argv[1]);
	hold_ms = atol(argv[2]);
	while (access(argv[3], F_OK) != 0)
		sleep_ms(10);
	pthread_t b;
	if (pthread_create(&b, NULL, waiter, NULL) != 0)
		return 1;
	for (int r = 0; r < rounds; r++) {
		pthread_mutex_lock(&lock);
		held = r + 1;
		/* Long enough for B to reach the lock and sleep there. */
		sleep_ms(hold_ms);
		pthread_mutex_unlock(&lock);
		while (released != r + 1)
			sched_yield();
	}
	FILE *done = fopen(argv[4], "w");
	if (done)
		fclose(done);
	/* B is through: joining it does not wait. */
	pthread_join(b, NULL);
	for (;;)
		pause();
}
