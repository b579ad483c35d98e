/* Guest workload of the migration rig: writes a never-repeating 8-byte
 * counter into one 4 KiB page after another, round-robin over a buffer,
 * paced to a set number of pages per second. A fresh value each time, so
 * content sampling sees every write (rewriting identical bytes would not
 * change a page's hash). Static, so it runs from a busybox initramfs.
 *
 * usage: dirtier PAGES_PER_SECOND [BUFFER_MIB]
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

#define PAGE 4096

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: dirtier PAGES_PER_SECOND [BUFFER_MIB]\n");
		return 2;
	}
	double rate = atof(argv[1]);
	size_t pages = (size_t)(argc > 2 ? atol(argv[2]) : 512) * 256;
	char *buf = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	uint64_t counter = 1;
	/* First touch: every page resident and non-zero before the paced phase. */
	for (size_t i = 0; i < pages; i++)
		*(volatile uint64_t *)(buf + i * PAGE) = counter++;
	printf("dirtier: steady rate=%.0f pages=%zu\n", rate, pages);
	fflush(stdout);
	double start = now();
	uint64_t done = 0;
	size_t next = 0;
	struct timespec tick = { 0, 1000000 };
	for (;;) {
		uint64_t due = (uint64_t)((now() - start) * rate);
		for (; done < due; done++) {
			*(volatile uint64_t *)(buf + next * PAGE) = counter++;
			next = next + 1 == pages ? 0 : next + 1;
		}
		nanosleep(&tick, NULL);
	}
}
