/*
 * misuse.c - the C ABI under misuse: NULL everywhere, non-UTF-8, a reply buffer
 * too small (the size needed comes back), poll before connect, free(NULL), a
 * connect to a socket where no broker runs. Exit status 0 when every check
 * holds, 1 otherwise (each failed check is printed). Needs no broker.
 * Run by c-bindings/tests/misuse.rs, linked static and shared, and under valgrind.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cops_responder.h"

static int failures = 0;

#define CHECK(cond)                                                           \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "misuse.c:%d: check failed: %s\n", __LINE__, #cond); \
            failures++;                                                       \
        }                                                                     \
    } while (0)

static const char BAD_UTF8[] = {'/', 'x', (char)0xff, (char)0xfe, 0};

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void check_new_and_free(void) {
    CHECK(cops_responder_new(NULL, "/site") == NULL);
    CHECK(cops_responder_new("proc", NULL) == NULL);
    CHECK(cops_responder_new(NULL, NULL) == NULL);
    CHECK(cops_responder_new(BAD_UTF8, "/site") == NULL);
    CHECK(cops_responder_new("proc", BAD_UTF8) == NULL);
    CHECK(cops_responder_new("", "/site") == NULL);       /* empty name */
    CHECK(cops_responder_new("proc", "site") == NULL);    /* no leading '/' */
    CHECK(cops_responder_new("proc", "/") == NULL);       /* the root */
    CHECK(cops_responder_new("proc", "/site/") == NULL);  /* trailing '/' */
    cops_responder_free(NULL);                            /* a no-op */
}

static void check_status_str(void) {
    int s;
    for (s = -7; s <= 3; s++) {
        const char *text = cops_status_str((cops_status)s);
        CHECK(text != NULL && text[0] != '\0');
    }
    CHECK(strcmp(cops_status_str((cops_status)42), "unknown status") == 0);
    CHECK(strcmp(cops_status_str(COPS_OK), "ok") == 0);
    CHECK(strstr(cops_status_str(COPS_ERR_BUFFER_TOO_SMALL), "too small") != NULL);
}

static void check_nulls(cops_responder *r) {
    char reply[256];
    size_t len = 999;
    const uint8_t body[] = "17";
    CHECK(cops_responder_set_version(NULL, "1", "2", "3") == COPS_ERR_NULL);
    CHECK(cops_responder_set_version(r, NULL, "2", "3") == COPS_ERR_NULL);
    CHECK(cops_responder_set_version(r, "1", NULL, "3") == COPS_ERR_NULL);
    CHECK(cops_responder_set_version(r, "1", "2", NULL) == COPS_ERR_NULL);
    CHECK(cops_responder_set_version(r, BAD_UTF8, "2", "3") == COPS_ERR_INVALID);
    CHECK(cops_responder_heartbeat(NULL) == 0);
    CHECK(cops_responder_fd(NULL) == -1);
    CHECK(cops_responder_poll(NULL, 0) == COPS_ERR_NULL);
    CHECK(cops_responder_connect(NULL, "/nonexistent") == COPS_ERR_NULL);

    CHECK(cops_responder_handle(NULL, "get", "/m/cops", "/r", NULL, 0, reply, sizeof reply,
                                &len) == COPS_ERR_NULL);
    CHECK(cops_responder_handle(r, NULL, "/m/cops", "/r", NULL, 0, reply, sizeof reply, &len) ==
          COPS_ERR_NULL);
    CHECK(cops_responder_handle(r, "get", NULL, "/r", NULL, 0, reply, sizeof reply, &len) ==
          COPS_ERR_NULL);
    CHECK(cops_responder_handle(r, "get", "/m/cops", "/r", NULL, 0, reply, sizeof reply, NULL) ==
          COPS_ERR_NULL);
    /* body NULL with a length, reply NULL with a capacity */
    CHECK(cops_responder_handle(r, "set", "/m/cops/cops_heartbeat", NULL, NULL, 2, reply,
                                sizeof reply, &len) == COPS_ERR_NULL);
    CHECK(cops_responder_handle(r, "get", "/m/cops", "/r", body, 0, NULL, 10, &len) ==
          COPS_ERR_NULL);
    CHECK(len == 999); /* out-parameter untouched on errors */
    /* non-UTF-8 strings are argument errors */
    CHECK(cops_responder_handle(r, BAD_UTF8, "/m/cops", "/r", NULL, 0, reply, sizeof reply,
                                &len) == COPS_ERR_INVALID);
    CHECK(cops_responder_handle(r, "get", BAD_UTF8, "/r", NULL, 0, reply, sizeof reply, &len) ==
          COPS_ERR_INVALID);
    CHECK(cops_responder_handle(r, "get", "/m/cops", BAD_UTF8, NULL, 0, reply, sizeof reply,
                                &len) == COPS_ERR_INVALID);
    CHECK(len == 999);
    CHECK(cops_responder_heartbeat(r) == 0);
}

