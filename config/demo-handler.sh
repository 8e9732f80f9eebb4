#!/bin/sh
# A demo handler: reads the message body from stdin, says what it got, takes
# a moment, and succeeds. Exit codes pick the outcome: 0 ack, 75 retry later,
# 65 dead-letter; the demo's messages ask for the other two by their body.
body=$(cat)
echo "handling message ${WARREN_MESSAGE_ID:--} (attempt $WARREN_ATTEMPT) from $WARREN_QUEUE: $body"
sleep "${DEMO_WORK_SECONDS:-2}"
case "$body" in
*"fails once"*) if [ "$WARREN_ATTEMPT" = 1 ]; then exit 75; fi ;;
*rejected*) exit 65 ;;
esac
exit 0
