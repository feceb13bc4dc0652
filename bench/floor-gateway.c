/*
 * floor-gateway: the least an HTTP-to-FastCGI gateway can do for hello.php, as a floor for
 * bench/run's CPU per request (the peer `floor`). It makes the socket calls every gateway
 * makes for a keep-alive request (read the client's request, write the FastCGI request on a
 * pooled connection, read the app's answer, write the HTTP response) and as little else as
 * it can: the FastCGI request is one fixed byte string built at start-up, the client's head is
 * only searched for its end, the app's output is passed on behind a fixed status line. What
 * its CPU per request shows is the kernel's share that no gateway in front of the same
 * backend avoids; whatever a real gateway spends above it is its own work (parsing, routing,
 * params, timers, the queue's bookkeeping).
 *
 * It is not a gateway: every request, whatever its path, runs ROOT/hello.php; no request
 * bodies, no pipelining, no timeouts; a response must fit in 64 KiB. Like fcgate and HAProxy
 * it keeps at most MAX_CONNS connections to the app (FCGI_KEEP_CONN) and queues requests
 * first come, first served while all are busy. One thread, level-triggered epoll.
 *
 *   floor-gateway PORT UPSTREAM ROOT MAX_CONNS     (UPSTREAM: HOST:PORT or unix:PATH)
 */
#define _GNU_SOURCE /* memmem, accept4 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX_CLIENTS 4096 /* client slots, indexed by descriptor */
#define MAX_BACKENDS 256
#define HEAD_MAX 8192
#define ANSWER_MAX 65536
#define TAG_LISTENER (2ULL << 32)
#define TAG_BACKEND (1ULL << 32)

enum client_state { IDLE, QUEUED, IN_FLIGHT };
struct client {
    int fd; /* -1: closed */
    enum client_state state;
    unsigned generation; /* tells a slot's new connection from the closed one it replaced */
    size_t len;
    char head[HEAD_MAX];
};
struct backend {
    int fd;
    int client; /* -1: free */
    unsigned generation;
    size_t len;
    unsigned char buf[ANSWER_MAX + 16];
};

static struct client clients[MAX_CLIENTS];
static struct backend backends[MAX_BACKENDS];
static int backend_count;
static struct { int client; unsigned generation; } waiting[MAX_CLIENTS];
static size_t wait_head, wait_len;
static int epoll_fd;
static const char *upstream;
static unsigned char request[2048];
static size_t request_len;
static char answer[ANSWER_MAX];

static void fail(const char *what) {
    perror(what);
    exit(1);
}

/* One name-value pair, both lengths under 128 (the one-byte form of the encoding). */
static unsigned char *put_param(unsigned char *at, const char *name, const char *value) {
    size_t n = strlen(name), v = strlen(value);
    if (n > 127 || v > 127) {
        fprintf(stderr, "a param over 127 bytes: %s\n", name);
        exit(1);
    }
    *at++ = (unsigned char)n;
    *at++ = (unsigned char)v;
    memcpy(at, name, n);
    memcpy(at + n, value, v);
    return at + n + v;
}

/* The one FastCGI request: BEGIN_REQUEST (responder, keep the connection), the params of
 * GET /hello.php, the end of the params and an empty stdin. */
