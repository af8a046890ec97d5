/*
 * wake: how long an idle CPU takes to run a task woken from another CPU.
 *
 *   wake SAMPLES GAP_NS WAKER_CPU SLEEPER_CPU
 *
 * A sleeper thread pinned to SLEEPER_CPU blocks in read() on an eventfd.  The waker, pinned to
 * WAKER_CPU, sleeps GAP_NS (so both CPUs go idle, as between the transactions of a
 * request/response test), takes a CLOCK_MONOTONIC timestamp and writes the eventfd; the
 * sleeper takes a timestamp as soon as read() returns and answers on a second eventfd.  One
 * sample is the difference: try_to_wake_up, the IPI to the idle CPU, its wake-up (in a VM, the
 * hypervisor resuming the halted vCPU), the context switch and the return from read().
 *
 * Prints one delay per line, in nanoseconds, in the order measured.  Exits 2 on an error.
 * Compiled by perfsim.calibrate.measure with `gcc -O2 -pthread`; C99 + POSIX + Linux eventfd.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

static int wake_fd, answer_fd, samples, sleeper_cpu;
static volatile int64_t t_wake_ns;
static int64_t *delay_ns;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int pin(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

static void *sleeper(void *arg)
{
    uint64_t v, one = 1;
    (void)arg;
    if (pin(sleeper_cpu) != 0)
        exit(2);
    for (int i = 0; i < samples; i++) {
        if (read(wake_fd, &v, sizeof v) != sizeof v)
            exit(2);
        delay_ns[i] = now_ns() - t_wake_ns;
        if (write(answer_fd, &one, sizeof one) != sizeof one)
            exit(2);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: wake SAMPLES GAP_NS WAKER_CPU SLEEPER_CPU\n");
        return 2;
    }
    samples = atoi(argv[1]);
    long gap_ns = atol(argv[2]);
    int waker_cpu = atoi(argv[3]);
    sleeper_cpu = atoi(argv[4]);
    if (samples < 1 || gap_ns < 0 || gap_ns >= 1000000000) {
        fprintf(stderr, "wake: SAMPLES >= 1 and 0 <= GAP_NS < 1e9\n");
        return 2;
    }
    delay_ns = calloc((size_t)samples, sizeof *delay_ns);
    wake_fd = eventfd(0, 0);
    answer_fd = eventfd(0, 0);
    if (delay_ns == NULL || wake_fd < 0 || answer_fd < 0 || pin(waker_cpu) != 0)
        return 2;
    pthread_t th;
    if (pthread_create(&th, NULL, sleeper, NULL) != 0)
        return 2;
    struct timespec gap = {0, gap_ns};
    uint64_t v, one = 1;
    for (int i = 0; i < samples; i++) {
        nanosleep(&gap, NULL);
        t_wake_ns = now_ns();
        if (write(wake_fd, &one, sizeof one) != sizeof one || read(answer_fd, &v, sizeof v) != sizeof v)
            return 2;
    }
    pthread_join(th, NULL);
    for (int i = 0; i < samples; i++)
        printf("%lld\n", (long long)delay_ns[i]);
    return 0;
}
