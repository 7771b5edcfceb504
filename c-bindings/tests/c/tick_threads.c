/*
 * tick_threads.c - cops_responder_tick from a work thread while the main
 * thread polls (mode B, a real broker) and handles (mode A) on the same
 * responder, as docs/protocol/cops.md allows. Run by tests/threads.rs built
 * with -fsanitize=thread, and under valgrind --tool=helgrind.
 *
 * Usage: tick_threads --uri URI --socket PATH
 * Prints "tick_threads ready" once subscribed, then polls until SIGTERM and
 * prints "ticks N answered M" before exiting 0. Exits 1 on any failed check.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cops_responder.h"

static volatile sig_atomic_t g_stop = 0;
static atomic_int g_worker_stop;
static atomic_ulong g_ticks;

static void on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

/* The work loop: one short unit of work, then a tick. */
static void *work_loop(void *arg) {
    cops_responder *cops = (cops_responder *)arg;
    struct timespec unit = {0, 200 * 1000}; /* 200 us of "work" */
    while (!atomic_load(&g_worker_stop)) {
        nanosleep(&unit, NULL);
        if (cops_responder_tick(cops) != COPS_OK) {
            fprintf(stderr, "tick failed\n");
            return (void *)1;
        }
        atomic_fetch_add(&g_ticks, 1);
    }
    return NULL;
}

/* Mode A on the polling thread: the heartbeat answer must carry the loop. */
static int check_local_answer(cops_responder *cops, const char *cops_uri) {
    char reply[512];
    size_t n = 0;
    /* Read before handling: a tick counted here happened before the handle. */
    unsigned long ticks_before = atomic_load(&g_ticks);
    cops_status s = cops_responder_handle(cops, "get", cops_uri, "/local/reply", NULL, 0, reply,
                                          sizeof reply, &n);
    /* Before the work thread's first tick the gate is closed (never petted is
       stale): silence is the right answer then. */
    if (s == COPS_OK && n == 0 && ticks_before == 0) return 0;
    if (s != COPS_OK || n == 0 || n >= sizeof reply) {
        fprintf(stderr, "local handle: %s (%zu bytes)\n", cops_status_str(s), n);
        return -1;
    }
    reply[n] = '\0';
    if (ticks_before > 0 && strstr(reply, "\"loop\":{\"count\":") == NULL) {
        fprintf(stderr, "no loop object in %s\n", reply);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv) {
    const char *uri = NULL, *sock = NULL;
    char cops_uri[300];
    struct sigaction sa;
    sigset_t block, old;
    pthread_t worker;
    void *worker_rc = NULL;
    unsigned long answered = 0;
    int i, failed = 0;
    cops_responder *cops;

    for (i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--uri") == 0) uri = argv[i + 1];
        else if (strcmp(argv[i], "--socket") == 0) sock = argv[i + 1];
    }
    if (uri == NULL || sock == NULL) {
        fprintf(stderr, "usage: %s --uri URI --socket PATH\n", argv[0]);
        return 1;
    }
    snprintf(cops_uri, sizeof cops_uri, "%s/cops", uri);
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);

    cops = cops_responder_new("tick_threads", uri);
    if (cops == NULL) return 1;
    cops_responder_set_version(cops, "1.0.0", "tick_threads", "1");
    /* The gate: answers only while the work thread ticks. */
    if (cops_responder_set_liveness_window(cops, 5000) != COPS_OK) return 1;
    if (cops_responder_connect(cops, sock) != COPS_OK) {
        fprintf(stderr, "connect failed\n");
        cops_responder_free(cops);
        return 1;
    }
    /* SIGTERM is for the main thread only: the worker starts with it blocked. */
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    if (pthread_create(&worker, NULL, work_loop, cops) != 0) return 1;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    printf("tick_threads ready\n");
    fflush(stdout);

    while (!g_stop && !failed) {
        int n = cops_responder_poll(cops, 20);
        if (n < 0) {
            fprintf(stderr, "poll: %s\n", cops_status_str((cops_status)n));
            failed = 1;
        } else {
            answered += (unsigned long)n;
        }
        if (check_local_answer(cops, cops_uri) != 0) failed = 1;
    }

    atomic_store(&g_worker_stop, 1);
    pthread_join(worker, &worker_rc);
    printf("ticks %lu answered %lu\n", atomic_load(&g_ticks), answered);
    fflush(stdout);
    cops_responder_free(cops);
    return failed || worker_rc != NULL;
}