static void build_request(const char *root, const char *port) {
    char script[128];
    unsigned char params[1536], *at = params;
    if (snprintf(script, sizeof script, "%s/hello.php", root) >= (int)sizeof script) {
        fprintf(stderr, "ROOT is too long\n");
        exit(1);
    }
    /* What nginx's fastcgi_params sends for it, all but three the same for every request. */
    static const char *const fixed[][2] = {
        {"QUERY_STRING", ""}, {"REQUEST_METHOD", "GET"}, {"CONTENT_TYPE", ""},
        {"CONTENT_LENGTH", ""}, {"SCRIPT_NAME", "/hello.php"}, {"REQUEST_URI", "/hello.php"},
        {"DOCUMENT_URI", "/hello.php"}, {"SERVER_PROTOCOL", "HTTP/1.1"},
        {"REQUEST_SCHEME", "http"}, {"GATEWAY_INTERFACE", "CGI/1.1"},
        {"SERVER_SOFTWARE", "floor-gateway"}, {"REMOTE_ADDR", "127.0.0.1"},
        {"REMOTE_PORT", "40000"}, {"SERVER_ADDR", "127.0.0.1"}, {"SERVER_NAME", "localhost"},
        {"HTTP_HOST", "localhost"},
    };
    at = put_param(at, "SCRIPT_FILENAME", script);
    at = put_param(at, "DOCUMENT_ROOT", root);
    at = put_param(at, "SERVER_PORT", port);
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) at = put_param(at, fixed[i][0], fixed[i][1]);
    size_t len = (size_t)(at - params), padding = (8 - len % 8) % 8;
    unsigned char *out = request;
    const unsigned char begin[16] = {1, 1, 0, 1, 0, 8, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0};
    const unsigned char params_head[8] = {1, 4, 0, 1, (unsigned char)(len >> 8),
                                          (unsigned char)len, (unsigned char)padding, 0};
    const unsigned char ends[16] = {1, 4, 0, 1, 0, 0, 0, 0, 1, 5, 0, 1, 0, 0, 0, 0};
    memcpy(out, begin, 16);
    memcpy(out + 16, params_head, 8);
    memcpy(out + 24, params, len);
    memset(out + 24 + len, 0, padding);
    memcpy(out + 24 + len + padding, ends, 16);
    request_len = 24 + len + padding + 16;
}

static void watch(int fd, unsigned long long tag) {
    struct epoll_event event = {.events = EPOLLIN, .data.u64 = tag};
    if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &event) < 0) fail("epoll_ctl");
}

static int connect_upstream(void) {
    int fd;
    if (strncmp(upstream, "unix:", 5) == 0) {
        struct sockaddr_un address = {.sun_family = AF_UNIX};
        snprintf(address.sun_path, sizeof address.sun_path, "%s", upstream + 5);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&address, sizeof address) < 0) fail(upstream);
    } else {
        char host[256];
        const char *colon = strrchr(upstream, ':');
        struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *found;
        if (!colon || (size_t)(colon - upstream) >= sizeof host) {
            fprintf(stderr, "UPSTREAM must be HOST:PORT or unix:PATH\n");
            exit(1);
        }
        memcpy(host, upstream, (size_t)(colon - upstream));
        host[colon - upstream] = 0;
        if (getaddrinfo(host, colon + 1, &hints, &found) != 0) fail("getaddrinfo");
        fd = socket(found->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, found->ai_addr, found->ai_addrlen) < 0) fail(upstream);
        freeaddrinfo(found);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return fd;
}

/* Blocking backend sockets: the request is a few hundred bytes, always taken whole. */
static void open_backend(int index) {
    backends[index].fd = connect_upstream();
    backends[index].len = 0;
    watch(backends[index].fd, TAG_BACKEND | (unsigned)index);
}

static void send_request(int index) {
    if (write(backends[index].fd, request, request_len) != (ssize_t)request_len) fail("write to the app");
}

static void dispatch(int index, int client) {
    backends[index].client = client;
    backends[index].generation = clients[client].generation;
    backends[index].len = 0;
    clients[client].state = IN_FLIGHT;
    send_request(index);
}

static void close_client(int client) {
    close(clients[client].fd);
    clients[client].fd = -1; /* a queued or in-flight request of it is dropped when its turn comes */
}

static void on_client(int client) {
    struct client *c = &clients[client];
    ssize_t n = read(c->fd, c->head + c->len, sizeof c->head - c->len);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (n <= 0 || (c->len += (size_t)n) == sizeof c->head) {
        close_client(client);
        return;
    }
    if (c->state != IDLE || !memmem(c->head, c->len, "\r\n\r\n", 4)) return;
    c->len = 0;
    for (int index = 0; index < backend_count; index++) {
        if (backends[index].client < 0) {
            dispatch(index, client);
            return;
        }
    }
    c->state = QUEUED;
    size_t tail = (wait_head + wait_len++) % MAX_CLIENTS;
    waiting[tail].client = client;
    waiting[tail].generation = c->generation;
}

