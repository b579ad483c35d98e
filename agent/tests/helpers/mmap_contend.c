/* Test helper: two threads of one process mapping, touching and unmapping
 * memory in a loop, so that they contend for their mm's mmap_lock (a
 * rwsem), with short sleeps so that the process does not saturate the CPUs.
 * Runs until killed. */
#include <pthread.h>
#include <sys/mman.h>
#include <time.h>

static void *churn(void *arg)
{
	(void)arg;
	struct timespec pause = { 0, 1000000 };
	for (;;) {
		for (int i = 0; i < 50; i++) {
			char *p = mmap(0, 1 << 16, PROT_READ | PROT_WRITE,
				       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			if (p != MAP_FAILED) {
				p[0] = 1;
				munmap(p, 1 << 16);
			}
		}
		nanosleep(&pause, 0);
	}
	return 0;
}

int main(void)
{
	pthread_t t;
	pthread_create(&t, 0, churn, 0);
	churn(0);
	return 0;
}
