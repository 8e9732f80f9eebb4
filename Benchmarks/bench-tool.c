/*
 * The baselines for `make bench`: a plain rabbitmq-c consumer written the
 * way an expert would (one thread, prefetch, acks coalesced with
 * multiple=true), and a fast publisher to fill the queue. Two ack policies:
 *
 *   consume        acks everything so far whenever the socket has nothing
 *                  more buffered (and at least every PREFETCH/2 deliveries);
 *   consume-half   acks with multiple every PREFETCH/2 deliveries only, so
 *                  the broker always has half a window to send.
 *
 *   bench-tool publish HOST PORT QUEUE COUNT SIZE
 *   bench-tool consume HOST PORT QUEUE COUNT PREFETCH
 *   bench-tool consume-half HOST PORT QUEUE COUNT PREFETCH
 *   bench-tool count HOST PORT QUEUE 0 0     prints the messages ready (declares the queue)
 *   bench-tool purge HOST PORT QUEUE 0 0
 *   bench-tool spawn - 0 - COUNT PARALLEL   /bin/cat COUNT times, PARALLEL at once, no broker
 *
 * consume prints "elapsed_seconds count" measured from the first delivery.
 *
 * spawn is the ceiling for any consumer that runs /bin/cat per message on
 * this machine: posix_spawn, a 256-byte body on stdin, stdout to /dev/null,
 * nothing else. No broker, no AMQP, no bookkeeping.
 */
#define _GNU_SOURCE
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <fcntl.h>
#include <spawn.h>
#include <unistd.h>
#include <sys/wait.h>

extern char **environ;

