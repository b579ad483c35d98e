/* argv[1] threads spinning in one process, the first pinned to CPU
 * argv[2], the second to CPU argv[3], and so on (a CPU list as long as the
 * threads). Prints the pid, runs until killed. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static void *spin(void *arg) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET((int)(long)arg, &set);
    if (sched_setaffinity(0, sizeof set, &set)) {
        perror("sched_setaffinity");
        exit(1);
    }
    for (volatile unsigned long n = 0;; n++)
        ;
    return NULL;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 0;
    pthread_t t;
    if (n < 1 || argc != n + 2) {
        fprintf(stderr, "usage: spin_threads N CPU...\n");
        return 2;
    }
    for (int i = 0; i < n; i++)
        if (pthread_create(&t, NULL, spin, (void *)(long)atoi(argv[i + 2])))
            return 1;
    printf("%d\n", (int)getpid());
    fflush(stdout);
    pthread_join(t, NULL);
    return 0;
}
