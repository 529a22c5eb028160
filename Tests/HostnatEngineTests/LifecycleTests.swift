import HostnatAddressing
import HostnatEngine
import HostnatPackets
import HostnatTestSupport
import Testing

@Suite struct LifecycleTests {
  static func tcp(_ sport: UInt16, _ flags: TCPFlags, to dst: IPv4Address = server, from src: IPv4Address = vmIP) -> [UInt8] {
    PacketBuilder.tcp(source: src, destination: dst, sourcePort: sport, destinationPort: 80, flags: flags)
  }

  struct Step: Sendable { var outbound: Bool; var flags: TCPFlags }
  struct StateCase: Sendable, CustomStringConvertible {
    var description: String
    var steps: [Step]
    var timeout: UInt64
  }

  static let stateCases: [StateCase] = [
    .init(description: "SYN sent", steps: [.init(outbound: true, flags: .syn)], timeout: 30),
    .init(description: "handshake", steps: [.init(outbound: true, flags: .syn), .init(outbound: false, flags: [.syn, .ack]), .init(outbound: true, flags: .ack)], timeout: 1200),
    .init(description: "simultaneous open", steps: [.init(outbound: true, flags: .syn), .init(outbound: false, flags: .syn)], timeout: 1200),
    .init(description: "half closed", steps: [.init(outbound: true, flags: .syn), .init(outbound: false, flags: [.syn, .ack]), .init(outbound: true, flags: [.fin, .ack])], timeout: 30),
    .init(description: "FIN both ways", steps: [.init(outbound: true, flags: .syn), .init(outbound: false, flags: [.syn, .ack]), .init(outbound: true, flags: [.fin, .ack]), .init(outbound: false, flags: [.fin, .ack])], timeout: 120),
    .init(description: "RST in", steps: [.init(outbound: true, flags: .syn), .init(outbound: false, flags: [.rst, .ack])], timeout: 120),
    .init(description: "reopen after TIME_WAIT", steps: [.init(outbound: true, flags: .syn), .init(outbound: false, flags: .rst), .init(outbound: true, flags: .syn)], timeout: 30),
  ]

  @Test(arguments: stateCases)
  func tcpStateSelectsTheTimeout(testCase: StateCase) throws {
    let engine = try NATEngine(capacity: 64, config: EngineConfig(vms: [exampleVM()]))
    var natPort: UInt16 = 0
    let now = 1000 * second
    for step in testCase.steps {
      if step.outbound {
        let (v, out) = run(engine, outbound: true, Self.tcp(24000, step.flags), now: now)
        #expect(v == .forward)
        natPort = ports(expectValid(out))?.0 ?? 0
      } else {
        let reply = PacketBuilder.tcp(source: server, destination: natIP, sourcePort: 80, destinationPort: natPort, flags: step.flags)
        #expect(run(engine, outbound: false, reply, now: now).0 == .forward)
      }
    }
    #expect(engine.flows().first?.expiresAt == now + testCase.timeout * second)
  }

  @Test func timeWaitKeepsThePortFromTheSameDestination() throws {
    let engine = try NATEngine(capacity: 64, config: EngineConfig(vms: [exampleVM(blocks: [PortBlock(natIP: natIP, ports: 50000..<50001)])]))
    #expect(run(engine, outbound: true, Self.tcp(1000, .syn), now: 0).0 == .forward)
    let reset = PacketBuilder.tcp(source: server, destination: natIP, sourcePort: 80, destinationPort: 50000, flags: .rst)
    #expect(run(engine, outbound: false, reset, now: 1).0 == .forward)
    // Another endpoint to the same destination cannot take the port during TIME_WAIT (120 s)…
    #expect(run(engine, outbound: true, Self.tcp(2000, .syn), now: 100 * second).0 == .drop(.outOfResources))
    // …a different destination can (port sharing)…
    #expect(run(engine, outbound: true, Self.tcp(2000, .syn, to: ip("203.0.113.99")), now: 100 * second).0 == .forward)
    // …and once TIME_WAIT is over, the destination can be reached through the port again.
    #expect(run(engine, outbound: true, Self.tcp(3000, .syn), now: 122 * second).0 == .forward)
    #expect(engine.flows().allSatisfy { $0.insidePort != 1000 })
  }

  @Test func udpExpiresAndInboundDoesNotRefresh() throws {
    let engine = try NATEngine(capacity: 64, config: EngineConfig(vms: [exampleVM()]))
    let query = PacketBuilder.udp(source: vmIP, destination: server, sourcePort: 5000, destinationPort: 53)
    let (_, out) = run(engine, outbound: true, query, now: 0)
    #expect(run(engine, outbound: false, reversed(out), now: 29 * second).0 == .forward)
    // The inbound reply at 29 s did not extend the 30 s timer.
    #expect(run(engine, outbound: false, reversed(out), now: 30 * second).0 == .drop(.filteredInbound))
    #expect(engine.flowCount == 0 && engine.mappingCount == 0 && engine.globalCounters.flowsExpired == 1)
  }

