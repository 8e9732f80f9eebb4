#!/bin/sh
# A demo handler: reads the message body from stdin, says what it got, takes
# a moment, and succeeds. Exit codes pick the outcome: 0 ack, 75 retry later,
# 65 dead-letter.
body=$(cat)
echo "handling message ${WARREN_MESSAGE_ID:-?} (attempt $WARREN_ATTEMPT) from $WARREN_QUEUE: $body"
sleep "${DEMO_WORK_SECONDS:-2}"
exit 0
