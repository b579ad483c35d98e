/* Two processes passing one byte back and forth over pipes: the server
 * (the child) pinned to argv[1]'s CPU, the client (the parent) to argv[2]'s.
 * Prints the server's pid, then runs until killed: each round trip wakes
 * the server once and lets it sleep once, a known shape of run-queue waits
 * and voluntary switches. */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static void pin(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set)) {
        perror("sched_setaffinity");
        exit(1);
    }
}

int main(int argc, char **argv) {
    int ping[2], pong[2];
    char c = 'x';
    if (argc != 3 || pipe(ping) || pipe(pong)) {
        fprintf(stderr, "usage: pingpong SERVER_CPU CLIENT_CPU\n");
        return 2;
    }
    pid_t server = fork();
    if (server < 0)
        return 1;
    if (server == 0) {
        /* Only the client holds the write end of ping: when it dies, the
         * server reads end-of-file and exits. */
        close(ping[1]);
        close(pong[0]);
        pin(atoi(argv[1]));
        while (read(ping[0], &c, 1) == 1)
            if (write(pong[1], &c, 1) != 1)
                return 1;
        return 0;
    }
    close(ping[0]);
    close(pong[1]);
    pin(atoi(argv[2]));
    printf("%d\n", server);
    fflush(stdout);
    for (;;)
        if (write(ping[1], &c, 1) != 1 || read(pong[0], &c, 1) != 1)
            return 1;
}
