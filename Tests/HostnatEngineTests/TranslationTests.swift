import HostnatAddressing
import HostnatEngine
import HostnatPackets
import HostnatTestSupport
import Testing

@Suite struct TranslationTests {
  enum Proto: String, CaseIterable, Sendable { case tcp, udp }

  static func packet(_ proto: Proto, from src: IPv4Address = vmIP, _ sport: UInt16, to dst: IPv4Address = server, _ dport: UInt16, flags: TCPFlags = .syn) -> [UInt8] {
    switch proto {
    case .tcp: PacketBuilder.tcp(source: src, destination: dst, sourcePort: sport, destinationPort: dport, flags: flags, sequence: 7, payload: [1, 2, 3])
    case .udp: PacketBuilder.udp(source: src, destination: dst, sourcePort: sport, destinationPort: dport, payload: Array("query".utf8))
    }
  }

  @Test(arguments: Proto.allCases)
  func translationExampleRoundTrip(proto: Proto) throws {
    let engine = try NATEngine(capacity: 64, config: EngineConfig(vms: [exampleVM()]))
    let original = Self.packet(proto, 24000, 80)
    let (verdict, out) = run(engine, outbound: true, original, now: 0)
    #expect(verdict == .forward)
    let parsed = try #require(expectValid(out))
    #expect(parsed.source == natIP && parsed.destination == server)
    let (natPort, dport) = try #require(ports(parsed))
    #expect((34000..<34064).contains(Int(natPort)) && dport == 80)
    // Only addresses, ports and checksums changed.
    for i in out.indices where ![10, 11, 12, 13, 14, 15, 20, 21].contains(i) && !(proto == .tcp ? [36, 37] : [26, 27]).contains(i) {
      #expect(out[i] == original[i], "byte \(i)")
    }
    // The reply from the server comes back to 10.0.0.2:24000, and reversing it gives the original.
    let (v2, back) = run(engine, outbound: false, reversed(out), now: 1)
    #expect(v2 == .forward)
    let reply = try #require(expectValid(back))
    #expect(reply.destination == vmIP && ports(reply)?.1 == 24000)
    #expect(reversed(back) == original)
    let counters = try #require(engine.counters(forVM: "vm-a"))
    #expect(counters.packetsOut == 1 && counters.packetsIn == 1 && counters.newFlows == 1)
    #expect(counters.bytesOut == UInt64(original.count))
  }

  @Test func unconfiguredSourceIsDropped() throws {
    let engine = try NATEngine(capacity: 64, config: EngineConfig(vms: [exampleVM()]))
    let (verdict, out) = run(engine, outbound: true, Self.packet(.udp, from: ip("10.0.0.3"), 1000, 53), now: 0)
    #expect(verdict == .drop(.noNATConfigured))
    #expect(out == Self.packet(.udp, from: ip("10.0.0.3"), 1000, 53))
    #expect(engine.globalCounters.noNATConfigured == 1 && engine.flowCount == 0)
  }

