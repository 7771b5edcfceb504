/*
 * mini_fims.h - a deliberately small FIMS client for the examples (C11 and C++17).
 *
 * It stands for "the FIMS connection the host already owns" in mode A: the
 * responder library never sees this code. Wire format: docs/protocol/fims.md.
 * SOCK_SEQPACKET, 8-byte handshake, one datagram per message, 12-byte header.
 *
 * Every function returns 0 (or a count) on success and -1 on failure with a
 * line on stderr; nothing here aborts.
 */
#ifndef MINI_FIMS_H
#define MINI_FIMS_H

/* The including file defines _GNU_SOURCE (or _DEFAULT_SOURCE) before any include
   when built with -std=c11, for the POSIX socket and poll API. */

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define MINI_FIMS_DEFAULT_SOCKET "/tmp/FlexGen_FIMS_Server.socket"
#define MINI_FIMS_HEADER_LEN 12u
#define MINI_FIMS_MAX_STR 255u

/* One connection to the broker. */
typedef struct mini_fims {
    int fd;
    uint32_t max_len;
    char name[MINI_FIMS_MAX_STR + 1];
    uint8_t *rbuf; /* one received datagram */
    size_t rcap;
    uint8_t *wbuf; /* one datagram to send */
    size_t wcap;
} mini_fims;

/* One received message: NUL-terminated copies of the strings, body inside rbuf. */
typedef struct mini_fims_msg {
    char method[MINI_FIMS_MAX_STR + 1];
    char uri[MINI_FIMS_MAX_STR + 1];
    char replyto[MINI_FIMS_MAX_STR + 1];
    char process_name[MINI_FIMS_MAX_STR + 1];
    char username[MINI_FIMS_MAX_STR + 1];
    const uint8_t *body;
    size_t body_len;
} mini_fims_msg;

/* $FIMS_SOCKET when set and non-empty, else the default path. */
static inline const char *mini_fims_socket_path(const char *given) {
    const char *env = getenv("FIMS_SOCKET");
    if (given != NULL && given[0] != '\0') return given;
    if (env != NULL && env[0] != '\0') return env;
    return MINI_FIMS_DEFAULT_SOCKET;
}

static inline void mini_fims_close(mini_fims *c) {
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    free(c->rbuf);
    free(c->wbuf);
    c->rbuf = NULL;
    c->wbuf = NULL;
    c->rcap = c->wcap = 0;
}

/* Waits up to timeout_ms (-1: forever) for the socket to be readable: 1 yes, 0 no, -1 error.
   EINTR (a signal) counts as "no" so the caller can look at its stop flag. */
static inline int mini_fims_wait(const mini_fims *c, int timeout_ms) {
    struct pollfd p;
    int rc;
    p.fd = c->fd;
    p.events = POLLIN;
    p.revents = 0;
    rc = poll(&p, 1, timeout_ms);
    if (rc < 0) return errno == EINTR ? 0 : -1;
    return rc > 0 ? 1 : 0;
}

/* Receives one datagram into rbuf: its length, 0 when the broker closed, -1 on error. */
static inline long mini_fims_recv_datagram(mini_fims *c) {
    ssize_t n = recv(c->fd, c->rbuf, c->rcap, MSG_TRUNC);
    if (n < 0) return -1;
    if ((size_t)n > c->rcap) {
        fprintf(stderr, "mini_fims: datagram of %zd bytes truncated\n", n);
        return -1;
    }
    return (long)n;
}

