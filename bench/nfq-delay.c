/*
 * nfq-delay: holds every packet of one NFQUEUE queue for a fixed time, then accepts it. It is
 * bench/run's stand-in for `tc qdisc ... netem delay` on kernels built without sch_netem: run
 * inside the remote-backend network namespace with iptables sending INPUT and OUTPUT there,
 * each direction is delayed once, like netem on both ends of the veth pair.
 *
 *   nfq-delay QUEUE_NUM DELAY_MICROSECONDS
 *
 * The delay is the same for every packet, so packets leave in arrival order and one batch
 * verdict ("accept everything up to id N") releases all that are due. Only metadata is copied
 * to user space. The queue fails open: packets the queue has no room for pass undelayed.
 */
#define _GNU_SOURCE /* ppoll */
#include <arpa/inet.h> /* before the kernel headers, which then skip what libc defines */
#include <errno.h>
#include <libnetfilter_queue/libnetfilter_queue.h>
#include <linux/netfilter.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>

#define RING 262144 /* packets in flight; at 1 ms that is far beyond what 2 cores produce */

struct held {
    uint32_t id;
    int64_t due_ns;
};

static struct held ring[RING];
static size_t head, tail; /* tail: next free slot; head: oldest held packet */
static int64_t delay_ns;
static volatile sig_atomic_t stopping;

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static int on_packet(struct nfq_q_handle *queue, struct nfgenmsg *message, struct nfq_data *data,
                     void *context) {
    (void)message;
    (void)context;
    struct nfqnl_msg_packet_hdr *header = nfq_get_msg_packet_hdr(data);
    if (header == NULL) return 0;
    uint32_t id = ntohl(header->packet_id);
    if ((tail + 1) % RING == head) /* full: let it through now rather than stall the queue */
        return nfq_set_verdict(queue, id, NF_ACCEPT, 0, NULL);
    ring[tail].id = id;
    ring[tail].due_ns = now_ns() + delay_ns;
    tail = (tail + 1) % RING;
    return 0;
}

/* Accepts every packet that is due; returns ns until the next one is, or -1 if none is held. */
static int64_t release_due(struct nfq_q_handle *queue) {
    int64_t now = now_ns();
    size_t last = RING;
    while (head != tail && ring[head].due_ns <= now) {
        last = head;
        head = (head + 1) % RING;
    }
    if (last != RING) nfq_set_verdict_batch(queue, ring[last].id, NF_ACCEPT);
    return head == tail ? -1 : ring[head].due_ns - now;
}

static void stop(int signal) {
    (void)signal;
    stopping = 1;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s QUEUE_NUM DELAY_MICROSECONDS\n", argv[0]);
        return 2;
    }
    uint16_t queue_num = (uint16_t)atoi(argv[1]);
    delay_ns = (int64_t)atol(argv[2]) * 1000;
    prctl(PR_SET_TIMERSLACK, 1UL); /* wake within microseconds, not the default 50 us */
    signal(SIGTERM, stop);
    signal(SIGINT, stop);

    struct nfq_handle *handle = nfq_open();
    if (handle == NULL) { perror("nfq_open"); return 1; }
    struct nfq_q_handle *queue = nfq_create_queue(handle, queue_num, on_packet, NULL);
    if (queue == NULL) { perror("nfq_create_queue"); return 1; }
    if (nfq_set_mode(queue, NFQNL_COPY_META, 0) < 0) { perror("nfq_set_mode"); return 1; }
    nfq_set_queue_maxlen(queue, RING / 2);
    nfq_set_queue_flags(queue, NFQA_CFG_F_FAIL_OPEN, NFQA_CFG_F_FAIL_OPEN);
    nfnl_rcvbufsiz(nfq_nfnlh(handle), 16 * 1024 * 1024);

    int fd = nfq_fd(handle);
    char buffer[65536];
    struct pollfd poll_fd = {.fd = fd, .events = POLLIN};
    while (!stopping) {
        int64_t wait_ns = release_due(queue);
        struct timespec timeout = {.tv_sec = wait_ns / 1000000000, .tv_nsec = wait_ns % 1000000000};
        int ready = ppoll(&poll_fd, 1, wait_ns < 0 ? NULL : &timeout, NULL);
        if (ready < 0 && errno != EINTR) { perror("ppoll"); break; }
        if (ready <= 0) continue;
        for (int i = 0; i < 64; i++) { /* drain what is queued, a bounded batch at a time */
            ssize_t got = recv(fd, buffer, sizeof buffer, MSG_DONTWAIT);
            if (got < 0) break; /* EAGAIN, or ENOBUFS after an overflow: carry on */
            nfq_handle_packet(handle, buffer, (int)got);
        }
    }
    /* Let everything still held go before the queue disappears. */
    while (head != tail) {
        ring[head].due_ns = 0;
        release_due(queue);
    }
    nfq_destroy_queue(queue);
    nfq_close(handle);
    return 0;
}
