/* Two threads writing 4 KiB at offset 0 of one tmpfs file, thread i pinned
 * to CPU i: every write takes the inode's i_rwsem for writing, so each
 * thread contends for a lock the other owns. Runs until killed. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static int fd;

static void *writer(void *arg) {
    static char buf[4096];
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET((int)(long)arg, &set);
    if (sched_setaffinity(0, sizeof set, &set)) {
        perror("sched_setaffinity");
        exit(1);
    }
    for (;;)
        if (pwrite(fd, buf, sizeof buf, 0) != sizeof buf) {
            perror("pwrite");
            exit(1);
        }
    return NULL;
}

int main(void) {
    char path[] = "/dev/shm/hostprobe-inode-XXXXXX";
    pthread_t t[2];
    fd = mkstemp(path);
    if (fd < 0) {
        perror("mkstemp");
        return 1;
    }
    unlink(path);
    for (long i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, writer, (void *)i);
    pthread_join(t[0], NULL);
    return 0;
}
