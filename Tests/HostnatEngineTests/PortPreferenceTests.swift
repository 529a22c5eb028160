import HostnatAddressing
import HostnatEngine
import HostnatPackets
import HostnatTestSupport
import Testing

/// EIM port choice: a new mapping takes a NAT port no live mapping uses, and shares one only when
/// every port of the VM is mapped (so endpoints of one VM talking to the same server do not collide).
@Suite struct PortPreferenceTests {
  static let portsT = ip("203.0.113.7")
  static let portsS = ip("198.51.100.9")
  /// The VM of `exampleVM()`: 64 ports, 34000..<34064 on 192.0.2.10, EIM.
  static let block = 34000..<34064

  static func packet(_ proto: UInt8, _ sport: UInt16, to dst: IPv4Address, dport: UInt16 = 7) -> [UInt8] {
    proto == IPProtocol.tcp
      ? PacketBuilder.tcp(source: vmIP, destination: dst, sourcePort: sport, destinationPort: dport, flags: .syn)
      : PacketBuilder.udp(source: vmIP, destination: dst, sourcePort: sport, destinationPort: dport, payload: [1, 2])
  }

  /// Sends one packet; returns the verdict and the NAT port it left with (0 when dropped).
  static func send(_ engine: NATEngine, _ proto: UInt8, _ sport: UInt16, to dst: IPv4Address, dport: UInt16 = 7, now: UInt64)
    -> (Verdict, UInt16)
  {
    let (v, out) = run(engine, outbound: true, packet(proto, sport, to: dst, dport: dport), now: now)
    guard v == .forward else { return (v, 0) }
    return (v, ports(expectValid(out))?.0 ?? 0)
  }

  static func conflicts(_ engine: NATEngine) -> UInt64 {
    engine.counters(forVM: "vm-a")?.droppedEndpointIndependenceConflict ?? 99
  }

  /// A destination only endpoint `sport` talks to.
  static func own(_ sport: UInt16) -> IPv4Address { IPv4Address(100, 64, UInt8(sport >> 8), UInt8(sport & 0xFF)) }

  /// Every endpoint in `sports` opens a flow to T, then one to S. Expects no drop, one distinct NAT
  /// port per endpoint, and the same port for both destinations.
  ///
  /// With `ownFirst` each endpoint first opens a flow to a destination of its own. That is the case
  /// that used to fail: when first flows go to *different* destinations nothing stopped two endpoints
  /// from drawing the same port, and the second one was then dropped (EIM conflict) on reaching T.
  /// When T comes first, the taken outside 5-tuples towards T already force distinct ports.
  static func expectTThenS(
    _ engine: NATEngine, _ proto: UInt8, sports: some Sequence<UInt16>, ownFirst: Bool = true, now: UInt64,
    in block: Range<Int> = block, sourceLocation: SourceLocation = #_sourceLocation
  ) {
    let before = conflicts(engine)
    var natPorts: [UInt16: UInt16] = [:]
    let sports = Array(sports)
    if ownFirst {
      for sport in sports {
        let (v, p) = send(engine, proto, sport, to: own(sport), now: now)
        #expect(v == .forward, "endpoint \(sport) to its own destination", sourceLocation: sourceLocation)
        natPorts[sport] = p
      }
    }
    for sport in sports {
      let (v, p) = send(engine, proto, sport, to: portsT, now: now)
      #expect(v == .forward, "endpoint \(sport) to T", sourceLocation: sourceLocation)
      #expect(block ~= Int(p), sourceLocation: sourceLocation)
      #expect(natPorts[sport] ?? p == p, "endpoint \(sport): NAT port changed", sourceLocation: sourceLocation)
      natPorts[sport] = p
    }
    for sport in sports {
      let p = natPorts[sport] ?? 0
      let (v, p2) = send(engine, proto, sport, to: portsS, now: now)
      #expect(v == .forward, "endpoint \(sport) to S", sourceLocation: sourceLocation)
      #expect(p2 == p, "endpoint \(sport): NAT port \(p) towards T, \(p2) towards S", sourceLocation: sourceLocation)
    }
    #expect(conflicts(engine) == before, sourceLocation: sourceLocation)
    #expect(Set(natPorts.values).count == natPorts.count, "NAT ports shared", sourceLocation: sourceLocation)
  }

  static let cases: [(UInt64, UInt8, Bool)] = [
    (1, IPProtocol.udp, false), (2, IPProtocol.tcp, false),
    (1, IPProtocol.udp, true), (2, IPProtocol.udp, true), (3, IPProtocol.udp, true), (4, IPProtocol.tcp, true),
    (5, IPProtocol.tcp, true),
  ]

  @Test(arguments: cases)
  func fortyEndpointsToTheSameTwoServersNeverConflict(seed: UInt64, proto: UInt8, ownFirst: Bool) throws {
    let engine = try NATEngine(capacity: 1024, config: EngineConfig(vms: [exampleVM()]), seed: seed)
    Self.expectTThenS(engine, proto, sports: UInt16(1000)..<1040, ownFirst: ownFirst, now: second)
    #expect(engine.mappingCount == 40 && engine.flowCount == (ownFirst ? 120 : 80))
  }