static void die_on(amqp_rpc_reply_t reply, const char *what) {
    if (reply.reply_type != AMQP_RESPONSE_NORMAL) {
        fprintf(stderr, "bench-tool: %s failed (%d)\n", what, reply.reply_type);
        exit(1);
    }
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int spawn_cats(long count, int parallel) {
    char body[256];
    memset(body, 'x', sizeof body);
    int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
    long started = 0, done = 0;
    int running = 0;
    double start = now();
    while (done < count) {
        while (running < parallel && started < count) {
            int in[2];
            if (pipe2(in, O_CLOEXEC) != 0) return 1;
            posix_spawn_file_actions_t actions;
            posix_spawn_file_actions_init(&actions);
            posix_spawn_file_actions_adddup2(&actions, in[0], 0);
            posix_spawn_file_actions_adddup2(&actions, devnull, 1);
            char *args[] = {"/bin/cat", NULL};
            pid_t pid;
            if (posix_spawn(&pid, "/bin/cat", &actions, NULL, args, environ) != 0) return 1;
            posix_spawn_file_actions_destroy(&actions);
            close(in[0]);
            if (write(in[1], body, sizeof body) != sizeof body) return 1;
            close(in[1]);
            running++;
            started++;
        }
        int status;
        if (waitpid(-1, &status, 0) > 0) {
            running--;
            done++;
        }
    }
    printf("%.6f %ld\n", now() - start, done);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: bench-tool publish|consume|consume-half|count|purge|spawn HOST PORT QUEUE COUNT SIZE|PREFETCH|PARALLEL\n");
        return 2;
    }
    const char *mode = argv[1], *host = argv[2], *queue = argv[4];
    int port = atoi(argv[3]);
    long count = atol(argv[5]);
    int extra = atoi(argv[6]);
    if (strcmp(mode, "spawn") == 0) return spawn_cats(count, extra);

    amqp_connection_state_t conn = amqp_new_connection();
    amqp_socket_t *socket = amqp_tcp_socket_new(conn);
    if (amqp_socket_open(socket, host, port) != AMQP_STATUS_OK) {
        fprintf(stderr, "bench-tool: cannot connect\n");
        return 1;
    }
    die_on(amqp_login(conn, "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, "guest", "guest"), "login");
    amqp_channel_open(conn, 1);
    die_on(amqp_get_rpc_reply(conn), "channel.open");
    amqp_queue_declare_ok_t *declared = amqp_queue_declare(conn, 1, amqp_cstring_bytes(queue), 0, 1, 0, 0, amqp_empty_table);
    die_on(amqp_get_rpc_reply(conn), "queue.declare");
    if (strcmp(mode, "count") == 0) {
        printf("%u\n", declared->message_count);
        amqp_destroy_connection(conn);
        return 0;
    }
    if (strcmp(mode, "purge") == 0) {
        amqp_queue_purge(conn, 1, amqp_cstring_bytes(queue));
        amqp_destroy_connection(conn);
        return 0;
    }

    if (strcmp(mode, "publish") == 0) {
        /* BENCH_BODY, if set, is the body (an envelope-shaped line for a
         * program that reads one); otherwise SIZE bytes of 'x'. */
        const char *given = getenv("BENCH_BODY");
        size_t length = given ? strlen(given) : (size_t)extra;
        char *body = malloc(length + 1);
        if (given) memcpy(body, given, length); else memset(body, 'x', length);
        amqp_bytes_t bytes = {.len = length, .bytes = body};
        amqp_basic_properties_t props;
        props._flags = AMQP_BASIC_DELIVERY_MODE_FLAG;
        props.delivery_mode = 1;
        amqp_confirm_select(conn, 1);
        die_on(amqp_get_rpc_reply(conn), "confirm.select");
        for (long i = 0; i < count; i++) {
            if (amqp_basic_publish(conn, 1, amqp_empty_bytes, amqp_cstring_bytes(queue), 0, 0, &props, bytes) != 0) {
                fprintf(stderr, "bench-tool: publish failed\n");
                return 1;
            }
        }
        /* Wait for the broker to confirm the last one. */
        long confirmed = 0;
        while (confirmed < count) {
            amqp_frame_t frame;
            if (amqp_simple_wait_frame(conn, &frame) != AMQP_STATUS_OK) return 1;
            if (frame.frame_type == AMQP_FRAME_METHOD && frame.payload.method.id == AMQP_BASIC_ACK_METHOD) {
                amqp_basic_ack_t *ack = frame.payload.method.decoded;
                confirmed = (long)ack->delivery_tag;
            }
        }
    } else if (strcmp(mode, "consume") == 0 || strcmp(mode, "consume-half") == 0) {
        int drained_acks = strcmp(mode, "consume") == 0;
        uint64_t half = extra / 2 > 0 ? (uint64_t)extra / 2 : 1;
        amqp_basic_qos(conn, 1, 0, (uint16_t)extra, 0);
        die_on(amqp_get_rpc_reply(conn), "basic.qos");
        amqp_basic_consume(conn, 1, amqp_cstring_bytes(queue), amqp_empty_bytes, 0, 0, 0, amqp_empty_table);
        die_on(amqp_get_rpc_reply(conn), "basic.consume");
        long received = 0;
        uint64_t last_tag = 0, acked_tag = 0;
        double start = 0;
        while (received < count) {
            amqp_envelope_t envelope;
            amqp_maybe_release_buffers(conn);
            amqp_rpc_reply_t reply = amqp_consume_message(conn, &envelope, NULL, 0);
            if (reply.reply_type != AMQP_RESPONSE_NORMAL) {
                fprintf(stderr, "bench-tool: consume failed\n");
                return 1;
            }
            if (received == 0) start = now();
            received++;
            last_tag = envelope.delivery_tag;
            amqp_destroy_envelope(&envelope);
            /* Coalesce: ack everything so far every half window, and (consume)
               also whenever nothing more is buffered. */
            if ((drained_acks && !amqp_data_in_buffer(conn)) || received == count || last_tag - acked_tag >= half) {
                amqp_basic_ack(conn, 1, last_tag, 1);
                acked_tag = last_tag;
            }
        }
        printf("%.6f %ld\n", now() - start, received);
    } else {
        fprintf(stderr, "bench-tool: unknown mode %s\n", mode);
        return 2;
    }
    amqp_channel_close(conn, 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(conn);
    return 0;
}
