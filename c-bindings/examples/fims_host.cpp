/*
 * fims_host.cpp - mode A for a C++ program that already owns its FIMS
 * connection, written the way programs on the existing C++ FIMS client are:
 * connect, one Subscribe with every URI, then a loop that receives a parsed
 * message (method, uri, replyto, NUL-terminated body), dispatches it and frees
 * it. The COPS responder is three lines in that loop: each message is offered
 * to cops_responder_handle *before* the program's own dispatch, and an answer
 * is sent with its length (it is not NUL-terminated).
 *
 * The class `fims` below stands for the existing client library (same method
 * names and message fields, a small implementation over mini_fims.h); in a
 * real program it is the library's.
 *
 * URIs: <uri> (the base URI: it covers <uri>/cops and the hooks below) and
 * /fims_host/<name>, where `get /fims_host/<name>/ticks` answers the number of
 * work-loop iterations. Both are in the one Subscribe: a `sub` replaces the
 * connection's whole set, so a second Subscribe would drop the first.
 * Test hooks of docs/protocol/cops.md (never part of the library):
 *   set <uri>/debug/hang   the main loop spins forever (until a signal)
 *   set <uri>/debug/crash  exit(1) at once
 *
 * Usage: fims_host --name NAME --uri URI [--socket PATH]
 * Prints "fims_host: NAME ready ..." once subscribed; runs until SIGTERM or
 * SIGINT (exit 0); exit 1 on a start-up error or when the broker goes away
 * (its service manager restarts it).
 */
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "cops_responder.h"
#include "mini_fims.h"

// What the version strings say; a real build passes them with -D.
#ifndef APP_VERSION_TAG
#define APP_VERSION_TAG "0.1.0"
#endif
#ifndef APP_VERSION_COMMIT
#define APP_VERSION_COMMIT "unknown"
#endif
#ifndef APP_VERSION_BUILD
#define APP_VERSION_BUILD "0"
#endif

namespace {

volatile sig_atomic_t g_stop = 0;

void on_signal(int) { g_stop = 1; }

/* One received message, as the existing client hands it out: NUL-terminated
   strings, the body too (body_len is its length without the terminator). */
struct fims_message {
    char *method;
    char *uri;
    char *replyto; /* NULL when the sender asked for no answer */
    char *process_name;
    char *body;
    size_t body_len;
};

/* Stands for the existing C++ client: Connect, Subscribe, Receive_Timeout,
   free_message, Send. */
class fims {
  public:
    fims() {
        std::memset(&bus_, 0, sizeof bus_);
        bus_.fd = -1;
    }
    ~fims() { mini_fims_close(&bus_); }
    fims(const fims &) = delete;
    fims &operator=(const fims &) = delete;

    bool Connect(const char *process_name, const char *socket_path) {
        return mini_fims_connect(&bus_, mini_fims_socket_path(socket_path), process_name) == 0;
    }

    /* One `sub` datagram with every URI: it replaces the connection's set. */
    bool Subscribe(const char **uris, int count) {
        return mini_fims_subscribe(&bus_, uris, count) == 0;
    }

    /* The next message within timeout_us, or NULL (timeout, or the broker gone:
       see Connected). Free it with free_message. */
    fims_message *Receive_Timeout(int timeout_us) {
        mini_fims_msg m;
        int got = mini_fims_recv(&bus_, &m, timeout_us / 1000);
        if (got < 0) connected_ = false;
        if (got <= 0) return nullptr;
        fims_message *msg = static_cast<fims_message *>(std::calloc(1, sizeof *msg));
        char *body = static_cast<char *>(std::malloc(m.body_len + 1));
        if (msg == nullptr || body == nullptr) {
            std::free(msg);
            std::free(body);
            return nullptr;
        }
        std::memcpy(body, m.body, m.body_len);
        body[m.body_len] = '\0';
        msg->method = strdup(m.method);
        msg->uri = strdup(m.uri);
        msg->replyto = m.replyto[0] ? strdup(m.replyto) : nullptr;
        msg->process_name = strdup(m.process_name);
        msg->body = body;
        msg->body_len = m.body_len;
        return msg;
    }

    void free_message(fims_message *msg) {
        if (msg == nullptr) return;
        std::free(msg->method);
        std::free(msg->uri);
        std::free(msg->replyto);
        std::free(msg->process_name);
        std::free(msg->body);
        std::free(msg);
    }

