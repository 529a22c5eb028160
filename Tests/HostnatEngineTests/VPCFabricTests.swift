import HostnatAddressing
import HostnatEngine
import HostnatPackets
import HostnatTestSupport
import Testing

/// Traffic between VMs inside the VPC: subnet routes beat every other route, never use NAT, go
/// host to host through the fabric untranslated, and meet the receiving VM's ingress rules.
@Suite struct VPCFabricTests {
  static let vpc = "vpc-a"
  static let subnet = cidr("10.0.0.0/24")
  static let peerSubnet = cidr("10.1.0.0/24")
  static let vmB = ip("10.0.0.3")
  static let peerVM = ip("10.1.0.7")
  static let allowInternal = FirewallRule(
    name: "allow-internal", direction: .ingress, allow: true,
    matches: [FirewallMatch(protocolNumber: IPProtocol.tcp, ports: [80...80]), FirewallMatch(protocolNumber: IPProtocol.icmp)],
    ranges: [subnet])

  static func host(
    _ id: String, _ address: IPv4Address, external: IPv4Address? = nil, rules: [FirewallRule] = [], routes: [CustomRoute] = [],
    tags: [String] = []
  ) throws -> NATEngine {
    let vm = VMConfig(
      id: id, primaryIP: address, natSourceRanges: [IPv4CIDR(address, prefixLength: 32)!], externalIP: external,
      portBlocks: [PortBlock(natIP: natIP, ports: 34000..<34064)], network: vpc, tags: tags)
    let policy = NetworkPolicy(firewallRules: rules, routes: routes, internalRanges: [subnet, peerSubnet], fabricID: 7)
    return try NATEngine(capacity: 64, config: EngineConfig(vms: [vm], networks: [vpc: policy]))
  }

  static func fabric(_ engine: NATEngine, _ packet: [UInt8], now: UInt64) -> (Verdict, [UInt8]) {
    var bytes = packet
    let verdict = bytes.withUnsafeMutableBytes { engine.deliverInVPC($0, now: now) }
    return (verdict, bytes)
  }

  @Test func tcpBetweenTwoHostsIsUntranslatedAndStateful() throws {
    let a = try Self.host("vm-a", vmIP)
    let b = try Self.host("vm-b", Self.vmB, rules: [Self.allowInternal])
    let syn = PacketBuilder.tcp(source: vmIP, destination: Self.vmB, sourcePort: 40000, destinationPort: 80, flags: .syn, payload: [])
    let (out, sent) = run(a, outbound: true, syn, now: 0)
    #expect(out == .forwardInVPC)
    #expect(sent == syn, "inside the VPC nothing is rewritten")
    #expect(a.globalCounters.flowsCreated == 0 && a.globalCounters.translatedOut == 0)
    #expect(a.globalCounters.vpcOut == 1 && a.counters(forVM: "vm-a")?.vpcPackets == 1)

    #expect(Self.fabric(b, sent, now: 1) == (.forward, syn))
    #expect(b.globalCounters.vpcIn == 1 && b.counters(forVM: "vm-b")?.vpcPackets == 1)
    // The reply is allowed out by B's egress (implied allow) and in at A by A's tracked connection,
    // although A has no ingress rule at all.
    let synAck = PacketBuilder.tcp(source: Self.vmB, destination: vmIP, sourcePort: 80, destinationPort: 40000, flags: [.syn, .ack], payload: [])
    #expect(run(b, outbound: true, synAck, now: 2).0 == .forwardInVPC)
    #expect(Self.fabric(a, synAck, now: 3).0 == .forward)
    // An unsolicited connection into A is refused by A's implied deny-ingress.
    let unsolicited = PacketBuilder.tcp(source: Self.vmB, destination: vmIP, sourcePort: 5555, destinationPort: 22, flags: .syn, payload: [])
    #expect(Self.fabric(a, unsolicited, now: 4).0 == .drop(.firewallDenied))
    #expect(a.counters(forVM: "vm-a")?.droppedFirewall == 1)
  }