static void check_handle(cops_responder *r) {
    char reply[256], small[4], buf[32];
    size_t len = 999, needed;
    const uint8_t hb[] = {'4', '2'};
    const uint8_t not_utf8[] = {0xff, '1'};

    /* not mine: untouched for the host, reply may be NULL with cap 0 */
    CHECK(cops_responder_handle(r, "get", "/m/other", "/r", NULL, 0, NULL, 0, &len) ==
          COPS_NOT_MINE);
    CHECK(len == 0);
    CHECK(cops_responder_handle(r, "get", "/m/copsx", "/r", NULL, 0, NULL, 0, &len) ==
          COPS_NOT_MINE);

    /* set without replyto: stored, nothing to send; "" is no replyto too */
    len = 999;
    CHECK(cops_responder_handle(r, "set", "/m/cops/cops_heartbeat", NULL, hb, sizeof hb, reply,
                                sizeof reply, &len) == COPS_OK);
    CHECK(len == 0);
    CHECK(cops_responder_heartbeat(r) == 42);
    CHECK(cops_responder_handle(r, "get", "/m/cops", "", NULL, 0, reply, sizeof reply, &len) ==
          COPS_OK);
    CHECK(len == 0);

    /* a body that is not UTF-8 is the bus's bad input: an "Error: ..." answer */
    CHECK(cops_responder_handle(r, "set", "/m/cops/cops_heartbeat", "/r", not_utf8,
                                sizeof not_utf8, reply, sizeof reply, &len) == COPS_OK);
    CHECK(len > 8 && memcmp(reply, "\"Error: ", 8) == 0);
    CHECK(cops_responder_heartbeat(r) == 42);

    /* buffer too small: *reply_len says how much is needed, then it fits exactly */
    len = 0;
    CHECK(cops_responder_handle(r, "get", "/m/cops", "/r", NULL, 0, NULL, 0, &len) ==
          COPS_ERR_BUFFER_TOO_SMALL);
    needed = len;
    CHECK(needed > sizeof small);
    CHECK(cops_responder_handle(r, "get", "/m/cops", "/r", NULL, 0, small, sizeof small, &len) ==
          COPS_ERR_BUFFER_TOO_SMALL);
    CHECK(len == needed);
    {
        char *exact = (char *)malloc(needed);
        CHECK(exact != NULL);
        if (exact != NULL) {
            CHECK(cops_responder_handle(r, "get", "/m/cops", "/r", NULL, 0, exact, needed - 1,
                                        &len) == COPS_ERR_BUFFER_TOO_SMALL);
            CHECK(cops_responder_handle(r, "get", "/m/cops", "/r", NULL, 0, exact, needed,
                                        &len) == COPS_OK);
            CHECK(len == needed);
            snprintf(buf, sizeof buf, "\"pid\":%ld", (long)getpid());
            CHECK(memmem(exact, len, buf, strlen(buf)) != NULL);
            CHECK(memmem(exact, len, "\"cops_heartbeat\":42", 19) != NULL);
            CHECK(memmem(exact, len, "\"version_tag\":\"1.2.3\"", 21) != NULL);
            free(exact);
        }
    }
    /* unknown field and wrong method under /cops: errors for the bus, not for C */
    CHECK(cops_responder_handle(r, "get", "/m/cops/nope", "/r", NULL, 0, reply, sizeof reply,
                                &len) == COPS_OK);
    CHECK(len > 8 && memcmp(reply, "\"Error: ", 8) == 0);
    CHECK(cops_responder_handle(r, "del", "/m/cops", "/r", NULL, 0, reply, sizeof reply, &len) ==
          COPS_OK);
    CHECK(len > 8 && memcmp(reply, "\"Error: ", 8) == 0);
}

static void check_mode_b_misuse(cops_responder *r) {
    double t0;
    int rc;
    CHECK(cops_responder_fd(r) == -1);
    CHECK(cops_responder_poll(r, 0) == COPS_ERR_INVALID); /* poll before connect */
    CHECK(cops_responder_poll(r, 10) == COPS_ERR_INVALID);
    /* no broker there: COPS_ERR_IO, and poll keeps trying within its timeout */
    CHECK(cops_responder_connect(r, "/nonexistent/cops-misuse.sock") == COPS_ERR_IO);
    CHECK(cops_responder_fd(r) == -1);
    t0 = now_ms();
    rc = cops_responder_poll(r, 150);
    CHECK(rc == COPS_ERR_IO || rc == 0);
    CHECK(now_ms() - t0 >= 140 && now_ms() - t0 < 2000);
    CHECK(cops_responder_connect(r, "") == COPS_ERR_INVALID);
}

int main(void) {
    cops_responder *r;
    check_new_and_free();
    check_status_str();
    r = cops_responder_new("misuse", "/m");
    CHECK(r != NULL);
    if (r == NULL) return 1;
    check_nulls(r);
    CHECK(cops_responder_set_version(r, "1.2.3", "abc", "") == COPS_OK);
    check_handle(r);
    check_mode_b_misuse(r);
    cops_responder_free(r);
    if (failures == 0) printf("misuse: all checks passed\n");
    return failures == 0 ? 0 : 1;
}
