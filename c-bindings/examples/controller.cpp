/*
 * controller.cpp - a C++ host in the style of a site controller: one class, one
 * main loop that does periodic work every 100 ms and serves its FIMS
 * subscription between ticks. The COPS responder runs in mode A on the
 * controller's own connection (mini_fims.h), on the same thread as the work, so
 * a stuck loop stops the heartbeat answers - which is what COPS is there to see.
 *
 * Test hooks of docs/protocol/cops.md ("The hang hook used in tests"), never part of the library:
 *   set <uri>/debug/hang   the main loop spins forever (until SIGTERM/SIGKILL)
 *   set <uri>/debug/crash  exit(1) at once
 * and `get <uri>/ticks` answers the number of work ticks done.
 *
 * Usage: controller --name NAME --uri URI [--socket PATH]
 *        controller NAME URI [PATH]
 * Runs until SIGTERM or SIGINT; exit status 0 then, 1 on a start-up error.
 */
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "cops_responder.h"
#include "mini_fims.h"

namespace {

volatile sig_atomic_t g_stop = 0;

void on_signal(int) { g_stop = 1; }

using Clock = std::chrono::steady_clock;

class SiteController {
  public:
    SiteController(std::string name, std::string uri, std::string socket)
        : name_(std::move(name)), uri_(std::move(uri)), socket_(std::move(socket)) {}

    ~SiteController() {
        mini_fims_close(&bus_);
        cops_responder_free(cops_);
    }

    SiteController(const SiteController &) = delete;
    SiteController &operator=(const SiteController &) = delete;

    bool start() {
        cops_ = cops_responder_new(name_.c_str(), uri_.c_str());
        if (cops_ == nullptr) {
            std::fprintf(stderr, "controller: bad --name or --uri\n");
            return false;
        }
        cops_responder_set_version(cops_, "2.1.0", "cafe123", "42");
        if (mini_fims_connect(&bus_, mini_fims_socket_path(socket_.c_str()), name_.c_str()) != 0)
            return false;
        const char *subs[1] = {uri_.c_str()}; // the controller's whole URI tree
        return mini_fims_subscribe(&bus_, subs, 1) == 0;
    }

    int run() {
        auto next_tick = Clock::now();
        while (!g_stop) {
            auto now = Clock::now();
            if (now >= next_tick) {
                work();
                next_tick = now + std::chrono::milliseconds(100);
            }
            auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(next_tick - now);
            mini_fims_msg m;
            int got = mini_fims_recv(&bus_, &m, static_cast<int>(wait.count()));
            if (got < 0) {
                std::fprintf(stderr, "controller: lost the FIMS broker\n");
                return 1;
            }
            if (got == 0) continue;
            // ---- the responder: these lines are all a host adds to its loop ----
            size_t n = 0;
            cops_status s = cops_responder_handle(cops_, m.method, m.uri, m.replyto, m.body,
                                                  m.body_len, reply_, sizeof reply_, &n);
            if (s == COPS_OK && n > 0) mini_fims_send(&bus_, "set", m.replyto, nullptr, reply_, n);
            else if (s == COPS_NOT_MINE) on_message(m);
            else if (s < 0) std::fprintf(stderr, "cops: %s\n", cops_status_str(s));
        }
        return 0;
    }

  private:
    void work() { ++ticks_; } // stands for the controller's real periodic work

    void on_message(const mini_fims_msg &m) {
        std::string uri = m.uri;
        if (std::strcmp(m.method, "set") == 0 && uri == uri_ + "/debug/hang") {
            std::fprintf(stderr, "controller: hanging the main loop on request\n");
            while (!g_stop) {
                // spin: no FIMS, no heartbeat answers, only a signal ends it
            }
        } else if (std::strcmp(m.method, "set") == 0 && uri == uri_ + "/debug/crash") {
            std::fprintf(stderr, "controller: crashing on request\n");
            std::exit(1);
        } else if (std::strcmp(m.method, "get") == 0 && uri == uri_ + "/ticks" && m.replyto[0]) {
            std::string body = std::to_string(ticks_);
            mini_fims_send(&bus_, "set", m.replyto, nullptr, body.data(), body.size());
        }
    }

    std::string name_, uri_, socket_;
    cops_responder *cops_ = nullptr;
    mini_fims bus_{};
    char reply_[4096] = {};
    unsigned long long ticks_ = 0;
};

bool parse_args(int argc, char **argv, std::string &name, std::string &uri, std::string &sock) {
    int pos = 0;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        if (a == "--name" && i + 1 < argc) name = argv[++i];
        else if (a == "--uri" && i + 1 < argc) uri = argv[++i];
        else if (a == "--socket" && i + 1 < argc) sock = argv[++i];
        else if (!a.empty() && a[0] != '-' && pos < 3) (pos == 0 ? name : pos == 1 ? uri : sock) = a, pos++;
        else return false;
    }
    return !name.empty() && !uri.empty();
}

} // namespace

int main(int argc, char **argv) {
    std::string name, uri, sock;
    if (!parse_args(argc, argv, name, uri, sock)) {
        std::fprintf(stderr, "usage: %s --name NAME --uri URI [--socket PATH]\n", argv[0]);
        return 1;
    }
    struct sigaction sa;
    std::memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal; // no SA_RESTART: poll returns on the signal
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);

    SiteController controller(name, uri, sock);
    if (!controller.start()) return 1;
    std::printf("controller: %s ready on %s\n", name.c_str(), uri.c_str());
    std::fflush(stdout);
    return controller.run();
}
