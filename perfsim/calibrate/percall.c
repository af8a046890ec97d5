/* percall.c: per-call costs perfsim keeps as measured constants (perfsim.calibrate.percall).
 *
 * Run pinned to one CPU (taskset -c N percall ROUNDS [REMOTE_CPU]); prints medians over ROUNDS
 * rounds, in seconds:
 *   read_s    read() of a queued 64 B datagram from a loopback UDP socket;
 *   select_s  select() on that one readable socket before the read (iperf3's server loop):
 *             (select + read) - read;
 *   switch_s  one hand-over between two processes on the CPU: a pipe ping-pong's round trip
 *             minus two write + read pairs that do not block, halved — the wake-up of the
 *             sleeper and the switch out of the writer into it;
 *   wake_remote_s (only with REMOTE_CPU) what waking a task blocked on REMOTE_CPU, idle since it
 *             blocked, costs the waker: the write() that wakes it minus a write() that wakes
 *             nobody — try_to_wake_up's remote path and the IPI to the halted CPU (in a virtual
 *             machine, the exit of the sending vCPU that delivers it).
 * Only loopback and a pipe are used; nothing leaves the machine.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BATCH 200
#define PINGS 2000
#define WAKES 100

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

/* Seconds the waker pays per wake-up of a partner blocked on another, idle CPU (median over
 * WAKES ping-pongs): the waking write()'s duration minus that of a write() to a pipe nobody
 * waits on (p, drained untimed). */
static double remote_wake(int to, int back, int p[2]) {
    double wake[WAKES], solo[WAKES];
    char c = 0;
    for (int i = 0; i < WAKES; i++) {
        double t0 = now();
        if (write(to, &c, 1) != 1 || (wake[i] = now() - t0, read(back, &c, 1)) != 1) {
            fprintf(stderr, "percall: the partner on the remote cpu failed (is it online and allowed?)\n");
            exit(8);
        }
        t0 = now();
        if (write(p[1], &c, 1) != 1) exit(7);
        solo[i] = now() - t0;
        if (read(p[0], &c, 1) != 1) exit(7);
    }
    return median(wake, WAKES) - median(solo, WAKES);
}

/* A child that echoes every byte from `to` back on `back` until the pipe closes, pinned to cpu
 * (-1: where the parent runs). */
static pid_t partner(int to[2], int back[2], int cpu) {
    pid_t pid = fork();
    if (pid == 0) {
        char c;
        close(to[1]);
        close(back[0]);
        if (cpu >= 0) {
            cpu_set_t set;
            CPU_ZERO(&set);
            CPU_SET(cpu, &set);
            if (sched_setaffinity(0, sizeof set, &set)) _exit(1);
        }
        while (read(to[0], &c, 1) == 1)
            if (write(back[1], &c, 1) != 1) _exit(1);
        _exit(0);
    }
    close(to[0]);
    close(back[1]);
    return pid;
}

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 200;
    int remote = argc > 2 ? atoi(argv[2]) : -1;
    if (rounds < 1 || rounds > 100000 || argc > 3 || (argc > 2 && (remote < 0 || remote >= CPU_SETSIZE))) {
        fprintf(stderr, "usage: percall [ROUNDS 1..100000 [REMOTE_CPU]]\n");
        return 1;
    }
    double *rd = malloc(rounds * sizeof *rd), *sel = malloc(rounds * sizeof *sel), *sw = malloc(rounds * sizeof *sw);
    double *wr = malloc(rounds * sizeof *wr);
    int r = socket(AF_INET, SOCK_DGRAM, 0), s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (r < 0 || s < 0 || bind(r, (struct sockaddr *)&a, sizeof a) || getsockname(r, (struct sockaddr *)&a, &len)) {
        perror("socket");
        return 2;
    }
    int p[2], to[2], back[2], rto[2], rback[2];
    if (pipe(p) || pipe(to) || pipe(back)) {
        perror("pipe");
        return 2;
    }
    pid_t pid = partner(to, back, -1), rpid = -1;
    if (remote >= 0) { /* created after the first partner's fork, so that one never holds them */
        if (pipe(rto) || pipe(rback)) {
            perror("pipe");
            return 2;
        }
        rpid = partner(rto, rback, remote);
    }
    char c = 0;
    signal(SIGPIPE, SIG_IGN); /* a partner that failed is a write error, not a signal */
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
        if (rpid > 0) wr[k] = remote_wake(rto[1], rback[0], p);
    }
    int status = 0; /* the remote partner first: it holds a copy of to[1] */
    if (rpid > 0) {
        close(rto[1]);
        if (waitpid(rpid, &status, 0) != rpid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "percall: the partner on cpu %d failed (is it online and allowed?)\n", remote);
            return 8;
        }
    }
    close(to[1]);
    waitpid(pid, NULL, 0);
    printf("read_s %.9g\nselect_s %.9g\nswitch_s %.9g\n", median(rd, rounds), median(sel, rounds), median(sw, rounds));
    if (rpid > 0) printf("wake_remote_s %.9g\n", median(wr, rounds));
    return 0;
}
