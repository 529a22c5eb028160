#!/usr/bin/env bash
# Regenerates Sources/HostnatProto from proto/ with Debian's protoc and the Swift plugins built
# from the same swift-protobuf / grpc-swift-protobuf versions the package depends on.
# The output is committed; CI only compiles it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

if ! command -v protoc >/dev/null; then
  echo "installing protoc (Debian's protobuf-compiler)" >&2
  apt-get update -qq && apt-get install -y -qq protobuf-compiler >/dev/null
fi

plugins="$root/scripts/protoc-plugins"
(cd "$plugins" && swift build --product protoc-gen-swift >&2 && swift build --product protoc-gen-grpc-swift-2 >&2)
bin=$(cd "$plugins" && swift build --show-bin-path)

out="$root/Sources/HostnatProto"
rm -f "$out"/*.pb.swift "$out"/*.grpc.swift
protoc \
  --plugin=protoc-gen-swift="$bin/protoc-gen-swift" \
  --plugin=protoc-gen-grpc-swift-2="$bin/protoc-gen-grpc-swift-2" \
  -I proto \
  --swift_out="$out" --swift_opt=Visibility=Public,FileNaming=DropPath,UseAccessLevelOnImports=true \
  --grpc-swift-2_out="$out" --grpc-swift-2_opt=Visibility=Public,FileNaming=DropPath,UseAccessLevelOnImports=true \
  proto/hostnat/v1/*.proto
echo "generated: $(ls "$out" | tr '\n' ' ')"
