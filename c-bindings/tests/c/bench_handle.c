/*
 * bench_handle.c - times cops_responder_handle on `get <uri>/cops` with a
 * replyto (the heartbeat query COPS sends every period). Prints the best of 7
 * rounds as "ns_per_call <float>". Run by c-bindings/benches/handle.rs, which
 * times the Rust call the same way and prints the ratio.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "cops_responder.h"

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

int main(int argc, char **argv) {
    long iters = argc > 1 ? atol(argv[1]) : 1000000;
    double best = 1e18;
    char reply[512];
    size_t len = 0, total = 0;
    int round;
    long i;
    cops_responder *r = cops_responder_new("hybridos_controller", "/site");
    if (r == NULL) return 1;
    cops_responder_set_version(r, "1.4.0", "a1b2c3d", "372");
    for (round = 0; round < 7; round++) {
        double t0 = now_ns(), dt;
        for (i = 0; i < iters; i++) {
            cops_status s = cops_responder_handle(r, "get", "/site/cops",
                                                  "/cops/heartbeat/hybridos_controller", NULL, 0,
                                                  reply, sizeof reply, &len);
            if (s != COPS_OK) return 1;
            total += len;
        }
        dt = (now_ns() - t0) / (double)iters;
        if (dt < best) best = dt;
    }
    printf("ns_per_call %.2f\n", best);
    fprintf(stderr, "(%zu bytes answered; reply: %.*s)\n", total, (int)len, reply);
    cops_responder_free(r);
    return 0;
}