  @Test(arguments: Proto.allCases)
  func endpointIndependentMapping(proto: Proto) throws {
    let engine = try NATEngine(capacity: 64, config: EngineConfig(vms: [exampleVM()]))
    var natPorts: Set<UInt16> = []
    for (i, dst) in ["203.0.113.1", "203.0.113.2", "198.51.100.7"].enumerated() {
      let (v, out) = run(engine, outbound: true, Self.packet(proto, 24000, to: ip(dst), UInt16(80 + i)), now: 0)
      #expect(v == .forward)
      natPorts.insert(try #require(ports(expectValid(out))).0)
    }
    #expect(natPorts.count == 1)
    #expect(engine.mappingCount == 1 && engine.flowCount == 3)
  }

  @Test func endpointIndependenceConflict() throws {
    // One port only: A and B share it towards different destinations; A then cannot reach B's one.
    let vm = exampleVM(blocks: [PortBlock(natIP: natIP, ports: 40000..<40001)])
    let vm2 = exampleVM(id: "unused", address: ip("10.0.0.9"), blocks: [])
    let engine = try NATEngine(capacity: 64, config: EngineConfig(vms: [vm, vm2]))
    let d1 = ip("203.0.113.1")
    let d2 = ip("203.0.113.2")
    #expect(run(engine, outbound: true, Self.packet(.udp, 1111, to: d1, 53), now: 0).0 == .forward)
    #expect(run(engine, outbound: true, Self.packet(.udp, 2222, to: d2, 53), now: 0).0 == .forward)
    #expect(run(engine, outbound: true, Self.packet(.udp, 1111, to: d2, 53), now: 0).0 == .drop(.endpointIndependenceConflict))
    // B towards d1 has no free port for that destination at all.
    #expect(run(engine, outbound: true, Self.packet(.udp, 3333, to: d1, 53), now: 0).0 == .drop(.outOfResources))
    let c = try #require(engine.counters(forVM: "vm-a"))
    #expect(c.droppedEndpointIndependenceConflict == 1 && c.droppedOutOfResources == 1)
    // A VM with no blocks is out of resources from the start.
    #expect(run(engine, outbound: true, Self.packet(.udp, from: ip("10.0.0.9"), 1, 53), now: 0).0 == .drop(.outOfResources))
  }

  @Test func withoutEIMPortsAreChosenPerDestination() throws {
    let gw = GatewaySettings(endpointIndependentMapping: false)
    let engine = try NATEngine(
      capacity: 64, config: EngineConfig(vms: [exampleVM(blocks: [PortBlock(natIP: natIP, ports: 40000..<40002)], gateway: gw)]))
    // Three endpoints to one destination: two ports, so the third is out of resources…
    #expect(run(engine, outbound: true, Self.packet(.udp, 1, 53), now: 0).0 == .forward)
    #expect(run(engine, outbound: true, Self.packet(.udp, 2, 53), now: 0).0 == .forward)
    #expect(run(engine, outbound: true, Self.packet(.udp, 3, 53), now: 0).0 == .drop(.outOfResources))
    // …but the same endpoint reaches other destinations by reusing a port there.
    #expect(run(engine, outbound: true, Self.packet(.udp, 3, to: ip("203.0.113.9"), 53), now: 0).0 == .forward)
    #expect(engine.mappingCount == 0)
  }

  @Test func filteringIsAddressAndPortDependentAndStateless() throws {
    let engine = try NATEngine(capacity: 64, config: EngineConfig(vms: [exampleVM()]))
    let (_, out) = run(engine, outbound: true, Self.packet(.tcp, 24000, 80), now: 0)
    let reply = reversed(out)
    var wrongPort = reply
    wrongPort[21] ^= 1  // remote source port 80 → 81
    var wrongHost = reply
    wrongHost[15] ^= 1
    let unsolicited = PacketBuilder.tcp(source: server, destination: natIP, sourcePort: 80, destinationPort: 34001, flags: .syn)
    for packet in [wrongPort, wrongHost, unsolicited] {
      #expect(run(engine, outbound: false, packet, now: 1).0 == .drop(.filteredInbound))
    }
    #expect(engine.flowCount == 1 && engine.globalCounters.filteredInbound == 3)
    #expect(run(engine, outbound: false, reply, now: 1).0 == .forward)
  }

  @Test func icmpEchoIdentifierIsTranslated() throws {
    let engine = try NATEngine(capacity: 64, config: EngineConfig(vms: [exampleVM()]))
    let request = PacketBuilder.icmpEcho(source: vmIP, destination: server, identifier: 0x4242, sequence: 1, payload: [9, 9])
    let (v, out) = run(engine, outbound: true, request, now: 0)
    #expect(v == .forward)
    let parsed = try #require(expectValid(out))
    guard case .icmpEcho(8, let id, 1) = parsed.transport else { Issue.record("not an echo request"); return }
    #expect((34000..<34064).contains(Int(id)) && parsed.source == natIP)
    let reply = PacketBuilder.icmpEcho(source: server, destination: natIP, type: 0, identifier: id, sequence: 1, payload: [9, 9])
    let (v2, back) = run(engine, outbound: false, reply, now: 1)
    #expect(v2 == .forward)
    #expect(back == PacketBuilder.icmpEcho(source: server, destination: vmIP, type: 0, identifier: 0x4242, sequence: 1, payload: [9, 9]))
    // An echo request from outside to the NAT IP is not answered or forwarded.
    let probe = PacketBuilder.icmpEcho(source: server, destination: natIP, identifier: id, sequence: 2)
    #expect(run(engine, outbound: false, probe, now: 1).0 == .drop(.filteredInbound))
  }

  @Test(arguments: [(UInt8(11), UInt8(0)), (3, 4), (3, 1)])
  func inboundICMPErrorIsTranslatedBackWithoutRefreshing(type: UInt8, code: UInt8) throws {
    let engine = try NATEngine(capacity: 64, config: EngineConfig(vms: [exampleVM()]))
    let syn = Self.packet(.tcp, 24000, 80)
    let (_, out) = run(engine, outbound: true, syn, now: 0)
    let expiry = try #require(engine.flows().first).expiresAt
    let router = ip("198.51.100.1")
    let error = PacketBuilder.icmpError(source: router, destination: natIP, type: type, code: code, quoting: out, quotedBytes: 48)
    let (v, back) = run(engine, outbound: false, error, now: 5 * second)
    #expect(v == .forward)
    #expect(engine.flows().first?.expiresAt == expiry)
    // Exactly what the router would have sent had it seen the VM's own packet.
    #expect(back == PacketBuilder.icmpError(source: router, destination: vmIP, type: type, code: code, quoting: syn, quotedBytes: 48))
    let parsed = try #require(expectValid(back))
    guard case .icmpError(_, _, let q) = parsed.transport else { Issue.record("not an error"); return }
    #expect(q.source == vmIP && q.sourcePort == 24000)
    // An error quoting a tuple nobody uses is dropped.
    var stray = out
    stray[21] ^= 0x55
    let unmatched = PacketBuilder.icmpError(source: router, destination: natIP, type: type, code: code, quoting: stray)
    #expect(run(engine, outbound: false, unmatched, now: 5 * second).0 == .drop(.unmatchedICMPError))
  }

  @Test func outboundICMPErrorAboutAnInboundFlow() throws {
    let engine = try NATEngine(capacity: 64, config: EngineConfig(vms: [exampleVM()]))
    let query = Self.packet(.udp, 5000, 53)
    let (_, out) = run(engine, outbound: true, query, now: 0)
    let (_, delivered) = run(engine, outbound: false, reversed(out), now: 1)
    // The VM answers the delivered datagram with a port unreachable; it must leave from the NAT IP and
    // quote the datagram as the server sent it.
    let unreachable = PacketBuilder.icmpError(source: vmIP, destination: server, type: 3, code: 3, quoting: delivered, quotedBytes: 40)
    let (v, sent) = run(engine, outbound: true, unreachable, now: 2)
    #expect(v == .forward)
    #expect(sent == PacketBuilder.icmpError(source: natIP, destination: server, type: 3, code: 3, quoting: reversed(out), quotedBytes: 40))
    _ = expectValid(sent)
  }

  @Test func malformedAndFragments() throws {
    let engine = try NATEngine(capacity: 64, config: EngineConfig(vms: [exampleVM()]))
    let good = Self.packet(.udp, 1, 53)
    for length in [0, 10, 20, 27] {
      #expect(run(engine, outbound: true, Array(good[0..<length]), now: 0).0 == .drop(.malformed))
    }
    var fragment = good
    fragment[6] = 0x00
    fragment[7] = 0x10
    #expect(run(engine, outbound: true, fragment, now: 0).0 == .drop(.fragment))
    let gre = PacketBuilder.ipv4(source: vmIP, destination: server, protocol: 47, payload: [0, 0, 8, 0])
    #expect(run(engine, outbound: true, gre, now: 0).0 == .drop(.unsupportedProtocol))
    #expect(engine.flowCount == 0 && engine.globalCounters.malformed == 4 && engine.globalCounters.fragments == 1)
  }

  @Test func oneToOneExternalIPForThePrimaryOnly() throws {
    let external = ip("34.1.2.3")
    let vm = VMConfig(
      id: "vm-ext", primaryIP: vmIP, natSourceRanges: [cidr("10.0.0.2/32"), cidr("10.4.0.0/24")], externalIP: external,
      portBlocks: [PortBlock(natIP: natIP, ports: 34000..<34064)])
    let engine = try NATEngine(capacity: 64, config: EngineConfig(vms: [vm]))
    let (v, out) = run(engine, outbound: true, Self.packet(.tcp, 24000, 80), now: 0)
    #expect(v == .forward)
    #expect(out == Self.packet(.tcp, from: external, 24000, 80))
    #expect(engine.flowCount == 0)
    let (v2, back) = run(engine, outbound: false, reversed(out), now: 0)
    #expect(v2 == .forward && back == reversed(Self.packet(.tcp, 24000, 80)))
    // An alias address uses Cloud NAT.
    let (v3, aliasOut) = run(engine, outbound: true, Self.packet(.tcp, from: ip("10.4.0.9"), 24000, 80), now: 0)
    #expect(v3 == .forward && expectValid(aliasOut)?.source == natIP)
  }
}
