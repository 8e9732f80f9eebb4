#ifndef WARREN_CRABBITMQ_SHIM_H
#define WARREN_CRABBITMQ_SHIM_H

#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_tcp_socket.h>
#include <amqp_ssl_socket.h>

/*
 * Swift cannot call variadic C functions, and amqp_login_with_properties is
 * one. This wrapper fixes the SASL method to PLAIN and builds the client
 * properties: the capabilities warren relies on (without
 * consumer_cancel_notify a deleted queue silently stops deliveries; without
 * connection.blocked a broker alarm silently stops confirms) and a
 * connection_name so operators can find warren in the management UI.
 */
static inline amqp_rpc_reply_t warren_login(amqp_connection_state_t state,
                                            const char *vhost,
                                            int channel_max,
                                            int frame_max,
                                            int heartbeat,
                                            const char *user,
                                            const char *password,
                                            const char *connection_name) {
    amqp_table_entry_t capabilities[5];
    capabilities[0].key = amqp_cstring_bytes("consumer_cancel_notify");
    capabilities[0].value.kind = AMQP_FIELD_KIND_BOOLEAN;
    capabilities[0].value.value.boolean = 1;
    capabilities[1].key = amqp_cstring_bytes("publisher_confirms");
    capabilities[1].value.kind = AMQP_FIELD_KIND_BOOLEAN;
    capabilities[1].value.value.boolean = 1;
    capabilities[2].key = amqp_cstring_bytes("basic.nack");
    capabilities[2].value.kind = AMQP_FIELD_KIND_BOOLEAN;
    capabilities[2].value.value.boolean = 1;
    capabilities[3].key = amqp_cstring_bytes("authentication_failure_close");
    capabilities[3].value.kind = AMQP_FIELD_KIND_BOOLEAN;
    capabilities[3].value.value.boolean = 1;
    capabilities[4].key = amqp_cstring_bytes("connection.blocked");
    capabilities[4].value.kind = AMQP_FIELD_KIND_BOOLEAN;
    capabilities[4].value.value.boolean = 1;

    amqp_table_entry_t entries[2];
    entries[0].key = amqp_cstring_bytes("capabilities");
    entries[0].value.kind = AMQP_FIELD_KIND_TABLE;
    entries[0].value.value.table.num_entries = 5;
    entries[0].value.value.table.entries = capabilities;
    entries[1].key = amqp_cstring_bytes("connection_name");
    entries[1].value.kind = AMQP_FIELD_KIND_UTF8;
    entries[1].value.value.bytes = amqp_cstring_bytes(connection_name);

    amqp_table_t properties;
    properties.num_entries = 2;
    properties.entries = entries;
    return amqp_login_with_properties(state, vhost, channel_max, frame_max, heartbeat,
                                      &properties, AMQP_SASL_METHOD_PLAIN, user, password);
}

#endif
