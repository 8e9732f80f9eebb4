#!/usr/bin/env node
// A warren persistent worker (mode = persistent) in Node.js, no packages.
// warren writes one JSON envelope per line on stdin; answer each with one
// line on stdout. End of file on stdin means: exit now. Log to stderr.
const readline = require("node:readline");

// Your work: return "ack", "retry" or "dead_letter", and a reason.
async function handle(envelope) {
  if (envelope.body === "poison") return ["dead_letter", "cannot handle a poison message"];
  console.error(`handling ${envelope.properties.message_id}: ${envelope.body}`);
  return ["ack", null];
}

async function main() {
  // Slow set-up goes before this line: it is never charged to a message.
  process.stdout.write(JSON.stringify({ ready: true }) + "\n");
  const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  for await (const line of lines) {
    const envelope = JSON.parse(line);
    let outcome, reason;
    try {
      [outcome, reason] = await handle(envelope);
    } catch (error) {
      [outcome, reason] = ["retry", String(error)];
    }
    const answer = { id: envelope.id, outcome };
    if (reason) answer.reason = reason;
    process.stdout.write(JSON.stringify(answer) + "\n");
  }
}

main();
