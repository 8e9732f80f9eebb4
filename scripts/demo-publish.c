/*
 * `make run`'s publisher: one message per line of stdin, `ID<TAB>BODY`,
 * each with that message id (amqp-publish cannot set one), persistent,
 * text/plain, to QUEUE through the default exchange; the queue declared
 * durable first. Returns once the broker confirmed every message.
 *
 *   demo-publish PORT QUEUE < lines
 */
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

static void die_on(amqp_rpc_reply_t reply, const char *what) {
    if (reply.reply_type != AMQP_RESPONSE_NORMAL) {
        fprintf(stderr, "demo-publish: %s failed (%d)\n", what, reply.reply_type);
        exit(1);
    }
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: demo-publish PORT QUEUE < 'ID<TAB>BODY' lines\n");
        return 2;
    }
    const char *queue = argv[2];
    amqp_connection_state_t conn = amqp_new_connection();
    amqp_socket_t *socket = amqp_tcp_socket_new(conn);
    if (amqp_socket_open(socket, "127.0.0.1", atoi(argv[1])) != AMQP_STATUS_OK) {
        fprintf(stderr, "demo-publish: cannot connect to 127.0.0.1:%s\n", argv[1]);
        return 1;
    }
    die_on(amqp_login(conn, "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, "guest", "guest"), "login");
    amqp_channel_open(conn, 1);
    die_on(amqp_get_rpc_reply(conn), "channel.open");
    amqp_queue_declare(conn, 1, amqp_cstring_bytes(queue), 0, 1, 0, 0, amqp_empty_table);
    die_on(amqp_get_rpc_reply(conn), "queue.declare");
    amqp_confirm_select(conn, 1);
    die_on(amqp_get_rpc_reply(conn), "confirm.select");

    char line[4096];
    long published = 0;
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\n")] = 0;
        char *tab = strchr(line, '\t');
        if (!tab) continue;
        *tab = 0;
        amqp_basic_properties_t props;
        props._flags = AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG;
        props.message_id = amqp_cstring_bytes(line);
        props.content_type = amqp_cstring_bytes("text/plain");
        props.delivery_mode = 2;
        if (amqp_basic_publish(conn, 1, amqp_empty_bytes, amqp_cstring_bytes(queue), 1, 0, &props,
                               amqp_cstring_bytes(tab + 1)) != AMQP_STATUS_OK) {
            fprintf(stderr, "demo-publish: publish failed\n");
            return 1;
        }
        published++;
    }
    /* Confirms may come coalesced (multiple) and, as RabbitMQ allows, in
     * any order: each tag is marked, and a broker that stops answering
     * ends the wait after 30 s instead of hanging `make run`. */
    char *done = calloc((size_t)published + 1, 1);
    if (done == NULL) return 1;
    long confirmed = 0;
    while (confirmed < published) {
        amqp_frame_t frame;
        struct timeval timeout = {30, 0};
        if (amqp_simple_wait_frame_noblock(conn, &frame, &timeout) != AMQP_STATUS_OK) {
            fprintf(stderr, "demo-publish: the broker confirmed %ld of %ld messages within 30 s\n", confirmed, published);
            return 1;
        }
        if (frame.frame_type != AMQP_FRAME_METHOD) continue;
        if (frame.payload.method.id == AMQP_BASIC_ACK_METHOD) {
            amqp_basic_ack_t *ack = frame.payload.method.decoded;
            long tag = (long)ack->delivery_tag;
            for (long t = ack->multiple ? 1 : tag; t <= tag && t <= published; t++) {
                if (!done[t]) { done[t] = 1; confirmed++; }
            }
        } else if (frame.payload.method.id == AMQP_BASIC_NACK_METHOD || frame.payload.method.id == AMQP_BASIC_RETURN_METHOD) {
            fprintf(stderr, "demo-publish: the broker refused a message\n");
            return 1;
        }
    }
    free(done);
    amqp_channel_close(conn, 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(conn);
    printf("%ld\n", published);
    return 0;
}
