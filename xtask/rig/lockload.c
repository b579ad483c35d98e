/* Guest load of the kernel matrix's lock test: contention on a kernel
 * mutex with a count and a wait the test sets exactly. Thread A writes to a
 * pipe from a buffer registered with userfaultfd: pipe_write holds the
 * pipe's mutex while it copies the buffer, the copy faults, and the fault
 * waits for this program's handler. Thread B writes to the same pipe
 * meanwhile and waits for the mutex (its owner sleeps, so B sleeps too).
 * The handler resolves the fault HOLD_MS later. ROUNDS rounds, once
 * PATH_GO exists; then PATH_DONE is created and it sleeps until killed.
 * Static, so it runs from a busybox initramfs.
 *
 * usage: lockload ROUNDS HOLD_MS PATH_GO PATH_DONE
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096

static int pipefd[2];
static char *region;
static volatile int a_go = -1, a_done, b_go, b_done;

static void die(const char *what)
{
	perror(what);
	_exit(1);
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000 };
	nanosleep(&ts, NULL);
}

/* Thread A: in round r, a write from the r-th (missing) page. */
static void *writer_a(void *arg)
{
	(void)arg;
	for (;;) {
		while (a_go < 0)
			sleep_ms(1);
		int r = a_go;
		a_go = -1;
		if (write(pipefd[1], region + (size_t)r * PAGE, 64) != 64)
			die("write a");
		a_done = 1;
	}
	return NULL;
}

/* Thread B: one small write per round, started while A holds the mutex. */
static void *writer_b(void *arg)
{
	(void)arg;
	char c = 'b';
	for (;;) {
		while (!b_go)
			sleep_ms(1);
		b_go = 0;
		if (write(pipefd[1], &c, 1) != 1)
			die("write b");
		b_done = 1;
	}
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: lockload ROUNDS HOLD_MS PATH_GO PATH_DONE\n");
		return 2;
	}
	int rounds = atoi(argv[1]);
	long hold = atol(argv[2]);
	if (pipe(pipefd) != 0)
		die("pipe");
	/* Room for every round's writes: nobody reads until the end. */
	fcntl(pipefd[1], F_SETPIPE_SZ, 1 << 20);
	int uffd = syscall(SYS_userfaultfd, O_CLOEXEC);
	if (uffd < 0)
		die("userfaultfd");
	struct uffdio_api api = { .api = UFFD_API };
	if (ioctl(uffd, UFFDIO_API, &api) != 0)
		die("UFFDIO_API");
	region = mmap(NULL, (size_t)rounds * PAGE, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (region == MAP_FAILED)
		die("mmap");
	struct uffdio_register reg = {
		.range = { (uintptr_t)region, (uint64_t)rounds * PAGE },
		.mode = UFFDIO_REGISTER_MODE_MISSING,
	};
	if (ioctl(uffd, UFFDIO_REGISTER, &reg) != 0)
		die("UFFDIO_REGISTER");
	static char fill[PAGE];
	memset(fill, 'a', sizeof fill);
	pthread_t a, b;
	pthread_create(&a, NULL, writer_a, NULL);
	pthread_create(&b, NULL, writer_b, NULL);
	while (access(argv[3], F_OK) != 0)
		sleep_ms(10);
	for (int r = 0; r < rounds; r++) {
		a_done = 0;
		a_go = r;
		/* Then A is in the fault, holding the pipe's mutex. */
		struct pollfd p = { uffd, POLLIN, 0 };
		if (poll(&p, 1, 5000) != 1)
			die("no fault");
		struct uffd_msg msg;
		if (read(uffd, &msg, sizeof msg) != sizeof msg || msg.event != UFFD_EVENT_PAGEFAULT)
			die("uffd read");
		b_done = 0;
		b_go = 1;
		sleep_ms(hold);
		struct uffdio_copy copy = {
			.dst = msg.arg.pagefault.address & ~(uint64_t)(PAGE - 1),
			.src = (uintptr_t)fill,
			.len = PAGE,
		};
		if (ioctl(uffd, UFFDIO_COPY, &copy) != 0)
			die("UFFDIO_COPY");
		while (!a_done || !b_done)
			sleep_ms(1);
	}
	close(open(argv[4], O_CREAT | O_WRONLY, 0644));
	for (;;)
		pause();
}