  @Test func sweepIsIncrementalAndBounded() throws {
    let engine = try NATEngine(capacity: 256, config: EngineConfig(vms: [exampleVM(blocks: [PortBlock(natIP: natIP, ports: 20000..<20200)])]))
    for port in 0..<100 {
      let p = PacketBuilder.udp(source: vmIP, destination: server, sourcePort: UInt16(1000 + port), destinationPort: 53)
      #expect(run(engine, outbound: true, p, now: 0).0 == .forward)
    }
    #expect(engine.flowCount == 100)
    #expect(engine.sweep(now: 10 * second, budget: 1000) == 0)
    var ended = 0
    var calls = 0
    while engine.flowCount > 0 && calls < 100 {
      let n = engine.sweep(now: 31 * second, budget: 16)
      #expect(n <= 16)
      ended += n
      calls += 1
    }
    #expect(ended == 100 && calls == 7 && engine.mappingCount == 0)
  }

  @Test func drainedIPKeepsFlowsButTakesNoNewOnes() throws {
    let ip1 = ip("192.0.2.10")
    let ip2 = ip("192.0.2.11")
    let blocks = [PortBlock(natIP: ip1, ports: 30000..<30100), PortBlock(natIP: ip2, ports: 30000..<30100)]
    var vm = exampleVM(blocks: blocks)
    let engine = try NATEngine(capacity: 1024, config: EngineConfig(vms: [vm]), seed: 7)
    var onIP1: [[UInt8]] = []
    var onIP1Originals: [[UInt8]] = []
    for sport in UInt16(1000)..<1040 {
      let p = Self.tcp(sport, .syn)
      let (_, out) = run(engine, outbound: true, p, now: 0)
      if expectValid(out)?.source == ip1 {
        onIP1.append(out)
        onIP1Originals.append(p)
      }
    }
    try #require(!onIP1.isEmpty)
    vm.gateway.drainedNatIPs = [ip1]
    try engine.apply(EngineConfig(vms: [vm]), now: 1)
    // Existing flows continue both ways.
    for (out, original) in zip(onIP1, onIP1Originals) {
      #expect(run(engine, outbound: true, original, now: 2) == (.forward, out))
      #expect(run(engine, outbound: false, reversed(out), now: 2).0 == .forward)
    }
    // A mapped endpoint on the drained IP cannot open a new connection elsewhere.
    let sport = UInt16(onIP1Originals[0][21]) | UInt16(onIP1Originals[0][20]) << 8
    #expect(run(engine, outbound: true, Self.tcp(sport, .syn, to: ip("203.0.113.200")), now: 2).0 == .drop(.endpointIndependenceConflict))
    // New endpoints only ever land on the active IP.
    for sport in UInt16(2000)..<2050 {  // ip2 has 100 ports, at most 40 taken towards this server
      let (v, out) = run(engine, outbound: true, Self.tcp(sport, .syn), now: 3)
      #expect(v == .forward && expectValid(out)?.source == ip2)
    }
  }

  @Test func applyEndsFlowsOnRemovedBlocksAndVMs() throws {
    let a = exampleVM(id: "a", address: ip("10.0.0.2"), blocks: [PortBlock(natIP: natIP, ports: 30000..<30010)])
    let b = exampleVM(id: "b", address: ip("10.0.0.3"), blocks: [PortBlock(natIP: natIP, ports: 30010..<30020)])
    let c = exampleVM(id: "c", address: ip("10.0.0.4"), blocks: [PortBlock(natIP: natIP, ports: 30020..<30030)])
    let engine = try NATEngine(capacity: 64, config: EngineConfig(vms: [a, b, c]))
    var replies: [String: [UInt8]] = [:]
    for vm in [a, b, c] {
      let (_, out) = run(engine, outbound: true, Self.tcp(1000, .syn, from: vm.primaryIP), now: 0)
      replies[vm.id] = reversed(out)
    }
    var b2 = b
    b2.portBlocks = [PortBlock(natIP: natIP, ports: 30040..<30050)]
    try engine.apply(EngineConfig(vms: [a, b2]), now: 1)
    #expect(run(engine, outbound: false, replies["a"]!, now: 2).0 == .forward)
    #expect(run(engine, outbound: false, replies["b"]!, now: 2).0 == .drop(.filteredInbound))
    #expect(run(engine, outbound: false, replies["c"]!, now: 2).0 == .drop(.filteredInbound))
    #expect(engine.globalCounters.flowsEndedByConfig == 2)
    // b's endpoint gets a fresh mapping in its new block.
    let (v, out) = run(engine, outbound: true, Self.tcp(1000, .syn, from: b.primaryIP), now: 3)
    #expect(v == .forward && (30040..<30050).contains(Int(ports(expectValid(out))?.0 ?? 0)))
    // Counters follow VM ids across configs.
    #expect(engine.counters(forVM: "a")?.packetsIn == 1 && engine.counters(forVM: "c") == nil)
  }