  @Test(arguments: [UInt64(1), 2, 3])
  func whenEveryPortIsMappedANewEndpointShares(seed: UInt64) throws {
    let engine = try NATEngine(capacity: 1024, config: EngineConfig(vms: [exampleVM()]), seed: seed)
    let proto = IPProtocol.udp
    // 64 endpoints take all 64 ports (and can all reach S too).
    Self.expectTThenS(engine, proto, sports: UInt16(1000)..<1064, now: second)
    var owner: [UInt16: UInt16] = [:]  // NAT port → endpoint
    for f in engine.flows() where f.remoteIP == Self.portsT { owner[f.natPort] = f.insidePort }
    #expect(owner.count == 64)

    // A 65th endpoint still gets a (shared) port towards a destination no sharer uses…
    let u = ip("192.0.2.200")
    let (v, shared) = Self.send(engine, proto, 5000, to: u, now: second)
    #expect(v == .forward)
    let sharer = try #require(owner[shared])
    #expect(Self.conflicts(engine) == 0)
    // …and towards a destination the sharer does not use.
    #expect(Self.send(engine, proto, 5000, to: ip("192.0.2.201"), now: second) == (.forward, shared))
    // The sharer's remote port matters: another port on T is a different outside 5-tuple.
    #expect(Self.send(engine, proto, 5000, to: Self.portsT, dport: 8, now: second) == (.forward, shared))
    #expect(Self.conflicts(engine) == 0)
    // A conflict only where the shared port's outside 5-tuple is taken: T:7 and S:7 by the sharer…
    #expect(Self.send(engine, proto, 5000, to: Self.portsT, now: second).0 == .drop(.endpointIndependenceConflict))
    #expect(Self.send(engine, proto, 5000, to: Self.portsS, now: second).0 == .drop(.endpointIndependenceConflict))
    // …and U:7 by the newcomer, for the sharer.
    #expect(Self.send(engine, proto, sharer, to: u, now: second).0 == .drop(.endpointIndependenceConflict))
    #expect(Self.conflicts(engine) == 3)
    // The other protocol's ports are all unmapped still.
    Self.expectTThenS(engine, IPProtocol.tcp, sports: UInt16(1000)..<1064, now: second)
  }

  @Test(arguments: [UInt64(1), 2, 3])
  func expiredMappingsFreeTheirPorts(seed: UInt64) throws {
    let engine = try NATEngine(capacity: 1024, config: EngineConfig(vms: [exampleVM()]), seed: seed)
    let proto = IPProtocol.udp
    // All 64 ports mapped, then one more endpoint shares one.
    Self.expectTThenS(engine, proto, sports: UInt16(1000)..<1064, now: second)
    #expect(Self.send(engine, proto, 5000, to: ip("192.0.2.200"), now: second).0 == .forward)
    // Past the UDP timeout (30 s) the sweep ends every flow and mapping.
    let later = 32 * second
    #expect(engine.sweep(now: later, budget: 1_000) == 193)
    #expect(engine.flowCount == 0 && engine.mappingCount == 0)
    // Every port counts as unmapped again: 64 new endpoints (and the 40-endpoint scenario before
    // that, on new source ports) get distinct ports and reach both servers.
    Self.expectTThenS(engine, proto, sports: UInt16(2000)..<2040, now: later)
    #expect(engine.sweep(now: later + 31 * second, budget: 1_000) == 120)
    Self.expectTThenS(engine, proto, sports: UInt16(3000)..<3064, now: later + 31 * second)
  }

  @Test func endedTCPFlowsFreeTheirPortsOnlyWhenTheLastFlowOfTheMappingGoes() throws {
    let engine = try NATEngine(capacity: 1024, config: EngineConfig(vms: [exampleVM()]), seed: 9)
    let proto = IPProtocol.tcp
    Self.expectTThenS(engine, proto, sports: UInt16(1000)..<1063, now: second)
    // Endpoint 1000's T flow is reset (TIME_WAIT, 120 s); its S flow stays established.
    let natPort = try #require(engine.flows().first { $0.insidePort == 1000 }?.natPort)
    let rst = PacketBuilder.tcp(source: Self.portsT, destination: natIP, sourcePort: 7, destinationPort: natPort, flags: .rst)
    #expect(run(engine, outbound: false, rst, now: second).0 == .forward)
    let synAck = PacketBuilder.tcp(source: Self.portsS, destination: natIP, sourcePort: 7, destinationPort: natPort, flags: [.syn, .ack])
    #expect(run(engine, outbound: false, synAck, now: second).0 == .forward)
    #expect(run(engine, outbound: true, PacketBuilder.tcp(source: vmIP, destination: Self.portsS, sourcePort: 1000, destinationPort: 7, flags: .ack), now: second).0 == .forward)
    // 200 s later the T flow is gone, the S flow (1200 s) still holds the mapping: one port is left.
    let later = 200 * second
    engine.sweep(now: later, budget: 1_000)
    #expect(engine.mappingCount == 1)
    Self.expectTThenS(engine, proto, sports: UInt16(2000)..<2063, now: later)
    #expect(!engine.flows().contains { $0.insidePort >= 2000 && $0.natPort == natPort })
  }