  @Test func ingressRulesWithTargetTagsApplyToTaggedVMsOnly() throws {
    var backendsOnly = Self.allowInternal
    backendsOnly.targetTags = ["backend"]
    let syn = PacketBuilder.tcp(source: vmIP, destination: Self.vmB, sourcePort: 40000, destinationPort: 80, flags: .syn, payload: [])
    let untagged = try Self.host("vm-b", Self.vmB, rules: [backendsOnly], tags: ["frontend"])
    #expect(Self.fabric(untagged, syn, now: 0).0 == .drop(.firewallDenied))
    let tagged = try Self.host("vm-b", Self.vmB, rules: [backendsOnly], tags: ["frontend", "backend"])
    #expect(Self.fabric(tagged, syn, now: 0) == (.forward, syn))
  }

  @Test func pingBetweenVMsGetsItsReplyBack() throws {
    let a = try Self.host("vm-a", vmIP)
    let b = try Self.host("vm-b", Self.vmB, rules: [Self.allowInternal])
    let request = PacketBuilder.icmpEcho(source: vmIP, destination: Self.vmB, identifier: 77, sequence: 1)
    #expect(run(a, outbound: true, request, now: 0) == (.forwardInVPC, request))
    #expect(Self.fabric(b, request, now: 1).0 == .forward)
    let reply = PacketBuilder.icmpEcho(source: Self.vmB, destination: vmIP, type: ICMPType.echoReply, identifier: 77, sequence: 1)
    #expect(run(b, outbound: true, reply, now: 2) == (.forwardInVPC, reply))
    #expect(Self.fabric(a, reply, now: 3).0 == .forward)
    // An echo reply to the Internet is still never sent: no ping from there can have asked for it.
    let toInternet = PacketBuilder.icmpEcho(source: Self.vmB, destination: server, type: ICMPType.echoReply, identifier: 77, sequence: 1)
    #expect(run(b, outbound: true, toInternet, now: 4).0 == .drop(.unsupportedProtocol))
  }

  @Test func whatTheFabricAcceptsAndWhatItDoesNot() throws {
    let b = try Self.host("vm-b", Self.vmB, rules: [Self.allowInternal])
    // From outside the network's ranges: filtered, whatever the rules say.
    let outsider = PacketBuilder.tcp(source: ip("10.9.0.1"), destination: Self.vmB, sourcePort: 1, destinationPort: 80, flags: .syn, payload: [])
    #expect(Self.fabric(b, outsider, now: 0).0 == .drop(.filteredInbound))
    // To an address no VM here owns.
    let nobody = PacketBuilder.tcp(source: vmIP, destination: ip("10.0.0.99"), sourcePort: 1, destinationPort: 80, flags: .syn, payload: [])
    #expect(Self.fabric(b, nobody, now: 0).0 == .drop(.filteredInbound))
    // Port not allowed by the rule.
    let ssh = PacketBuilder.tcp(source: vmIP, destination: Self.vmB, sourcePort: 1, destinationPort: 22, flags: .syn, payload: [])
    #expect(Self.fabric(b, ssh, now: 0).0 == .drop(.firewallDenied))
    // A peer network's VM is inside the VPC too, but not inside allow-internal's source range.
    let fromPeer = PacketBuilder.tcp(source: Self.peerVM, destination: Self.vmB, sourcePort: 1, destinationPort: 80, flags: .syn, payload: [])
    #expect(Self.fabric(b, fromPeer, now: 0).0 == .drop(.firewallDenied))
    // The same internal source arriving from the Internet side is no VPC traffic: filtered.
    let spoofed = PacketBuilder.tcp(source: vmIP, destination: Self.vmB, sourcePort: 40000, destinationPort: 80, flags: .syn, payload: [])
    #expect(run(b, outbound: false, spoofed, now: 0).0 == .drop(.filteredInbound))
    // Garbage is counted, not trusted.
    var junk: [UInt8] = [0x45, 0, 0]
    #expect(junk.withUnsafeMutableBytes { b.deliverInVPC($0, now: 0) } == .drop(.malformed))
    #expect(b.globalCounters.vpcIn == 0)
  }