/* Connects to path as name and runs the handshake of docs/protocol/fims.md. */
static inline int mini_fims_connect(mini_fims *c, const char *path, const char *name) {
    struct sockaddr_un addr;
    uint8_t hs[8];
    ssize_t n;
    size_t name_len = strlen(name);
    int size;
    memset(c, 0, sizeof *c);
    c->fd = -1;
    if (name_len == 0 || name_len > MINI_FIMS_MAX_STR || strlen(path) >= sizeof addr.sun_path) {
        fprintf(stderr, "mini_fims: bad name or socket path\n");
        return -1;
    }
    memcpy(c->name, name, name_len + 1);
    c->fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (c->fd < 0) return -1;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    memcpy(addr.sun_path, path, strlen(path) + 1);
    if (connect(c->fd, (const struct sockaddr *)&addr, sizeof addr) != 0) {
        fprintf(stderr, "mini_fims: connect %s: %s\n", path, strerror(errno));
        mini_fims_close(c);
        return -1;
    }
    /* 1. broker -> client: u16 version, 2 padding, u32 max_len */
    if (mini_fims_wait(c, 5000) != 1 || (n = recv(c->fd, hs, sizeof hs, 0)) != 8 ||
        (hs[0] | (hs[1] << 8)) != 1) {
        fprintf(stderr, "mini_fims: bad or missing handshake from the broker\n");
        mini_fims_close(c);
        return -1;
    }
    c->max_len = (uint32_t)hs[4] | ((uint32_t)hs[5] << 8) | ((uint32_t)hs[6] << 16) |
                 ((uint32_t)hs[7] << 24);
    /* the handshake number limits the whole datagram, header and strings included */
    c->rcap = c->wcap = c->max_len > MINI_FIMS_HEADER_LEN ? c->max_len : MINI_FIMS_HEADER_LEN;
    c->rbuf = (uint8_t *)malloc(c->rcap);
    c->wbuf = (uint8_t *)malloc(c->wcap);
    if (c->rbuf == NULL || c->wbuf == NULL) {
        mini_fims_close(c);
        return -1;
    }
    size = c->rcap > (size_t)0x7fffffff ? 0x7fffffff : (int)c->rcap;
    (void)setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    (void)setsockopt(c->fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    /* 2. client -> broker: the same 8 bytes with our version (1), padding zero */
    hs[0] = 1;
    hs[1] = hs[2] = hs[3] = 0;
    /* 3. the process name, no header, no terminator */
    if (send(c->fd, hs, sizeof hs, MSG_NOSIGNAL) != 8 ||
        send(c->fd, name, name_len, MSG_NOSIGNAL) != (ssize_t)name_len) {
        fprintf(stderr, "mini_fims: handshake send: %s\n", strerror(errno));
        mini_fims_close(c);
        return -1;
    }
    return 0;
}

/* Encodes one datagram into wbuf and sends it. */
static inline int mini_fims_send_full(mini_fims *c, const char *method, const char *uri,
                                      const char *replyto, const void *body, size_t body_len) {
    const char *strs[5];
    size_t lens[5], total = MINI_FIMS_HEADER_LEN;
    uint8_t *p = c->wbuf;
    int i;
    strs[0] = method;
    strs[1] = uri;
    strs[2] = replyto != NULL ? replyto : "";
    strs[3] = c->name;
    strs[4] = "";
    for (i = 0; i < 5; i++) {
        lens[i] = strlen(strs[i]);
        if (lens[i] > MINI_FIMS_MAX_STR) return -1;
        total += lens[i];
    }
    /* keep room for the user name the broker writes in (at most 255 bytes) */
    if (c->fd < 0 || body_len > c->wcap || total + body_len + MINI_FIMS_MAX_STR > c->wcap) return -1;
    for (i = 0; i < 5; i++) p[i] = (uint8_t)lens[i];
    p[5] = p[6] = p[7] = 0;
    p[8] = (uint8_t)body_len;
    p[9] = (uint8_t)(body_len >> 8);
    p[10] = (uint8_t)(body_len >> 16);
    p[11] = (uint8_t)(body_len >> 24);
    p += MINI_FIMS_HEADER_LEN;
    for (i = 0; i < 5; i++) {
        memcpy(p, strs[i], lens[i]);
        p += lens[i];
    }
    if (body_len > 0) memcpy(p, body, body_len);
    total += body_len;
    if (send(c->fd, c->wbuf, total, MSG_NOSIGNAL) != (ssize_t)total) {
        fprintf(stderr, "mini_fims: send: %s\n", strerror(errno));
        return -1;
    }
    return 0;
}

/* Sends a data message (set/get/pub/post/del). */
static inline int mini_fims_send(mini_fims *c, const char *method, const char *uri,
                                 const char *replyto, const void *body, size_t body_len) {
    return mini_fims_send_full(c, method, uri, replyto, body, body_len);
}

/* Decodes the datagram of n bytes in rbuf into m: 0, or -1 when malformed. */
static inline int mini_fims_decode(const mini_fims *c, size_t n, mini_fims_msg *m) {
    char *fields[5];
    const uint8_t *p = c->rbuf + MINI_FIMS_HEADER_LEN;
    size_t need = MINI_FIMS_HEADER_LEN;
    int i;
    if (n < MINI_FIMS_HEADER_LEN) return -1;
    m->body_len = (size_t)c->rbuf[8] | ((size_t)c->rbuf[9] << 8) | ((size_t)c->rbuf[10] << 16) |
                  ((size_t)c->rbuf[11] << 24);
    for (i = 0; i < 5; i++) need += c->rbuf[i];
    if (need + m->body_len != n) return -1;
    fields[0] = m->method;
    fields[1] = m->uri;
    fields[2] = m->replyto;
    fields[3] = m->process_name;
    fields[4] = m->username;
    for (i = 0; i < 5; i++) {
        memcpy(fields[i], p, c->rbuf[i]);
        fields[i][c->rbuf[i]] = '\0';
        p += c->rbuf[i];
    }
    m->body = p;
    return 0;
}

/* Waits up to timeout_ms for one message: 1 received, 0 none (timeout, signal,
   malformed datagram skipped), -1 the connection is gone. */
static inline int mini_fims_recv(mini_fims *c, mini_fims_msg *m, int timeout_ms) {
    long n;
    int ready = mini_fims_wait(c, timeout_ms);
    if (ready <= 0) return ready;
    n = mini_fims_recv_datagram(c);
    if (n <= 0) return -1;
    if (mini_fims_decode(c, (size_t)n, m) != 0) {
        fprintf(stderr, "mini_fims: malformed datagram of %ld bytes skipped\n", n);
        return 0;
    }
    return 1;
}

/* Subscribes to count URIs (all methods) and waits for the broker's SUCCESS.
   Messages that arrive before the answer are dropped (called at start-up). */
static inline int mini_fims_subscribe(mini_fims *c, const char *const *uris, int count) {
    uint8_t body[1 + 64 * 2 + 64 * MINI_FIMS_MAX_STR];
    size_t len = 1u + 2u * (size_t)count;
    int i, tries;
    mini_fims_msg m;
    if (count < 1 || count > 64) return -1;
    body[0] = (uint8_t)count;
    for (i = 0; i < count; i++) {
        size_t ul = strlen(uris[i]);
        if (ul > MINI_FIMS_MAX_STR) return -1;
        body[1 + 2 * i] = 0; /* not pub-only */
        body[2 + 2 * i] = (uint8_t)ul;
        memcpy(body + len, uris[i], ul);
        len += ul;
    }
    if (mini_fims_send_full(c, "sub", "", NULL, body, len) != 0) return -1;
    for (tries = 0; tries < 1000; tries++) {
        int got = mini_fims_recv(c, &m, 5000);
        if (got <= 0) return -1; /* gone, or no answer within 5 s */
        if (m.uri[0] == '\0' && strcmp(m.process_name, "fims_server") == 0) {
            if (m.body_len == 7 && memcmp(m.body, "SUCCESS", 7) == 0) return 0;
            fprintf(stderr, "mini_fims: subscribe refused: %.*s\n", (int)m.body_len,
                    (const char *)m.body);
            return -1;
        }
    }
    return -1;
}

#endif /* MINI_FIMS_H */
