/*
 * own_connection.c - mode B: the responder owns a FIMS connection of its own
 * (cops_responder_connect) and the host's main loop drives it. The loop waits
 * in poll() on the responder's descriptor (cops_responder_fd) beside whatever
 * else the host waits on, here a 1 s periodic "work" tick, and calls
 * cops_responder_poll(r, 0) to answer what has arrived.
 *
 * Usage: own_connection --name NAME --uri URI [--socket PATH]
 *        own_connection NAME URI [PATH]
 * The socket defaults to $FIMS_SOCKET, else /tmp/FlexGen_FIMS_Server.socket.
 * Runs until SIGTERM or SIGINT; exit status 0 then, 1 on a start-up error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cops_responder.h"

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

int main(int argc, char **argv) {
    const char *name = NULL, *uri = NULL, *sock = NULL;
    struct sigaction sa;
    unsigned long ticks = 0;
    cops_responder *cops;
    cops_status s;

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
    /* NULL socket path: $FIMS_SOCKET, else the default. COPS_ERR_IO (no broker yet)
       is not fatal: the responder retries on every poll. */
    s = cops_responder_connect(cops, sock);
    if (s != COPS_OK && s != COPS_ERR_IO) {
        fprintf(stderr, "cops_responder_connect: %s\n", cops_status_str(s));
        cops_responder_free(cops);
        return 1;
    }
    printf("own_connection: %s ready (%s)\n", name, cops_status_str(s));
    fflush(stdout);

    while (!g_stop) {
        struct pollfd fds[1];
        int fd = cops_responder_fd(cops); /* -1 while disconnected */
        fds[0].fd = fd;
        fds[0].events = POLLIN;
        fds[0].revents = 0;
        /* The host's other descriptors would sit in fds[] too. */
        if (fd >= 0 && poll(fds, 1, 1000) < 0 && errno != EINTR) break;
        /* ---- the responder: these lines are all a host adds to its loop ---- */
        int n = cops_responder_poll(cops, fd >= 0 ? 0 : 1000);
        if (n < 0) fprintf(stderr, "cops: %s\n", cops_status_str((cops_status)n));
        /* ---- the host's periodic work ---- */
        ticks++;
    }

    printf("own_connection: stopping after %lu loop turns, heartbeat %llu\n", ticks,
           (unsigned long long)cops_responder_heartbeat(cops));
    cops_responder_free(cops);
    return 0;
}