  @Test func subnetRoutesBeatCustomRoutesOneToOneAndNAT() throws {
    let route = CustomRoute(name: "via-appliance", destination: cidr("10.0.0.0/8"), nextHop: .instance("appliance"))
    for external in [nil, ip("34.1.2.3")] {
      let a = try Self.host("vm-a", vmIP, external: external, routes: [route])
      let inside = PacketBuilder.udp(source: vmIP, destination: Self.vmB, sourcePort: 5000, destinationPort: 53, payload: [1])
      #expect(run(a, outbound: true, inside, now: 0) == (.forwardInVPC, inside), "external \(String(describing: external))")
      let peer = PacketBuilder.udp(source: vmIP, destination: Self.peerVM, sourcePort: 5000, destinationPort: 53, payload: [1])
      #expect(run(a, outbound: true, peer, now: 0).0 == .forwardInVPC)
      // Outside the subnet routes, the custom route takes the traffic away from NAT.
      let elsewhere = PacketBuilder.udp(source: vmIP, destination: ip("10.5.0.1"), sourcePort: 5000, destinationPort: 53, payload: [1])
      #expect(run(a, outbound: true, elsewhere, now: 0).0 == .drop(.routedToNextHop))
      // The Internet is still NATed (or 1:1).
      let (verdict, out) = run(a, outbound: true, PacketBuilder.udp(source: vmIP, destination: server, sourcePort: 5000, destinationPort: 53, payload: [1]), now: 0)
      #expect(verdict == .forward)
      #expect(try PacketParser.parse(out).source == (external ?? natIP))
    }
  }

  @Test func egressRulesApplyInsideTheVPC() throws {
    let deny = FirewallRule(name: "no-db", direction: .egress, allow: false, matches: [FirewallMatch(protocolNumber: IPProtocol.tcp, ports: [5432...5432])], ranges: [Self.subnet])
    let a = try Self.host("vm-a", vmIP, rules: [deny])
    let db = PacketBuilder.tcp(source: vmIP, destination: Self.vmB, sourcePort: 1, destinationPort: 5432, flags: .syn, payload: [])
    #expect(run(a, outbound: true, db, now: 0).0 == .drop(.firewallDenied))
    let web = PacketBuilder.tcp(source: vmIP, destination: Self.vmB, sourcePort: 1, destinationPort: 80, flags: .syn, payload: [])
    #expect(run(a, outbound: true, web, now: 0).0 == .forwardInVPC)
  }

  @Test func fragmentsFollowTheirFirstThroughTheFabricOnly() throws {
    let a = try Self.host("vm-a", vmIP)
    let udpRule = FirewallRule(name: "udp", direction: .ingress, allow: true, matches: [FirewallMatch(protocolNumber: IPProtocol.udp)], ranges: [Self.subnet])
    let b = try Self.host("vm-b", Self.vmB, rules: [udpRule])
    let big = PacketBuilder.udp(source: vmIP, destination: Self.vmB, sourcePort: 7000, destinationPort: 7000, payload: Array(repeating: 9, count: 3000))
    let pieces = fragments(big)
    #expect(pieces.count == 3)
    for piece in pieces { #expect(run(a, outbound: true, piece, now: 0) == (.forwardInVPC, piece)) }
    // Later fragments from the Internet side never ride on a datagram the fabric let in.
    #expect(Self.fabric(b, pieces[0], now: 1).0 == .forward)
    #expect(run(b, outbound: false, pieces[1], now: 1).0 == .drop(.fragment))
    for piece in pieces.dropFirst() { #expect(Self.fabric(b, piece, now: 1) == (.forward, piece)) }
  }

  @Test func withoutInternalRangesNothingChanges() throws {
    // A network that knows no subnet routes (an older controller): VM-to-VM traffic is judged as
    // before, and nothing comes in from the fabric.
    let vm = VMConfig(
      id: "vm-a", primaryIP: vmIP, natSourceRanges: [IPv4CIDR(vmIP, prefixLength: 32)!],
      portBlocks: [PortBlock(natIP: natIP, ports: 34000..<34064)], network: Self.vpc)
    let a = try NATEngine(capacity: 64, config: EngineConfig(vms: [vm], networks: [Self.vpc: NetworkPolicy()]))
    let udp = PacketBuilder.udp(source: vmIP, destination: Self.vmB, sourcePort: 5000, destinationPort: 53, payload: [1])
    #expect(run(a, outbound: true, udp, now: 0).0 == .forward)
    let back = PacketBuilder.udp(source: Self.vmB, destination: vmIP, sourcePort: 53, destinationPort: 5000, payload: [1])
    #expect(Self.fabric(a, back, now: 0).0 == .drop(.filteredInbound))
  }
}
