/*
 * connload: a connection-rate yardstick that is not itself the bottleneck.
 *
 *   connload client ADDR PORT SECONDS THREADS
 *       THREADS threads each connect() and close() in a loop for SECONDS (blocking sockets, a 5 s
 *       connect timeout), the exchange `lab bench` counts: handshake, then the FIN exchange.
 *   connload server ADDR PORT SECONDS THREADS
 *       a kernel listener (backlog 4096) whose THREADS threads accept() and close() until stdin
 *       reaches end of file or SECONDS pass, whichever is first.
 *
 * Each prints one JSON object on stdout when done: the count, the wall time, and its own CPU time
 * (user + system, all threads), so the caller can say which side of a measurement was CPU-bound.
 * Exit status 0, or 2 with one line on stderr for bad arguments or a socket that cannot be set up.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_THREADS 64
#define MAX_SECONDS 600.0
#define CONNECT_TIMEOUT_SECONDS 5
#define SLOW_CONNECT_SECONDS 0.5 /* a connect this slow waited for a retransmitted SYN */

static struct sockaddr_in target;
static double deadline;
static atomic_long done_count, error_count, slow_count;
static atomic_int first_errno, stop_flag;
static int listener = -1;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_seconds(void) {
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    return (double)usage.ru_utime.tv_sec + usage.ru_utime.tv_usec / 1e6 +
           (double)usage.ru_stime.tv_sec + usage.ru_stime.tv_usec / 1e6;
}

static void note_error(int code) {
    int expected = 0;
    atomic_fetch_add(&error_count, 1);
    atomic_compare_exchange_strong(&first_errno, &expected, code);
}

static void *client_thread(void *unused) {
    (void)unused;
    struct timeval timeout = {CONNECT_TIMEOUT_SECONDS, 0};
    while (now() < deadline) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0) {
            note_error(errno);
            break;
        }
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
        double started = now();
        if (connect(fd, (struct sockaddr *)&target, sizeof target) == 0) {
            atomic_fetch_add(&done_count, 1);
            if (now() - started > SLOW_CONNECT_SECONDS)
                atomic_fetch_add(&slow_count, 1);
        } else {
            note_error(errno);
            if (atomic_load(&error_count) > 100) {
                close(fd);
                break; /* the server is gone or refusing: counting on would only spin */
            }
        }
        close(fd);
    }
    return NULL;
}

static void *server_thread(void *unused) {
    (void)unused;
    struct pollfd waiting = {listener, POLLIN, 0};
    while (!atomic_load(&stop_flag) && now() < deadline) {
        if (poll(&waiting, 1, 50) <= 0)
            continue;
        int fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK);
        if (fd < 0)
            continue; /* another thread took it, or the client gave up: nothing to count */
        atomic_fetch_add(&done_count, 1);
        close(fd);
    }
    int fd; /* stopping: what the accept queue still holds completed its handshake, so it counts */
    while ((fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
        atomic_fetch_add(&done_count, 1);
        close(fd);
    }
    return NULL;
}

static void *stdin_watch(void *unused) {
    (void)unused;
    char buffer[64];
    while (read(STDIN_FILENO, buffer, sizeof buffer) > 0) {
    }
    atomic_store(&stop_flag, 1);
    return NULL;
}

static int usage(const char *why) {
    fprintf(stderr, "connload: %s; usage: connload client|server ADDR PORT SECONDS THREADS\n", why);
    return 2;
}

int main(int argc, char **argv) {
    if (argc != 6)
        return usage("expected 5 arguments");
    int is_client = strcmp(argv[1], "client") == 0;
    if (!is_client && strcmp(argv[1], "server") != 0)
        return usage("the mode is client or server");
    memset(&target, 0, sizeof target);
    target.sin_family = AF_INET;
    if (inet_pton(AF_INET, argv[2], &target.sin_addr) != 1)
        return usage("ADDR: expected an IPv4 address");
    char *end;
    long port = strtol(argv[3], &end, 10);
    if (*end || port < 1 || port > 65535)
        return usage("PORT: expected 1 to 65535");
    target.sin_port = htons((uint16_t)port);
    double seconds = strtod(argv[4], &end);
    if (*end || !(seconds > 0 && seconds <= MAX_SECONDS))
        return usage("SECONDS: expected more than 0, at most 600");
    long threads = strtol(argv[5], &end, 10);
    if (*end || threads < 1 || threads > MAX_THREADS)
        return usage("THREADS: expected 1 to 64");

    if (!is_client) {
        int one = 1;
        listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (listener < 0 || bind(listener, (struct sockaddr *)&target, sizeof target) != 0 ||
            listen(listener, 4096) != 0) {
            fprintf(stderr, "connload: listen on %s:%ld: %s\n", argv[2], port, strerror(errno));
            return 2;
        }
        printf("{\"listening\":true}\n");
        fflush(stdout);
    }
    double began = now();
    double cpu_began = cpu_seconds();
    deadline = began + seconds;
    pthread_t workers[MAX_THREADS], watcher;
    if (!is_client)
        pthread_create(&watcher, NULL, stdin_watch, NULL);
    for (long i = 0; i < threads; i++)
        pthread_create(&workers[i], NULL, is_client ? client_thread : server_thread, NULL);
    for (long i = 0; i < threads; i++)
        pthread_join(workers[i], NULL);
    double elapsed = now() - began;
    int code = atomic_load(&first_errno);
    printf("{\"mode\":\"%s\",\"count\":%ld,\"errors\":%ld,\"first_error\":\"%s\",\"slow_connects\":%ld,"
           "\"seconds\":%.6f,\"cpu_seconds\":%.6f,\"threads\":%ld}\n",
           argv[1], atomic_load(&done_count), atomic_load(&error_count), code ? strerrorname_np(code) : "",
           atomic_load(&slow_count), elapsed, cpu_seconds() - cpu_began, threads);
    return 0;
}
