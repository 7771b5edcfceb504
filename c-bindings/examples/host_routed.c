/*
 * host_routed.c - mode A: the host owns its FIMS connection (here the small
 * client of mini_fims.h) and routes every message it receives through
 * cops_responder_handle. The responder does no I/O of its own.
 *
 * Usage: host_routed --name NAME --uri URI [--socket PATH]
 *        host_routed NAME URI [PATH]
 * The socket defaults to $FIMS_SOCKET, else /tmp/FlexGen_FIMS_Server.socket.
 * Runs until SIGTERM or SIGINT; exit status 0 then, 1 on a start-up error.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cops_responder.h"
#include "mini_fims.h"

static volatile sig_atomic_t g_stop = 0;

static void on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

static int parse_args(int argc, char **argv, const char **name, const char **uri,
                      const char **sock) {
    int i, pos = 0;
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--name") == 0 && i + 1 < argc) {
            *name = argv[++i];
        } else if (strcmp(argv[i], "--uri") == 0 && i + 1 < argc) {
            *uri = argv[++i];
        } else if (strcmp(argv[i], "--socket") == 0 && i + 1 < argc) {
            *sock = argv[++i];
        } else if (argv[i][0] != '-') {
            const char **slot[3];
            slot[0] = name;
            slot[1] = uri;
            slot[2] = sock;
            if (pos > 2) return -1;
            *slot[pos++] = argv[i];
        } else {
            return -1;
        }
    }
    return (*name != NULL && *uri != NULL) ? 0 : -1;
}

/* Connects and subscribes to <uri>/cops; retried by the main loop when the broker restarts. */
static int open_bus(mini_fims *bus, const char *path, const char *name, const char *sub) {
    const char *subs[1];
    subs[0] = sub;
    if (mini_fims_connect(bus, path, name) != 0) return -1;
    if (mini_fims_subscribe(bus, subs, 1) != 0) {
        mini_fims_close(bus);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv) {
    const char *name = NULL, *uri = NULL, *sock = NULL;
    char sub[MINI_FIMS_MAX_STR + 16];
    static char reply[4096];
    struct sigaction sa;
    mini_fims bus;
    cops_responder *cops;

    if (parse_args(argc, argv, &name, &uri, &sock) != 0) {
        fprintf(stderr, "usage: %s --name NAME --uri URI [--socket PATH]\n", argv[0]);
        return 1;
    }
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal; /* no SA_RESTART: poll returns on the signal */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    cops = cops_responder_new(name, uri);
    if (cops == NULL) {
        fprintf(stderr, "bad --name or --uri\n");
        return 1;
    }
    cops_responder_set_version(cops, "1.0.0", "example", "1");
    snprintf(sub, sizeof sub, "%s/cops", uri);
    if (open_bus(&bus, mini_fims_socket_path(sock), name, sub) != 0) {
        cops_responder_free(cops);
        return 1;
    }
    printf("host_routed: %s ready on %s\n", name, sub);
    fflush(stdout);

    while (!g_stop) {
        mini_fims_msg m;
        int got = mini_fims_recv(&bus, &m, 1000);
        if (got < 0) { /* broker gone: reconnect every 200 ms */
            struct timespec ts = {0, 200 * 1000 * 1000};
            mini_fims_close(&bus);
            while (!g_stop && open_bus(&bus, mini_fims_socket_path(sock), name, sub) != 0)
                nanosleep(&ts, NULL);
            continue;
        }
        if (got == 0) continue;
        /* ---- the responder: these lines are all a host adds to its loop ---- */
        size_t n = 0;
        cops_status s = cops_responder_handle(cops, m.method, m.uri, m.replyto, m.body,
                                              m.body_len, reply, sizeof reply, &n);
        if (s == COPS_OK && n > 0) mini_fims_send(&bus, "set", m.replyto, NULL, reply, n);
        else if (s < 0) fprintf(stderr, "cops: %s\n", cops_status_str(s));
        /* ---- s == COPS_NOT_MINE: the host's own message, handled as before ---- */
    }

    mini_fims_close(&bus);
    cops_responder_free(cops);
    return 0;
}
