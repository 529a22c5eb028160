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
    .package(url: "https://github.com/grpc/grpc-swift-nio-transport.git", from: "2.9.2"),
    .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
    .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
    .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
    .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
    .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
    .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
  ],
  targets: [
    // Pure modules: no I/O, no dependencies outside the standard library.
    // The leaf every layer shares: IPv4 addresses and prefixes, HOST:PORT, firewall rule fields.
    .target(name: "HostnatAddressing", swiftSettings: hot),
    .target(name: "HostnatPackets", dependencies: ["HostnatAddressing"], swiftSettings: hot),
    .target(name: "HostnatEngine", dependencies: ["HostnatAddressing", "HostnatPackets"], swiftSettings: hot),
    .target(name: "HostnatPlanner", dependencies: ["HostnatAddressing"], swiftSettings: hot),
    // The emulated Internet's servers (echo, what-is-my-IP, STUN) and the VM traffic generator:
    // packets in, packets out, time as a parameter.
    .target(name: "HostnatInternet", dependencies: ["HostnatAddressing", "HostnatPackets"], swiftSettings: hot),
    .target(name: "HostnatWorkload", dependencies: ["HostnatAddressing", "HostnatPackets"], swiftSettings: hot),

    // The I/O layer of the data plane: batched UDP sockets and the packet loops of agent, edge and VM.
    .target(
      name: "HostnatDataplane",
      dependencies: ["HostnatAddressing", "HostnatPackets", "HostnatEngine"],
      swiftSettings: hot
    ),

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

    // The control protocol's rules both ends apply, with no I/O: fencing tokens and digests,
    // feature negotiation, inventories, and the bounds every number from the wire must keep.
    .target(
      name: "HostnatControlRules",
      dependencies: [
        "HostnatAddressing", "HostnatProto",
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        .product(name: "Crypto", package: "swift-crypto"),
      ],
      swiftSettings: strict
    ),

    // The desired state, computed from intent with no I/O (as OVN's northd): intent checks, the
    // mapping onto the planner, the VPC model and fabric, and the per-host and edge snapshots.
    .target(
      name: "HostnatDesiredState",
      dependencies: [
        "HostnatPlanner", "HostnatProto", "HostnatAddressing",
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        .product(name: "GRPCCore", package: "grpc-swift-2"),
      ],
      swiftSettings: strict
    ),

    // The controller (Cloud Router): durable intent in SQLite, control streams to hosts and edge.
    .target(
      name: "HostnatController",
      dependencies: [
        "HostnatProto", "HostnatPlanner", "HostnatDesiredState", "HostnatAddressing", "HostnatMetrics", "HostnatTrace",
        "HostnatControlRules",
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "GRDB", package: "GRDB.swift"),
        .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        .product(name: "UnixSignals", package: "swift-service-lifecycle"),
        .product(name: "Logging", package: "swift-log"),
      ],
      swiftSettings: strict
    ),

    // Namespaces mode (Linux, root): network namespaces, TUN devices, the TUN <-> Geneve bridge.
    .target(name: "HostnatNetns", dependencies: ["HostnatAddressing", "HostnatPackets", "HostnatEngine", "HostnatDataplane"], swiftSettings: hot),

    // Protocol study: control traces (`--trace-control`), their reading and their replay.
    .target(
      name: "HostnatTrace",
      dependencies: ["HostnatAddressing", 
        "HostnatProto",
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
      ],
      swiftSettings: strict
    ),

    // Prometheus metrics: the registry and catalog, the /metrics and /healthz endpoint, the
    // swift-metrics bootstrap. A leaf: the controller links it without the data plane.
    .target(
      name: "HostnatMetrics",
      dependencies: [
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "NIOHTTP1", package: "swift-nio"),
        .product(name: "Metrics", package: "swift-metrics"),
        .product(name: "CoreMetrics", package: "swift-metrics"),
        .product(name: "Prometheus", package: "swift-prometheus"),
      ],
      swiftSettings: strict
    ),

    // NAT logs in Cloud NAT's shape, and the metrics read from the data plane's counters.
    .target(
      name: "HostnatTelemetry",
      dependencies: ["HostnatAddressing", 
        "HostnatMetrics", "HostnatDataplane", "HostnatEngine", "HostnatPackets",
      ],
      swiftSettings: strict
    ),

    // The files processes write and the lab reads: status, VM reports, the last good config, and
    // the names and rejections both sides spell the same way.
    .target(
      name: "HostnatContracts",
      dependencies: ["HostnatAddressing", 
        "HostnatDataplane", "HostnatInternet", "HostnatWorkload", "HostnatPackets",
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
      ],
      swiftSettings: strict
    ),

    // The VM role: a workload behind its host's agent, speaking Geneve on the underlay.
    .target(
      name: "HostnatVM",
      dependencies: ["HostnatAddressing", 
        "HostnatContracts", "HostnatDataplane", "HostnatInternet", "HostnatWorkload", "HostnatPackets",
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
      ],
      swiftSettings: strict
    ),

    // The host agent and the edge: one control-stream client, last good config on disk, the data plane.
    .target(
      name: "HostnatAgent",
      dependencies: ["HostnatAddressing", 
        "HostnatContracts",
        "HostnatDataplane", "HostnatEngine", "HostnatPackets", "HostnatProto", "HostnatInternet", "HostnatMetrics", "HostnatTelemetry", "HostnatTrace",
        "HostnatControlRules",
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
        .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        .product(name: "Logging", package: "swift-log"),
      ],
      swiftSettings: strict
    ),

    // The gcloud-style admin CLI: a gRPC client of the admin API and its table/json/yaml output.
    .target(
      name: "HostnatAdminCLI",
      dependencies: ["HostnatAddressing", 
        "HostnatProto", "HostnatPackets",
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
        .product(name: "Yams", package: "Yams"),
      ],
      swiftSettings: strict
    ),

    // The lab: a local cluster from a topology file, its status, and the demo of the central claim.
    .target(
      name: "HostnatLab",
      dependencies: ["HostnatAddressing", 
        "HostnatProto", "HostnatContracts", "HostnatDesiredState", "HostnatDataplane", "HostnatWorkload", "HostnatInternet", "HostnatPackets", "HostnatNetns",
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
        .product(name: "Yams", package: "Yams"),
      ],
      swiftSettings: strict
    ),

    // In-memory benchmarks of the pure modules, driven by `hostnat bench`.
    .target(name: "HostnatBench", dependencies: ["HostnatAddressing", "HostnatEngine", "HostnatPlanner", "HostnatPackets", "CHostnatBaseline"], swiftSettings: hot),
    // The plain C loop the engine benchmark is compared with, side by side.
    .target(name: "CHostnatBaseline", cSettings: [.unsafeFlags(["-O3"])]),

    // The one executable: each role and admin command is a subcommand.
    .executableTarget(
      name: "hostnat",
      dependencies: [
        "HostnatAddressing", "HostnatBench", "HostnatProto", "HostnatController", "HostnatAgent", "HostnatContracts", "HostnatVM", "HostnatAdminCLI", "HostnatLab",
        "HostnatDataplane", "HostnatInternet", "HostnatWorkload", "HostnatPackets", "HostnatTelemetry", "HostnatTrace", "HostnatNetns",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        .product(name: "UnixSignals", package: "swift-service-lifecycle"),
        .product(name: "Logging", package: "swift-log"),
      ],
      swiftSettings: strict
    ),

    // What every test target shares: the seeded generator, address literals, a bounded wait.
    .target(name: "HostnatTestSupport", dependencies: ["HostnatAddressing", "HostnatPackets"], path: "Tests/HostnatTestSupport", swiftSettings: strict),
    .testTarget(name: "HostnatAddressingTests", dependencies: ["HostnatAddressing"], swiftSettings: strict),
    .testTarget(name: "HostnatPacketsTests", dependencies: ["HostnatAddressing", "HostnatTestSupport", "HostnatPackets"], resources: [.copy("Fixtures")], swiftSettings: strict),
    .testTarget(name: "HostnatEngineTests", dependencies: ["HostnatTestSupport", "HostnatAddressing", "HostnatEngine", "HostnatPackets"], swiftSettings: strict),
    .testTarget(name: "HostnatInternetTests", dependencies: ["HostnatAddressing", "HostnatTestSupport", "HostnatInternet", "HostnatPackets"], swiftSettings: strict),
    .testTarget(name: "HostnatWorkloadTests", dependencies: ["HostnatAddressing", "HostnatTestSupport", "HostnatWorkload", "HostnatInternet", "HostnatPackets"], swiftSettings: strict),
    .testTarget(name: "HostnatDataplaneTests", dependencies: ["HostnatTestSupport", "HostnatAddressing", "HostnatDataplane", "HostnatEngine", "HostnatPackets"], swiftSettings: strict),
    .testTarget(name: "HostnatControlRulesTests", dependencies: [
      "HostnatControlRules", "HostnatProto", "HostnatAddressing", .product(name: "SwiftProtobuf", package: "swift-protobuf"),
    ], swiftSettings: strict),
    .testTarget(name: "HostnatPlannerTests", dependencies: ["HostnatTestSupport", "HostnatAddressing", "HostnatPlanner"], swiftSettings: strict),
    .testTarget(name: "HostnatControllerTests", dependencies: ["HostnatAddressing", 
      "HostnatController", "HostnatControlRules", "HostnatDesiredState", "HostnatProto", "HostnatPlanner",
      .product(name: "SwiftProtobuf", package: "swift-protobuf"),
      .product(name: "GRPCCore", package: "grpc-swift-2"),
      .product(name: "GRPCInProcessTransport", package: "grpc-swift-2"),
    ], swiftSettings: strict),
    .testTarget(name: "HostnatTelemetryTests", dependencies: ["HostnatTestSupport", "HostnatAddressing", 
      "HostnatTelemetry", "HostnatMetrics", "HostnatDataplane", "HostnatEngine", "HostnatPackets",
      .product(name: "NIOCore", package: "swift-nio"),
      .product(name: "NIOPosix", package: "swift-nio"),
    ], swiftSettings: strict),
    .testTarget(name: "HostnatAgentTests", dependencies: ["HostnatAddressing", 
      "HostnatAgent", "HostnatControlRules", "HostnatContracts", "HostnatProto", "HostnatEngine", "HostnatPackets", "HostnatDataplane",
      .product(name: "SwiftProtobuf", package: "swift-protobuf"),
      .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
      .product(name: "Logging", package: "swift-log"),
    ], swiftSettings: strict),
    .testTarget(name: "HostnatLabTests", dependencies: ["HostnatLab", "HostnatContracts"], swiftSettings: strict),
    // Runs the built `hostnat` binary: controller, CLI and lab end to end on loopback.
    .testTarget(name: "HostnatCLITests", swiftSettings: strict),
    .testTarget(
      name: "HostnatNetnsTests",
      dependencies: ["HostnatTestSupport", "HostnatAddressing", "HostnatNetns", "HostnatDataplane", "HostnatEngine", "HostnatPackets"],
      swiftSettings: strict),
    .testTarget(name: "HostnatTraceTests", dependencies: [
      "HostnatTrace", "HostnatProto",
      .product(name: "SwiftProtobuf", package: "swift-protobuf"),
    ], swiftSettings: strict),
    .testTarget(name: "HostnatProtoTests", dependencies: [
      "HostnatProto",
      .product(name: "SwiftProtobuf", package: "swift-protobuf"),
    ], swiftSettings: strict),
  ]
)
