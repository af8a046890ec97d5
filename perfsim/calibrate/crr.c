/*
 * crr: TCP connect/request/response/close rate, as netperf's TCP_CRR measures it.
 *
 *   crr server PORT MESSAGE_BYTES
 *   crr client ADDRESS PORT MESSAGE_BYTES DURATION_S
 *
 * One transaction: socket(), connect(), write MESSAGE_BYTES, read the MESSAGE_BYTES response,
 * close().  Blocking sockets, one thread on each side.  The client closes first (after the
 * response), the server closes when it reads the client's FIN, so TIME_WAIT sockets pile up on
 * the client, as with netperf; the harness widens the client namespace's ephemeral port range
 * and sets tcp_tw_reuse=1 there (per-namespace sysctls), so the client never runs out of ports.
 *
 * The client runs for DURATION_S seconds and prints one JSON line:
 *   {"connections": N, "seconds": S, "errors": E, "latency_p50_s": X, "latency_p99_s": Y}
 * where the latency is the time of one whole transaction (socket() to close()).  It exits with
 * status 1 when no transaction completed.  The server runs until it is killed.
 * Compiled by perfsim.calibrate.measure with `gcc -O2`; C99 + POSIX only.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define IO_TIMEOUT_S 2

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Read exactly n bytes; returns n, or fewer at EOF, or -1 on error. */
static ssize_t read_full(int fd, char *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

static int write_full(int fd, const char *buf, size_t n)
{
    size_t put = 0;
    while (put < n) {
        ssize_t w = write(fd, buf + put, n - put);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -1;
        put += (size_t)w;
    }
    return 0;
}

static void set_timeouts(int fd)
{
    struct timeval tv = {IO_TIMEOUT_S, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv); /* also bounds connect() */
}

static long parse_long(const char *s, long lo, long hi, const char *what)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < lo || v > hi) {
        fprintf(stderr, "crr: bad %s '%s' (allowed %ld..%ld)\n", what, s, lo, hi);
        exit(2);
    }
    return v;
}

static int server(int port, size_t msg)
{
    char *buf = malloc(msg + 1);
    char drain[4096];
    int one = 1;
    struct sockaddr_in sa;
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    if (buf == NULL || ls < 0) {
        perror("crr server: socket");
        return 1;
    }
    memset(buf, 'r', msg + 1);
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_ANY);
    sa.sin_port = htons((unsigned short)port);
    if (bind(ls, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(ls, 4096) < 0) {
        perror("crr server: bind/listen");
        return 1;
    }
    for (;;) {
        int c = accept(ls, NULL, NULL);
        if (c < 0) {
            if (errno != EINTR && errno != ECONNABORTED)
                perror("crr server: accept");
            continue;
        }
        set_timeouts(c);
        if (read_full(c, buf, msg) == (ssize_t)msg && write_full(c, buf, msg) == 0) {
            /* wait for the client's close (its FIN), then close: TIME_WAIT stays client-side */
            while (read(c, drain, sizeof drain) > 0)
                ;
        }
        close(c);
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double percentile(const double *sorted, size_t n, double p)
{
    /* linear interpolation between closest ranks (numpy's default) */
    double pos = p / 100.0 * (double)(n - 1);
    size_t lo = (size_t)pos;
    size_t hi = lo + 1 < n ? lo + 1 : lo;
    double frac = pos - (double)lo;
    return sorted[lo] + (sorted[hi] - sorted[lo]) * frac;
}

static int client(const char *addr, int port, size_t msg, double duration_s)
{
    char *buf = malloc(msg + 1);
    size_t cap = 1 << 16, n = 0;
    double *lat = malloc(cap * sizeof *lat);
    long errors = 0;
    struct sockaddr_in sa;
    double start, end, deadline;
    if (buf == NULL || lat == NULL) {
        fprintf(stderr, "crr client: out of memory\n");
        return 1;
    }
    memset(buf, 'q', msg + 1);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)port);
    if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1) {
        fprintf(stderr, "crr client: bad IPv4 address '%s'\n", addr);
        return 2;
    }
    start = now_s();
    deadline = start + duration_s;
    end = start;
    while (end < deadline) {
        double t0 = now_s();
        int ok = 0;
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (s >= 0) {
            set_timeouts(s);
            ok = connect(s, (struct sockaddr *)&sa, sizeof sa) == 0 && write_full(s, buf, msg) == 0 &&
                 read_full(s, buf, msg) == (ssize_t)msg;
            close(s);
        }
        end = now_s();
        if (!ok) {
            if (++errors == 1)
                perror("crr client: first error");
            if (errors > 1000 && n == 0)
                break;
            continue;
        }
        if (n == cap) {
            double *grown = realloc(lat, 2 * cap * sizeof *lat);
            if (grown == NULL)
                break;
            lat = grown;
            cap *= 2;
        }
        lat[n++] = end - t0;
    }
    if (n == 0) {
        printf("{\"connections\": 0, \"seconds\": %.6f, \"errors\": %ld, \"latency_p50_s\": null, "
               "\"latency_p99_s\": null}\n", end - start, errors);
        return 1;
    }
    qsort(lat, n, sizeof *lat, cmp_double);
    printf("{\"connections\": %zu, \"seconds\": %.6f, \"errors\": %ld, \"latency_p50_s\": %.9f, "
           "\"latency_p99_s\": %.9f}\n", n, end - start, errors, percentile(lat, n, 50.0),
           percentile(lat, n, 99.0));
    return 0;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (argc == 4 && strcmp(argv[1], "server") == 0)
        return server((int)parse_long(argv[2], 1, 65535, "port"),
                      (size_t)parse_long(argv[3], 1, 1 << 20, "message size"));
    if (argc == 6 && strcmp(argv[1], "client") == 0) {
        double d = strtod(argv[5], NULL);
        if (!(d > 0 && d <= 36000)) {
            fprintf(stderr, "crr: bad duration '%s' (allowed > 0 .. 36000 s)\n", argv[5]);
            return 2;
        }
        return client(argv[2], (int)parse_long(argv[3], 1, 65535, "port"),
                      (size_t)parse_long(argv[4], 1, 1 << 20, "message size"), d);
    }
    fprintf(stderr, "usage: crr server PORT MESSAGE_BYTES | crr client ADDRESS PORT MESSAGE_BYTES DURATION_S\n");
    return 2;
}
