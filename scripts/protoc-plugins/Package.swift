// swift-tools-version:6.1
// Builds the protoc plugins from the same swift-protobuf and grpc-swift-protobuf versions that
// the main package depends on, so generated code always matches its runtime. Used only by
// scripts/generate-proto.sh; CI never builds it (the generated code is committed).
import PackageDescription

let package = Package(
  name: "protoc-plugins",
  dependencies: [
    .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
    .package(url: "https://github.com/grpc/grpc-swift-protobuf.git", from: "2.4.1"),
  ],
  targets: []
)
