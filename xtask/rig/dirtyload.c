/* Guest load of the kernel matrix's dirtying test, with counts the test
 * sets exactly: once PATH_GO exists, 8 MiB written (buffered) to FILE, a
 * block device or file none of whose pages is dirty yet; 4096 write faults
 * on never-touched anonymous pages; 4096 on pages first read (mapped to the
 * zero page, so present and write-protected). Then it creates PATH_DONE
 * and sleeps until killed. Static, so it runs from a busybox initramfs.
 *
 * usage: dirtyload FILE PATH_GO PATH_DONE
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGE 4096
#define FILE_BYTES (8 << 20)
#define PAGES 4096

static char data[1 << 20];

static char *anon(void)
{
	char *p = mmap(NULL, (size_t)PAGES * PAGE, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		perror("mmap");
		_exit(1);
	}
	return p;
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: dirtyload FILE PATH_GO PATH_DONE\n");
		return 2;
	}
	int fd = open(argv[1], O_WRONLY);
	if (fd < 0) {
		perror(argv[1]);
		return 1;
	}
	memset(data, 7, sizeof data);
	/* Both mappings exist before the window: only the writes fault in it. */
	char *fresh = anon();
	char *cow = anon();
	while (access(argv[2], F_OK) != 0)
		usleep(10000);
	for (int written = 0; written < FILE_BYTES;) {
		ssize_t n = write(fd, data, sizeof data);
		if (n <= 0) {
			perror("write");
			return 1;
		}
		written += n;
	}
	for (int i = 0; i < PAGES; i++)
		*(volatile char *)(fresh + (size_t)i * PAGE) = 1;
	for (int i = 0; i < PAGES; i++) {
		(void)*(volatile char *)(cow + (size_t)i * PAGE);
		*(volatile char *)(cow + (size_t)i * PAGE) = 1;
	}
	close(open(argv[3], O_CREAT | O_WRONLY, 0644));
	for (;;)
		pause();
}
