/*
 * connload: a connection-rate yardstick that is not itself the bottleneck.
 *
 *   connload client ADDR PORT SECONDS THREADS
 *       THREADS threads each connect() and close() in a loop for SECONDS (blocking sockets, a 5 s
 *       connect timeout), the exchange `lab bench` counts: handshake, then the FIN exchange.
 *   connload server ADDR PORT SECONDS THREADS
 *       a kernel listener (backlog 4096) whose THREADS threads accept() and close() until stdin
 *       reaches end of file or SECONDS pass, whichever is first.
 *   connload request ADDR PORT SECONDS THREADS
 *       THREADS threads each open one connection and, for SECONDS, send a REQUEST_BYTES request and
 *       read the RESPONSE_BYTES answer (a keep-alive HTTP exchange's sizes): the count is exchanges.
 *   connload respond ADDR PORT SECONDS THREADS
 *       the other end: a kernel listener that answers every REQUEST_BYTES read with RESPONSE_BYTES, one
 *       thread per connection (at most THREADS), until stdin reaches end of file or SECONDS pass.
 *
 * Each prints one JSON object on stdout when done: the count, the wall time, and its own CPU time
 * (user + system, all threads), so the caller can say which side of a measurement was CPU-bound.
 * Exit status 0, or 2 with one line on stderr for bad arguments or a socket that cannot be set up.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
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
#define REQUEST_BYTES 40           /* "GET /bytes/1000 HTTP/1.1\r\nHost: ...\r\n\r\n" */
#define RESPONSE_BYTES 1223        /* its answer's head and 1000-byte body */

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

/* Read exactly `size` bytes (0), or fail (-1: error, end of stream, or the deadline passed). */
static int read_all(int fd, char *buffer, size_t size) {
    size_t got = 0;
    while (got < size) {
        ssize_t n = recv(fd, buffer + got, size - got, 0);
        if (n <= 0)
            return -1;
        got += (size_t)n;
    }
    return 0;
}

static int write_all(int fd, const char *buffer, size_t size) {
    size_t sent = 0;
    while (sent < size) {
        ssize_t n = send(fd, buffer + sent, size - sent, MSG_NOSIGNAL);
        if (n <= 0)
            return -1;
        sent += (size_t)n;
    }
    return 0;
}

static void *request_thread(void *unused) {
    (void)unused;
    char request[REQUEST_BYTES], response[RESPONSE_BYTES];
    memset(request, 'q', sizeof request);
    struct timeval timeout = {CONNECT_TIMEOUT_SECONDS, 0};
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        note_error(errno);
        return NULL;
    }
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&target, sizeof target) != 0) {
        note_error(errno);
        close(fd);
        return NULL;
    }
    while (now() < deadline) {
        if (write_all(fd, request, sizeof request) != 0 || read_all(fd, response, sizeof response) != 0) {
            note_error(errno ? errno : EPIPE);
            break;
        }
        atomic_fetch_add(&done_count, 1);
    }
    close(fd);
    return NULL;
}

static void *respond_thread(void *unused) {
    (void)unused;
    char request[REQUEST_BYTES], response[RESPONSE_BYTES];
    memset(response, 'r', sizeof response);
    struct pollfd waiting = {listener, POLLIN, 0};
    int fd = -1;
    while (fd < 0 && !atomic_load(&stop_flag) && now() < deadline) {
        if (poll(&waiting, 1, 50) > 0)
            fd = accept4(listener, NULL, NULL, 0);
    }
    if (fd < 0)
        return NULL;
    int one = 1;
    struct timeval tick = {0, 100000}; /* wake to see the deadline and stdin's end */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tick, sizeof tick);
    while (!atomic_load(&stop_flag) && now() < deadline) {
        ssize_t n = recv(fd, request, 1, MSG_PEEK);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            continue;
        if (n <= 0 || read_all(fd, request, sizeof request) != 0 ||
            write_all(fd, response, sizeof response) != 0)
            break; /* the client closed: its count is the figure */
        atomic_fetch_add(&done_count, 1);
    }
    close(fd);
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
    fprintf(stderr, "connload: %s; usage: connload client|server|request|respond ADDR PORT SECONDS THREADS\n",
            why);
    return 2;
}

int main(int argc, char **argv) {
    if (argc != 6)
        return usage("expected 5 arguments");
    void *(*work)(void *) = NULL;
    int is_client = 1;
    if (strcmp(argv[1], "client") == 0) {
        work = client_thread;
    } else if (strcmp(argv[1], "server") == 0) {
        work = server_thread;
        is_client = 0;
    } else if (strcmp(argv[1], "request") == 0) {
        work = request_thread;
    } else if (strcmp(argv[1], "respond") == 0) {
        work = respond_thread;
        is_client = 0;
    } else {
        return usage("the mode is client, server, request or respond");
    }
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
        pthread_create(&workers[i], NULL, work, NULL);
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