    /* Sends body[0..len] (a length, not a C string: answers are not NUL-terminated). */
    bool Send(const char *method, const char *uri, const char *replyto, const char *body,
              size_t len) {
        return mini_fims_send(&bus_, method, uri, replyto, body, len) == 0;
    }

    bool Connected() const { return connected_; }

  private:
    mini_fims bus_;
    bool connected_ = true;
};

bool parse_args(int argc, char **argv, std::string &name, std::string &uri, std::string &sock) {
    for (int i = 1; i + 1 < argc; i += 2) {
        std::string a = argv[i];
        if (a == "--name") name = argv[i + 1];
        else if (a == "--uri") uri = argv[i + 1];
        else if (a == "--socket") sock = argv[i + 1];
        else return false;
    }
    return argc % 2 == 1 && !name.empty() && !uri.empty();
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
    sa.sa_handler = on_signal; // no SA_RESTART: the receive returns on the signal
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);

    cops_responder *cops = cops_responder_new(name.c_str(), uri.c_str());
    if (cops == nullptr) {
        std::fprintf(stderr, "fims_host: bad --name or --uri\n");
        return 1;
    }
    cops_responder_set_version(cops, APP_VERSION_TAG, APP_VERSION_COMMIT, APP_VERSION_BUILD);

    fims *p_fims = new fims();
    const std::string own = "/fims_host/" + name;
    // Trap 2: ONE Subscribe with every URI, the base URI (it covers <uri>/cops) among them.
    const char *subs[] = {uri.c_str(), own.c_str()};
    if (!p_fims->Connect(name.c_str(), sock.c_str()) || !p_fims->Subscribe(subs, 2)) {
        std::fprintf(stderr, "fims_host: cannot connect or subscribe\n");
        delete p_fims;
        cops_responder_free(cops);
        return 1;
    }
    std::printf("fims_host: %s ready on %s and %s\n", name.c_str(), uri.c_str(), own.c_str());
    std::fflush(stdout);

    const std::string hang = uri + "/debug/hang", crash = uri + "/debug/crash";
    const std::string ticks_uri = own + "/ticks";
    unsigned long long ticks = 0;
    static char reply[4096];
    int rc = 0;
    while (!g_stop) {
        fims_message *msg = p_fims->Receive_Timeout(100 * 1000);
        if (msg != nullptr) {
            // ---- the responder: offered first (trap 1), these lines are all it takes ----
            size_t n = 0;
            cops_status s = cops_responder_handle(cops, msg->method, msg->uri, msg->replyto,
                                                  reinterpret_cast<const uint8_t *>(msg->body),
                                                  msg->body_len, reply, sizeof reply, &n);
            if (s == COPS_OK && n > 0) p_fims->Send("set", msg->replyto, nullptr, reply, n);
            else if (s < 0) std::fprintf(stderr, "cops: %s\n", cops_status_str(s));
            // ---- s == COPS_NOT_MINE: the program's own dispatch, as before ----
            if (s == COPS_NOT_MINE) {
                if (std::strcmp(msg->method, "set") == 0 && hang == msg->uri) {
                    std::fprintf(stderr, "fims_host: hanging the main loop on request\n");
                    while (!g_stop) {
                        // spin: no receive, no heartbeat answers, only a signal ends it
                    }
                } else if (std::strcmp(msg->method, "set") == 0 && crash == msg->uri) {
                    std::fprintf(stderr, "fims_host: crashing on request\n");
                    std::exit(1);
                } else if (std::strcmp(msg->method, "get") == 0 && ticks_uri == msg->uri &&
                           msg->replyto != nullptr) {
                    std::string body = std::to_string(ticks);
                    p_fims->Send("set", msg->replyto, nullptr, body.data(), body.size());
                }
            }
            p_fims->free_message(msg);
        } else if (!p_fims->Connected()) {
            std::fprintf(stderr, "fims_host: lost the FIMS broker\n");
            rc = 1;
            break;
        }
        // One iteration of the work loop done: the heartbeat answer carries its figures.
        ++ticks;
        cops_responder_tick(cops);
    }

    delete p_fims;
    cops_responder_free(cops);
    return rc;
}