/* The app's answer is complete: send it on, then give the connection to the oldest waiter. */
static void respond(int index, size_t answer_len) {
    struct backend *b = &backends[index];
    struct client *c = &clients[b->client];
    if (c->fd >= 0 && c->generation == b->generation) {
        const char *blank = memmem(answer, answer_len, "\r\n\r\n", 4);
        size_t body = blank ? answer_len - (size_t)(blank + 4 - answer) : 0;
        char status[96];
        int status_len = snprintf(status, sizeof status, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n", body);
        struct iovec parts[2] = {{status, (size_t)status_len}, {answer, answer_len}};
        if (writev(c->fd, parts, 2) < 0) close_client(b->client);
        else c->state = IDLE;
    }
    b->client = -1;
    while (wait_len > 0) {
        int next = waiting[wait_head].client;
        unsigned generation = waiting[wait_head].generation;
        wait_head = (wait_head + 1) % MAX_CLIENTS;
        wait_len--;
        if (clients[next].fd >= 0 && clients[next].generation == generation) {
            dispatch(index, next);
            return;
        }
    }
}

static void on_backend(int index) {
    struct backend *b = &backends[index];
    ssize_t n = read(b->fd, b->buf + b->len, sizeof b->buf - b->len);
    if (n <= 0) {
        /* The app closed the connection (a recycled worker): reconnect, and send the request in
         * flight again; hello.php is safe to repeat. */
        epoll_ctl(epoll_fd, EPOLL_CTL_DEL, b->fd, NULL);
        close(b->fd);
        open_backend(index);
        if (b->client >= 0) send_request(index);
        return;
    }
    b->len += (size_t)n;
    size_t at = 0, answer_len = 0;
    while (at + 8 <= b->len) {
        const unsigned char *record = b->buf + at;
        size_t content = (size_t)record[4] << 8 | record[5], end = at + 8 + content + record[6];
        if (end > b->len) break;
        if (record[1] == 6) { /* FCGI_STDOUT */
            memcpy(answer + answer_len, record + 8, content);
            answer_len += content;
        } else if (record[1] == 3) { /* FCGI_END_REQUEST */
            b->len = 0;
            respond(index, answer_len);
            return;
        }
        at = end;
    }
    if (b->len == sizeof b->buf) {
        fprintf(stderr, "an answer over %d bytes\n", ANSWER_MAX);
        exit(1);
    }
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: floor-gateway PORT UPSTREAM ROOT MAX_CONNS\n");
        return 2;
    }
    upstream = argv[2];
    backend_count = atoi(argv[4]);
    if (backend_count < 1 || backend_count > MAX_BACKENDS) {
        fprintf(stderr, "MAX_CONNS must be 1 to %d\n", MAX_BACKENDS);
        return 2;
    }
    build_request(argv[3], argv[1]);
    epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    if (epoll_fd < 0) fail("epoll_create1");
    for (int index = 0; index < backend_count; index++) {
        open_backend(index);
        backends[index].client = -1;
    }
    int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(listener, (struct sockaddr *)&address, sizeof address) < 0 || listen(listener, 4096) < 0)
        fail("listen");
    watch(listener, TAG_LISTENER);
    struct epoll_event events[256];
    for (;;) {
        int ready = epoll_wait(epoll_fd, events, 256, -1);
        if (ready < 0 && errno != EINTR) fail("epoll_wait");
        for (int i = 0; i < ready; i++) {
            unsigned long long tag = events[i].data.u64;
            int index = (int)(tag & 0xffffffffu);
            if (tag == TAG_LISTENER) {
                int fd;
                while ((fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                    if (fd >= MAX_CLIENTS) {
                        close(fd);
                        continue;
                    }
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    clients[fd].fd = fd;
                    clients[fd].generation++;
                    clients[fd].state = IDLE;
                    clients[fd].len = 0;
                    watch(fd, (unsigned)fd);
                }
            } else if (tag & TAG_BACKEND) {
                on_backend(index);
            } else if (clients[index].fd >= 0) {
                on_client(index);
            }
        }
    }
}
