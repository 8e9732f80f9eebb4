#!/usr/bin/env bash
# libFuzzer on the config loader (INI parser, URL parser, every key's reader)
# for FUZZ_SECONDS (default 60). Compiles only what the loader needs: AMQP's
# URL parsing and Warren's settings types plainly, WarrenConfig with the
# fuzzer and AddressSanitizer. A crash or a rejection without a line number
# fails with the input saved under .build-fuzz/.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-60}
out=.build-fuzz
mkdir -p "$out/corpus"
# Swift's own crash backtracer trips AddressSanitizer; libFuzzer reports the crash.
export SWIFT_BACKTRACE=enable=no
flags=(-swift-version 6 -parse-as-library -I "$out" -enable-upcoming-feature ExistentialAny -enable-upcoming-feature InternalImportsByDefault)

swiftc "${flags[@]}" -O -wmo -module-name AMQP -emit-module -emit-module-path "$out/AMQP.swiftmodule" \
    -c Sources/AMQP/AMQPError.swift Sources/AMQP/ConnectionOptions.swift -o "$out/AMQP.o"
swiftc "${flags[@]}" -O -wmo -module-name Warren -emit-module -emit-module-path "$out/Warren.swiftmodule" \
    -c Sources/Warren/Settings.swift Sources/Warren/CommandWords.swift Sources/Warren/AckTimeoutRule.swift \
    Sources/Warren/SettleBounds.swift -o "$out/Warren.o"
# ConfigDescription (--check-config's printer) is left out: the loader never
# calls it, and it needs more of Warren.
loader=$(ls Sources/WarrenConfig/*.swift | grep -v /ConfigDescription.swift)
# shellcheck disable=SC2086
swiftc "${flags[@]}" -O -sanitize=fuzzer,address -module-name WarrenConfig \
    $loader Fuzz/ConfigFuzzTarget.swift "$out/AMQP.o" "$out/Warren.o" -o "$out/config-fuzzer"

# New inputs go to $out/corpus; the committed seeds in Fuzz/corpus are only read.
"$out/config-fuzzer" -max_total_time="$seconds" -max_len=4096 -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$out/" "$out/corpus" Fuzz/corpus
