/* Guest workload of the migration rig: writes a never-repeating 8-byte
 * counter into one 4 KiB page after another, round-robin over a buffer,
 * paced to a set number of pages per second. A fresh value each time, so
 * content sampling sees every write (rewriting identical bytes would not
 * change a page's hash). With THREADS > 1, each thread takes its own slice
 * of the buffer at its share of the rate (one per vCPU). Static, so it runs
 * from a busybox initramfs.
 *
 * usage: dirtier PAGES_PER_SECOND [BUFFER_MIB [THREADS]]
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

#define PAGE 4096
#define MAX_THREADS 64

struct slice {
	char *buf;
	size_t pages;
	double rate;
	uint64_t counter;
};

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *dirty(void *arg)
{
	struct slice *s = arg;
	double start = now();
	uint64_t done = 0;
	size_t next = 0;
	struct timespec tick = { 0, 1000000 };
	for (;;) {
		uint64_t due = (uint64_t)((now() - start) * s->rate);
		for (; done < due; done++) {
			*(volatile uint64_t *)(s->buf + next * PAGE) = s->counter++;
			next = next + 1 == s->pages ? 0 : next + 1;
		}
		nanosleep(&tick, NULL);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: dirtier PAGES_PER_SECOND [BUFFER_MIB [THREADS]]\n");
		return 2;
	}
	double rate = atof(argv[1]);
	size_t pages = (size_t)(argc > 2 ? atol(argv[2]) : 512) * 256;
	int threads = argc > 3 ? atoi(argv[3]) : 1;
	if (threads < 1 || threads > MAX_THREADS || pages < (size_t)threads) {
		fprintf(stderr, "dirtier: bad thread count %d\n", threads);
		return 2;
	}
	char *buf = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	/* First touch: every page resident and non-zero before the paced phase. */
	for (size_t i = 0; i < pages; i++)
		*(volatile uint64_t *)(buf + i * PAGE) = i + 1;
	static struct slice slices[MAX_THREADS];
	pthread_t ids[MAX_THREADS];
	size_t per = pages / threads;
	for (int t = 0; t < threads; t++) {
		slices[t].buf = buf + t * per * PAGE;
		slices[t].pages = t == threads - 1 ? pages - t * per : per;
		slices[t].rate = rate / threads;
		/* Values never repeat across threads either. */
		slices[t].counter = pages + 1 + ((uint64_t)t << 48);
	}
	printf("dirtier: steady rate=%.0f pages=%zu threads=%d\n", rate, pages, threads);
	fflush(stdout);
	for (int t = 1; t < threads; t++)
		if (pthread_create(&ids[t], NULL, dirty, &slices[t]) != 0) {
			perror("pthread_create");
			return 1;
		}
	dirty(&slices[0]);
	return 0;
}