  @Test(arguments: [
    (EngineConfig(vms: [exampleVM(id: "x"), exampleVM(id: "x", address: ip("10.0.0.3"))]), EngineError.duplicateVM(id: "x")),
    (EngineConfig(vms: [exampleVM(blocks: [PortBlock(natIP: natIP, ports: 1000..<1100)])]), .portBlockOutOfRange(vm: "vm-a", ports: 1000..<1100)),
    (EngineConfig(vms: [exampleVM(id: "x"), exampleVM(id: "y", address: ip("10.0.0.3"))]), .overlappingPortBlocks(vm: "x", other: "y", natIP: natIP)),
    (EngineConfig(vms: [exampleVM(id: "x"), exampleVM(id: "y", blocks: [])]), .overlappingSourceRanges(vm: "x", other: "y")),
  ])
  func invalidConfigsAreRefusedAndTheOldOneStays(config: EngineConfig, error: EngineError) throws {
    let engine = try NATEngine(capacity: 16, config: EngineConfig(vms: [exampleVM()]))
    #expect(throws: error) { try engine.apply(config, now: 0) }
    #expect(run(engine, outbound: true, Self.tcp(1, .syn), now: 0).0 == .forward)
  }

  @Test func reattachingToTheSameBytesKeepsFlows() throws {
    let capacity = 128
    let size = NATEngine.regionSize(capacity: capacity)
    let region = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 64)
    defer { region.deallocate() }
    let config = EngineConfig(vms: [exampleVM()])
    var replies: [[UInt8]] = []
    var originals: [[UInt8]] = []
    do {
      let first = try NATEngine(formatting: region, capacity: capacity, config: config, seed: 99)
      for sport in UInt16(1000)..<1010 {
        let p = Self.tcp(sport, .syn)
        let (_, out) = run(first, outbound: true, p, now: 0)
        replies.append(reversed(out))
        originals.append(reversed(p))
      }
    }  // the first engine is gone (as after SIGKILL); the bytes remain
    let second = try NATEngine(attaching: region, config: config)
    #expect(second.flowCount == 10 && second.capacity == capacity)
    for (reply, original) in zip(replies, originals) {
      #expect(run(second, outbound: false, reply, now: 1) == (.forward, original))
    }
    let garbage = region
    garbage[0] ^= 0xFF
    #expect(throws: EngineError.badMagic) { try NATEngine(attaching: garbage, config: config) }
    garbage[0] ^= 0xFF
    #expect(throws: EngineError.self) { try NATEngine(attaching: UnsafeMutableRawBufferPointer(rebasing: region[0..<100]), config: config) }
  }

  @Test(arguments: [(LogFilter.all, 1, 1), (.errorsOnly, 0, 1), (.translationsOnly, 1, 0)])
  func logFilter(filter: LogFilter, ok: Int, dropped: Int) throws {
    let gw = GatewaySettings(logging: LoggingConfig(enabled: true, filter: filter))
    let engine = try NATEngine(capacity: 16, config: EngineConfig(vms: [exampleVM(blocks: [PortBlock(natIP: natIP, ports: 40000..<40001)], gateway: gw)]))
    let ring = LogRing(capacity: 8)
    engine.logSink = ring
    _ = run(engine, outbound: true, Self.tcp(1, .syn), now: 5)
    _ = run(engine, outbound: true, Self.tcp(2, .syn), now: 6)  // same destination, no port left
    let records = ring.drain()
    #expect(records.filter { $0.status == .ok }.count == ok)
    #expect(records.filter { $0.status == .dropped }.count == dropped)
    if let r = records.first(where: { $0.status == .ok }) {
      #expect(r.insideIP == vmIP && r.insidePort == 1 && r.natIP == natIP && r.natPort == 40000 && r.remotePort == 80 && r.timestamp == 5)
      #expect(engine.vmID(at: Int(r.vmIndex ?? 99)) == "vm-a")
    }
    if let r = records.first(where: { $0.status == .dropped }) { #expect(r.reason == .outOfResources) }
    #expect(ring.count == 0)
  }

  @Test func logRingOverwritesOldestWhenFull() throws {
    let gw = GatewaySettings(logging: LoggingConfig(enabled: true))
    let engine = try NATEngine(capacity: 64, config: EngineConfig(vms: [exampleVM(gateway: gw)]))
    let ring = LogRing(capacity: 4)
    engine.logSink = ring
    for sport in UInt16(1)...10 { _ = run(engine, outbound: true, Self.tcp(sport, .syn), now: 0) }
    #expect(ring.overwritten == 6)
    #expect(ring.drain().map(\.insidePort) == [7, 8, 9, 10])
  }
}
