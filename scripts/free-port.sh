#!/usr/bin/env bash
# Prints a TCP port from $1 upward whose neighbours warren's test broker also
# needs (+5000 TLS, +20000 Erlang distribution, +21000 epmd) are free on 127.0.0.1.
port=${1:-25672}
in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
while in_use "$port" || in_use $((port + 5000)) || in_use $((port + 20000)) || in_use $((port + 21000)); do
    port=$((port + 1))
done
echo "$port"
