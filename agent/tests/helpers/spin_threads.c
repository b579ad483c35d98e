/* argv[1] threads spinning in one process, the first pinned to CPU
 * argv[2], the second to CPU argv[3], and so on (a CPU list as long as the
 * threads). Run as `qemu-system-*`, it names its threads as QEMU names
 * vCPU threads (`CPU n/TCG`), a stand-in for a VM's vCPUs. Prints the
 * pid, runs until killed. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

static int vcpu_names;

static void *spin(void *arg) {
    long i = (long)arg >> 16, cpu = (long)arg & 0xffff;
    cpu_set_t set;
    if (vcpu_names) {
        char name[16];
        snprintf(name, sizeof name, "CPU %d/TCG", (int)(i & 0xff));
        prctl(PR_SET_NAME, name);
    }
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
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
    const char *base = strrchr(argv[0], '/');
    pthread_t t;
    if (n < 1 || argc != n + 2) {
        fprintf(stderr, "usage: spin_threads N CPU...\n");
        return 2;
    }
    vcpu_names = strncmp(base ? base + 1 : argv[0], "qemu-system-", 12) == 0;
    for (long i = 0; i < n; i++)
        if (pthread_create(&t, NULL, spin, (void *)(i << 16 | atoi(argv[i + 2]))))
            return 1;
    printf("%d\n", (int)getpid());
    fflush(stdout);
    pthread_join(t, NULL);
    return 0;
}
