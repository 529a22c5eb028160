import HostnatAddressing
import HostnatEngine
import HostnatPackets
import HostnatTestSupport
import Testing

/// Seeded random operations checked against the NAT invariants.
@Suite struct PropertyTests {
  @Test(arguments: [true, false])
  func randomTrafficKeepsTheInvariants(endpointIndependent: Bool) throws {
    var rng = SeededRNG(seed: endpointIndependent ? 11 : 12)
    let natA = ip("192.0.2.10")
    let natB = ip("192.0.2.11")
    var gateway = GatewaySettings(endpointIndependentMapping: endpointIndependent)
    var vms: [VMConfig] = (0..<4).map { i in
      VMConfig(
        id: "vm\(i)", primaryIP: IPv4Address(10, 0, UInt8(i), 2), natSourceRanges: [cidr("10.0.\(i).0/29")],
        portBlocks: [
          PortBlock(natIP: natA, ports: (2000 + i * 16)..<(2016 + i * 16)),
          PortBlock(natIP: natB, ports: (2000 + i * 16)..<(2016 + i * 16)),
        ], gateway: gateway)
    }
    let engine = try NATEngine(capacity: 4096, config: EngineConfig(vms: vms), seed: 3)
    let destinations = (0..<6).map { IPv4Address(203, 0, 113, UInt8($0 + 1)) }
    var now: UInt64 = 0
    var drained: Set<IPv4Address> = []
    var forwarded = 0
    for op in 0..<20_000 {
      now += UInt64.random(in: 0...(second / 2), using: &rng)
      if op == 8_000 {
        drained = [natA]
        gateway.drainedNatIPs = [natA]
        for i in vms.indices { vms[i].gateway = gateway }
        try engine.apply(EngineConfig(vms: vms), now: now)
      }
      if op % 97 == 0 { engine.sweep(now: now, budget: 64) }
      let vm = Int.random(in: 0..<4, using: &rng)
      let src = IPv4Address(10, 0, UInt8(vm), UInt8.random(in: 1...6, using: &rng))
      let dst = destinations[Int.random(in: 0..<destinations.count, using: &rng)]
      let sport = UInt16.random(in: 5000...5007, using: &rng)
      let dport = UInt16([53, 80, 443].randomElement(using: &rng)!)
      let packet =
        Bool.random(using: &rng)
        ? PacketBuilder.udp(source: src, destination: dst, sourcePort: sport, destinationPort: dport, payload: [UInt8(op & 0xFF)])
        : PacketBuilder.tcp(source: src, destination: dst, sourcePort: sport, destinationPort: dport, flags: .ack, sequence: UInt32(op))
      let created = engine.globalCounters.flowsCreated
      let (verdict, out) = run(engine, outbound: true, packet, now: now)
      guard verdict == .forward else {
        #expect([.drop(.outOfResources), .drop(.endpointIndependenceConflict)].contains(verdict))
        continue
      }
      forwarded += 1
      let parsed = try #require(expectValid(out))
      let natPort = Int(try #require(ports(parsed)).0)
      // The port lies in this VM's blocks, on one of its NAT IPs.
      #expect([natA, natB].contains(parsed.source))
      #expect((2000 + vm * 16)..<(2016 + vm * 16) ~= natPort)
      // New flows never land on a drained IP.
      if engine.globalCounters.flowsCreated > created { #expect(!drained.contains(parsed.source)) }
      // The reply comes back to exactly the original packet.
      let (v2, back) = run(engine, outbound: false, reversed(out), now: now)
      #expect(v2 == .forward)
      #expect(reversed(back) == packet)
      if op % 1_000 == 0 {
        // No outside 5-tuple is used by two flows (so never by two internal endpoints).
        let flows = engine.flows()
        let outside = Set(flows.map { "\($0.protocolNumber) \($0.natIP):\($0.natPort) \($0.remoteIP):\($0.remotePort)" })
        #expect(outside.count == flows.count)
        if endpointIndependent {
          // EIM: one NAT endpoint per internal endpoint among live flows.
          var mapping: [String: String] = [:]
          for f in flows {
            let key = "\(f.protocolNumber) \(f.insideIP):\(f.insidePort)"
            let value = "\(f.natIP):\(f.natPort)"
            #expect(mapping.updateValue(value, forKey: key) ?? value == value)
          }
        }
      }
    }
    #expect(forwarded > 10_000)
  }
}
