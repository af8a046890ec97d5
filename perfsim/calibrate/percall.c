/* percall.c: per-call costs perfsim keeps as measured constants (perfsim.calibrate.percall).
 *
 * Run pinned to one CPU (taskset -c N percall ROUNDS); prints three medians over ROUNDS rounds,
 * in seconds:
 *   read_s    read() of a queued 64 B datagram from a loopback UDP socket;
 *   select_s  select() on that one readable socket before the read (iperf3's server loop):
 *             (select + read) - read;
 *   switch_s  one hand-over between two processes on the CPU: a pipe ping-pong's round trip
 *             minus two write + read pairs that do not block, halved — the wake-up of the
 *             sleeper and the switch out of the writer into it.
 * Only loopback and a pipe are used; nothing leaves the machine.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BATCH 200
#define PINGS 2000

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, n, sizeof *v, cmp);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Seconds per datagram to read BATCH queued datagrams, with (use_select) or without select(). */
static double reads(int r, int s, struct sockaddr_in *a, int use_select) {
    char buf[64] = {0};
    for (int i = 0; i < BATCH; i++)
        if (sendto(s, buf, sizeof buf, 0, (struct sockaddr *)a, sizeof *a) != sizeof buf) exit(2);
    double t0 = now();
    for (int i = 0; i < BATCH; i++) {
        if (use_select) {
            fd_set f;
            FD_ZERO(&f);
            FD_SET(r, &f);
            struct timeval tv = {1, 0};
            if (select(r + 1, &f, NULL, NULL, &tv) != 1) exit(3);
        }
        if (read(r, buf, sizeof buf) != sizeof buf) exit(4);
    }
    return (now() - t0) / BATCH;
}

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 200;
    if (rounds < 1 || rounds > 100000) {
        fprintf(stderr, "usage: percall [ROUNDS 1..100000]\n");
        return 1;
    }
    double *rd = malloc(rounds * sizeof *rd), *sel = malloc(rounds * sizeof *sel), *sw = malloc(rounds * sizeof *sw);
    int r = socket(AF_INET, SOCK_DGRAM, 0), s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (r < 0 || s < 0 || bind(r, (struct sockaddr *)&a, sizeof a) || getsockname(r, (struct sockaddr *)&a, &len)) {
        perror("socket");
        return 2;
    }
    int p[2], to[2], back[2];
    if (pipe(p) || pipe(to) || pipe(back)) {
        perror("pipe");
        return 2;
    }
    pid_t pid = fork();
    if (pid == 0) { /* the partner: echo every byte until the pipe closes */
        char c;
        close(to[1]);
        close(back[0]);
        while (read(to[0], &c, 1) == 1)
            if (write(back[1], &c, 1) != 1) _exit(1);
        _exit(0);
    }
    close(to[0]);
    close(back[1]);
    char c = 0;
    for (int k = 0; k < rounds; k++) {
        double plain = reads(r, s, &a, 0), both = reads(r, s, &a, 1);
        rd[k] = plain;
        sel[k] = both - plain;
        double t0 = now();
        for (int i = 0; i < PINGS; i++) /* write + read on one process's own pipe: no blocking */
            if (write(p[1], &c, 1) != 1 || read(p[0], &c, 1) != 1) return 5;
        double solo = (now() - t0) / PINGS;
        t0 = now();
        for (int i = 0; i < PINGS; i++)
            if (write(to[1], &c, 1) != 1 || read(back[0], &c, 1) != 1) return 6;
        double rtt = (now() - t0) / PINGS;
        sw[k] = (rtt - 2 * solo) / 2;
    }
    close(to[1]);
    waitpid(pid, NULL, 0);
    printf("read_s %.9g\nselect_s %.9g\nswitch_s %.9g\n", median(rd, rounds), median(sel, rounds), median(sw, rounds));
    return 0;
}
