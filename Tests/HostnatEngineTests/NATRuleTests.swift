import HostnatAddressing
import HostnatEngine
import HostnatPackets
import HostnatTestSupport
import Testing

/// Cloud NAT rules: the lowest-numbered rule matching the destination picks the NAT IPs.
@Suite struct NATRuleTests {
  static let defaultIP = ip("192.0.2.10")
  static let rule10IP = ip("192.0.2.20")
  static let rule10IPb = ip("192.0.2.21")
  static let rule20IP = ip("192.0.2.30")

  static let rules = [
    NATRuleDestinations(ruleNumber: 20, destinations: [cidr("203.0.113.0/24")]),
    NATRuleDestinations(ruleNumber: 10, destinations: [cidr("203.0.113.0/25"), cidr("198.51.100.0/24")]),
  ]

  static func vm(
    rules: [NATRuleDestinations] = rules, blocks: [PortBlock]? = nil, drained: [IPv4Address] = [], eim: Bool = true
  ) -> VMConfig {
    exampleVM(
      blocks: blocks ?? [
        PortBlock(natIP: defaultIP, ports: 34000..<34064),
        PortBlock(natIP: rule10IP, ports: 34000..<34064, ruleNumber: 10),
        PortBlock(natIP: rule20IP, ports: 34000..<34064, ruleNumber: 20),
      ],
      gateway: GatewaySettings(endpointIndependentMapping: eim, drainedNatIPs: drained, rules: rules))
  }

  static func udp(_ sport: UInt16 = 5000, to dst: IPv4Address, from src: IPv4Address = vmIP) -> [UInt8] {
    PacketBuilder.udp(source: src, destination: dst, sourcePort: sport, destinationPort: 53, payload: [1])
  }

  /// The NAT IP:port an outbound packet left from, nil when dropped.
  static func send(_ engine: NATEngine, _ packet: [UInt8], now: UInt64 = 0) -> (IPv4Address, UInt16)? {
    let (v, out) = run(engine, outbound: true, packet, now: now)
    guard v == .forward, let p = expectValid(out), let (port, _) = ports(p) else { return nil }
    return (p.source, port)
  }

  @Test(arguments: [
    ("203.0.113.80", rule10IP),  // rules 10 and 20 both match: the lower number wins
    ("203.0.113.200", rule20IP),
    ("198.51.100.7", rule10IP),
    ("8.8.8.8", defaultIP),  // no rule matches: the default IPs
  ])
  func theLowestNumberedMatchingRulePicksTheNATIP(destination: String, expected: IPv4Address) throws {
    for eim in [true, false] {
      let engine = try NATEngine(capacity: 64, config: EngineConfig(vms: [Self.vm(eim: eim)]))
      let packet = Self.udp(to: ip(destination))
      let sent = try #require(Self.send(engine, packet))
      #expect(sent.0 == expected && (34000..<34064).contains(Int(sent.1)))
      let reply = PacketBuilder.udp(source: ip(destination), destination: sent.0, sourcePort: 53, destinationPort: sent.1, payload: [1])
      #expect(run(engine, outbound: false, reply, now: 1) == (.forward, reversed(packet)))
    }
  }

  @Test func endpointIndependentMappingIsPerRule() throws {
    let engine = try NATEngine(capacity: 64, config: EngineConfig(vms: [Self.vm()]))
    let a = try #require(Self.send(engine, Self.udp(to: ip("203.0.113.1"))))
    let b = try #require(Self.send(engine, Self.udp(to: ip("198.51.100.7"))))
    let c = try #require(Self.send(engine, Self.udp(to: ip("8.8.8.8"))))
    let d = try #require(Self.send(engine, Self.udp(to: ip("1.1.1.1"))))
    let e = try #require(Self.send(engine, Self.udp(to: ip("203.0.113.200"))))
    #expect(a == b && a.0 == Self.rule10IP)  // same rule: same NAT IP:port
    #expect(c == d && c.0 == Self.defaultIP)
    #expect(e.0 == Self.rule20IP)
    #expect(engine.mappingCount == 3 && engine.flowCount == 5)
    // Mappings go with their last flow.
    #expect(engine.sweep(now: 31 * second, budget: 64) == 5)
    #expect(engine.mappingCount == 0)
  }

  @Test func withoutBlocksForTheChosenRuleTheVMIsOutOfResources() throws {
    let noDefault = [PortBlock(natIP: Self.rule10IP, ports: 34000..<34064, ruleNumber: 10)]
    let engine = try NATEngine(capacity: 64, config: EngineConfig(vms: [Self.vm(blocks: noDefault)]))
    #expect(Self.send(engine, Self.udp(to: ip("198.51.100.7"))) != nil)
    // Rule 20 matches but the VM has no blocks on its IPs; it does not borrow rule 10's or others'.
    #expect(run(engine, outbound: true, Self.udp(to: ip("203.0.113.200")), now: 0).0 == .drop(.outOfResources))
    // No rule matches and the VM has no default blocks.
    #expect(run(engine, outbound: true, Self.udp(to: ip("8.8.8.8")), now: 0).0 == .drop(.outOfResources))
    #expect(engine.counters(forVM: "vm-a")?.droppedOutOfResources == 2)
  }