  enum Restart: String, CaseIterable, Sendable { case attach, apply }

  @Test(arguments: Restart.allCases)
  func reattachAndApplyRebuildThePortUse(restart: Restart) throws {
    let capacity = 256
    let region = UnsafeMutableRawBufferPointer.allocate(byteCount: NATEngine.regionSize(capacity: capacity), alignment: 64)
    defer { region.deallocate() }
    let config = EngineConfig(vms: [exampleVM()])
    let proto = IPProtocol.udp
    var first: NATEngine? = try NATEngine(formatting: region, capacity: capacity, config: config, seed: 21)
    for sport in UInt16(1000)..<1040 { #expect(Self.send(first!, proto, sport, to: Self.own(sport), now: second).0 == .forward) }
    let engine: NATEngine
    switch restart {
    case .attach:
      first = nil  // as after SIGKILL: only the bytes remain
      engine = try NATEngine(attaching: region, config: config)
    case .apply:
      // A config change that keeps the block (a new gateway name) recompiles everything.
      var vm = exampleVM()
      vm.gateway.name = "renamed"
      engine = first!
      try engine.apply(EngineConfig(vms: [vm]), now: second)
    }
    #expect(engine.mappingCount == 40)
    // 24 new endpoints (to destinations of their own) must take exactly the 24 ports the first 40
    // left; then all 64 reach T and S.
    #expect(engine.flows().count == 40)
    Self.expectTThenS(engine, proto, sports: UInt16(1000)..<1064, now: 2 * second)
    #expect(Set(engine.flows().map(\.natPort)).count == 64)
  }

  @Test(arguments: [UInt64(1), 2, 3])
  func aMappingMovedToANewBlockCountsThere(seed: UInt64) throws {
    let engine = try NATEngine(capacity: 1024, config: EngineConfig(vms: [exampleVM()]), seed: seed)
    let proto = IPProtocol.udp
    // Endpoint 1000 has two flows on the old block, so its mapping outlives the first one that ends.
    for dst in [ip("192.0.2.200"), ip("192.0.2.201")] {
      #expect(Self.send(engine, proto, 1000, to: dst, now: second).0 == .forward)
    }
    // The VM's block moves: the next new flow re-points the mapping into the new block.
    let moved = 40000..<40064
    try engine.apply(EngineConfig(vms: [exampleVM(blocks: [PortBlock(natIP: natIP, ports: moved)])]), now: second)
    let (v, p) = Self.send(engine, proto, 1000, to: ip("192.0.2.202"), now: 2 * second)
    #expect(v == .forward && moved ~= Int(p))
    // 63 more endpoints take the 63 other ports; the re-pointed one is not handed out again.
    var natPorts: [UInt16: UInt16] = [1000: p]
    for sport in UInt16(2000)..<2063 {
      let (v, q) = Self.send(engine, proto, sport, to: Self.own(sport), now: 2 * second)
      #expect(v == .forward && moved ~= Int(q))
      natPorts[sport] = q
    }
    #expect(Set(natPorts.values).count == 64)
    for (sport, q) in natPorts {
      #expect(Self.send(engine, proto, sport, to: Self.portsT, now: 2 * second) == (.forward, q))
    }
    #expect(Self.conflicts(engine) == 0)
    // The stale flows on the old block end without disturbing the new block's state.
    engine.sweep(now: 3 * second, budget: 1_000)
    #expect(engine.mappingCount == 64 && engine.globalCounters.flowsEndedByConfig == 2)
    engine.sweep(now: 40 * second, budget: 1_000)
    #expect(engine.flowCount == 0 && engine.mappingCount == 0)
    Self.expectTThenS(engine, proto, sports: UInt16(3000)..<3064, now: 40 * second, in: moved)
  }

  @Test func withoutEIMPortsStayPerDestination() throws {
    // 64 ports, 100 endpoints to one server: every port is used once towards T, none is refused.
    let gateway = GatewaySettings(endpointIndependentMapping: false)
    let engine = try NATEngine(capacity: 1024, config: EngineConfig(vms: [exampleVM(gateway: gateway)]), seed: 4)
    var used: Set<UInt16> = []
    for sport in UInt16(1000)..<1064 {
      let (v, p) = Self.send(engine, IPProtocol.udp, sport, to: Self.portsT, now: second)
      #expect(v == .forward)
      used.insert(p)
    }
    #expect(used.count == 64 && engine.mappingCount == 0)
    #expect(Self.send(engine, IPProtocol.udp, 2000, to: Self.portsT, now: second).0 == .drop(.outOfResources))
    #expect(Self.send(engine, IPProtocol.udp, 2000, to: Self.portsS, now: second).0 == .forward)
  }
}
