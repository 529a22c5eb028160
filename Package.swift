// swift-tools-version:6.1
import PackageDescription

// Every target: Swift 6 mode, strict concurrency, and the upcoming features that make
// dependencies and existentials explicit (as in grpc-swift-2).
let strict: [SwiftSetting] = [
  .swiftLanguageMode(.v6),
  .enableUpcomingFeature("ExistentialAny"),
  .enableUpcomingFeature("InternalImportsByDefault"),
  .enableUpcomingFeature("MemberImportVisibility"),
]

// The hot paths (packet codec, translation engine, planner) must stay fast in debug test runs too.
let hot: [SwiftSetting] = strict + [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]

let package = Package(
  name: "hostnat",
  platforms: [.macOS(.v15)],
  products: [
    .executable(name: "hostnat", targets: ["hostnat"]),
  ],
  dependencies: [
    .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
    .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
    .package(url: "https://github.com/grpc/grpc-swift-2.git", from: "2.4.3"),
    .package(url: "https://github.com/grpc/grpc-swift-protobuf.git", from: "2.4.1"),
    .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
  ],
  targets: [
    // Pure modules: no I/O, no dependencies outside the standard library.
    .target(name: "HostnatPackets", swiftSettings: hot),
    .target(name: "HostnatEngine", dependencies: ["HostnatPackets"], swiftSettings: hot),
    .target(name: "HostnatPlanner", swiftSettings: hot),

    // Generated protobuf + gRPC code for proto/hostnat/v1 (see scripts/generate-proto.sh).
    .target(
      name: "HostnatProto",
      dependencies: [
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
      ],
      swiftSettings: strict
    ),

    // The controller (Cloud Router): durable intent in SQLite, control streams to hosts and edge.
    .target(
      name: "HostnatController",
      dependencies: [
        "HostnatProto", "HostnatPlanner", "HostnatPackets",
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "GRDB", package: "GRDB.swift"),
      ],
      swiftSettings: strict
    ),

    // In-memory benchmarks of the pure modules, driven by `hostnat bench`.
    .target(name: "HostnatBench", dependencies: ["HostnatEngine", "HostnatPlanner", "HostnatPackets", "CHostnatBaseline"], swiftSettings: hot),
    // The plain C loop the engine benchmark is compared with, side by side.
    .target(name: "CHostnatBaseline", cSettings: [.unsafeFlags(["-O3"])]),

    // The one executable: each role and admin command is a subcommand.
    .executableTarget(
      name: "hostnat",
      dependencies: [
        "HostnatBench", "HostnatProto",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
      ],
      swiftSettings: strict
    ),

    .testTarget(name: "HostnatPacketsTests", dependencies: ["HostnatPackets"], resources: [.copy("Fixtures")], swiftSettings: strict),
    .testTarget(name: "HostnatEngineTests", dependencies: ["HostnatEngine", "HostnatPackets"], swiftSettings: strict),
    .testTarget(name: "HostnatPlannerTests", dependencies: ["HostnatPlanner"], swiftSettings: strict),
    .testTarget(name: "HostnatControllerTests", dependencies: [
      "HostnatController", "HostnatProto", "HostnatPlanner",
      .product(name: "SwiftProtobuf", package: "swift-protobuf"),
      .product(name: "GRPCCore", package: "grpc-swift-2"),
      .product(name: "GRPCInProcessTransport", package: "grpc-swift-2"),
    ], swiftSettings: strict),
    .testTarget(name: "HostnatProtoTests", dependencies: [
      "HostnatProto",
      .product(name: "SwiftProtobuf", package: "swift-protobuf"),
    ], swiftSettings: strict),
  ]
)