  @Test func aDrainedRuleIPKeepsItsFlowsAndGetsNoNewOnes() throws {
    let blocks = [
      PortBlock(natIP: Self.defaultIP, ports: 34000..<34064),
      PortBlock(natIP: Self.rule10IP, ports: 34000..<34100, ruleNumber: 10),
      PortBlock(natIP: Self.rule10IPb, ports: 34000..<34100, ruleNumber: 10),
    ]
    let engine = try NATEngine(capacity: 256, config: EngineConfig(vms: [Self.vm(blocks: blocks)]), seed: 3)
    let dst = ip("198.51.100.7")
    var onDrained: [(UInt16, (IPv4Address, UInt16))] = []
    for sport in UInt16(1000)..<1030 {
      let sent = try #require(Self.send(engine, Self.udp(sport, to: dst)))
      if sent.0 == Self.rule10IP { onDrained.append((sport, sent)) }
    }
    try #require(!onDrained.isEmpty)
    try engine.apply(EngineConfig(vms: [Self.vm(blocks: blocks, drained: [Self.rule10IP])]), now: 1)
    for (sport, sent) in onDrained {
      let again = try #require(Self.send(engine, Self.udp(sport, to: dst), now: 2))
      #expect(again == sent)
      let reply = PacketBuilder.udp(source: dst, destination: sent.0, sourcePort: 53, destinationPort: sent.1, payload: [1])
      #expect(run(engine, outbound: false, reply, now: 2).0 == .forward)
    }
    // Its endpoints cannot reach new destinations of the rule through the drained IP…
    let sport = onDrained[0].0
    #expect(run(engine, outbound: true, Self.udp(sport, to: ip("198.51.100.8")), now: 2).0 == .drop(.endpointIndependenceConflict))
    // …but the default IPs are another mapping.
    #expect(Self.send(engine, Self.udp(sport, to: ip("8.8.8.8")), now: 2)?.0 == Self.defaultIP)
    for sport in UInt16(2000)..<2040 {
      #expect(Self.send(engine, Self.udp(sport, to: dst), now: 3)?.0 == Self.rule10IPb)
    }
  }

  @Test func aConfigChangeEndsFlowsWhoseRuleNoLongerMatches() throws {
    let engine = try NATEngine(capacity: 64, config: EngineConfig(vms: [Self.vm()]))
    let moved = ip("203.0.113.80")  // rule 10, then rule 20
    let kept = ip("198.51.100.7")  // rule 10 throughout
    let plain = ip("8.8.8.8")  // default throughout
    var replies: [IPv4Address: [UInt8]] = [:]
    for dst in [moved, kept, plain] {
      let sent = try #require(Self.send(engine, Self.udp(to: dst)))
      replies[dst] = PacketBuilder.udp(source: dst, destination: sent.0, sourcePort: 53, destinationPort: sent.1, payload: [1])
    }
    let narrowed = [Self.rules[0], NATRuleDestinations(ruleNumber: 10, destinations: [cidr("198.51.100.0/24")])]
    try engine.apply(EngineConfig(vms: [Self.vm(rules: narrowed)]), now: 1)
    #expect(run(engine, outbound: false, replies[moved]!, now: 2).0 == .drop(.filteredInbound))
    #expect(run(engine, outbound: false, replies[kept]!, now: 2).0 == .forward)
    #expect(run(engine, outbound: false, replies[plain]!, now: 2).0 == .forward)
    #expect(engine.globalCounters.flowsEndedByConfig == 1)
    #expect(Self.send(engine, Self.udp(to: moved), now: 3)?.0 == Self.rule20IP)
    // Without rules everything goes back to the default IPs; rule-IP flows end (here by sweep).
    try engine.apply(EngineConfig(vms: [Self.vm(rules: [])]), now: 4)
    #expect(engine.sweep(now: 5, budget: 64) == 2)
    #expect(engine.flowCount == 1 && engine.mappingCount == 1)
    #expect(Self.send(engine, Self.udp(to: kept), now: 6)?.0 == Self.defaultIP)
  }

  @Test(arguments: [0, -1, 10])
  func invalidRuleNumbersAreRefused(number: Int) throws {
    let rules = number == 10 ? [NATRuleDestinations(ruleNumber: 10, destinations: []), NATRuleDestinations(ruleNumber: 10, destinations: [])] : [NATRuleDestinations(ruleNumber: number, destinations: [])]
    #expect(throws: EngineError.invalidNatRule(vm: "vm-a", ruleNumber: number)) {
      _ = try NATEngine(capacity: 16, config: EngineConfig(vms: [Self.vm(rules: rules)]))
    }
  }
}
