/*
 * work_loop.c - a C host whose work loop COPS supervises (deadline
 * supervision, docs/cops.md): mode A (the host owns its FIMS connection, here
 * the small client of mini_fims.h) in an event loop. One iteration of the
 * work loop is one poll of a device and the dispatch of its answer, every
 * --work-ms; cops_responder_tick() marks the end of each, so every heartbeat
 * answer carries "loop":{"count":N,"max_us":M,"p99_us":P}. Between iterations
 * the loop serves FIMS, so heartbeats are answered at once even while the
 * device is slow.
 *
 * It subscribes to <uri> (which covers <uri>/cops and the test hooks):
 *   set <uri>/debug/slow N  every iteration lasts N ms from now on (the device
 *                           answers that late); 0 or false: back to --work-ms
 *   set <uri>/debug/hang    the main loop spins forever (until a signal)
 * (test hooks of docs/protocol/cops.md, never part of the library).
 *
 * Usage: work_loop --name NAME --uri URI [--socket PATH] [--work-ms MS]
 * Prints "work_loop: NAME ready ..." once subscribed; runs until SIGTERM or
 * SIGINT (exit 0); exit 1 on a start-up error or when the broker goes away
 * (its service manager restarts it).
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cops_responder.h"
#include "mini_fims.h"

static volatile sig_atomic_t g_stop = 0;

static void on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

struct args {
    const char *name, *uri, *sock;
    long work_ms;
};

static int parse_args(int argc, char **argv, struct args *a) {
    int i;
    a->name = a->uri = a->sock = NULL;
    a->work_ms = 100;
    for (i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--name") == 0) a->name = argv[i + 1];
        else if (strcmp(argv[i], "--uri") == 0) a->uri = argv[i + 1];
        else if (strcmp(argv[i], "--socket") == 0) a->sock = argv[i + 1];
        else if (strcmp(argv[i], "--work-ms") == 0) a->work_ms = atol(argv[i + 1]);
        else return -1;
    }
    return (argc % 2 == 1 && a->name != NULL && a->uri != NULL && a->work_ms > 0) ? 0 : -1;
}

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* `set <uri>/debug/slow N`: the iteration length from now on (0/false: normal). */
static long slow_request(const mini_fims_msg *m, long normal) {
    char text[32];
    size_t n = m->body_len < sizeof text - 1 ? m->body_len : sizeof text - 1;
    long ms;
    memcpy(text, m->body, n);
    text[n] = '\0';
    if (strncmp(text, "false", 5) == 0) return normal;
    ms = atol(text);
    return ms > 0 ? ms : normal;
}

int main(int argc, char **argv) {
    struct args a;
    char hang[MINI_FIMS_MAX_STR + 16], slow[MINI_FIMS_MAX_STR + 16];
    static char reply[4096];
    const char *subs[1];
    struct sigaction sa;
    mini_fims bus;
    cops_responder *cops;
    long work_ms;
    long long next_work;
    unsigned long long iterations = 0;
    int rc = 0;

    if (parse_args(argc, argv, &a) != 0) {
        fprintf(stderr, "usage: %s --name NAME --uri URI [--socket PATH] [--work-ms MS]\n",
                argv[0]);
        return 1;
    }
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal; /* no SA_RESTART: poll returns on the signal */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    cops = cops_responder_new(a.name, a.uri);
    if (cops == NULL) {
        fprintf(stderr, "bad --name or --uri\n");
        return 1;
    }
    cops_responder_set_version(cops, "1.0.0", "example", "1");
    subs[0] = a.uri; /* covers <uri>/cops and the hooks: one sub for all */
    if (mini_fims_connect(&bus, mini_fims_socket_path(a.sock), a.name) != 0 ||
        mini_fims_subscribe(&bus, subs, 1) != 0) {
        fprintf(stderr, "work_loop: cannot connect or subscribe\n");
        cops_responder_free(cops);
        return 1;
    }
    snprintf(hang, sizeof hang, "%s/debug/hang", a.uri);
    snprintf(slow, sizeof slow, "%s/debug/slow", a.uri);
    printf("work_loop: %s ready on %s\n", a.name, a.uri);
    fflush(stdout);

    work_ms = a.work_ms;
    next_work = now_ms() + work_ms;
    while (!g_stop) {
        mini_fims_msg m;
        long long wait = next_work - now_ms();
        int got = mini_fims_recv(&bus, &m, wait > 0 ? (int)wait : 0);
        if (got < 0) {
            fprintf(stderr, "work_loop: lost the FIMS broker\n");
            rc = 1;
            break;
        }
        if (got > 0) {
            /* ---- the responder: offered first ---- */
            size_t n = 0;
            cops_status s = cops_responder_handle(cops, m.method, m.uri, m.replyto, m.body,
                                                  m.body_len, reply, sizeof reply, &n);
            if (s == COPS_OK && n > 0) mini_fims_send(&bus, "set", m.replyto, NULL, reply, n);
            else if (s < 0) fprintf(stderr, "cops: %s\n", cops_status_str(s));
            /* ---- the host's own messages ---- */
            if (s == COPS_NOT_MINE && strcmp(m.method, "set") == 0) {
                if (strcmp(m.uri, slow) == 0) {
                    work_ms = slow_request(&m, a.work_ms);
                    fprintf(stderr, "work_loop: iterations of %ld ms from now on\n", work_ms);
                } else if (strcmp(m.uri, hang) == 0) {
                    fprintf(stderr, "work_loop: hanging the main loop on request\n");
                    while (!g_stop) {
                        /* spin: no receive, no heartbeat answers, only a signal ends it */
                    }
                }
            }
        }
        if (now_ms() >= next_work) {
            /* The device answered: dispatch it, and the iteration is over. */
            iterations++;
            cops_responder_tick(cops);
            next_work = now_ms() + work_ms;
        }
    }

    printf("work_loop: stopping after %llu iterations\n", iterations);
    mini_fims_close(&bus);
    cops_responder_free(cops);
    return rc;
}
