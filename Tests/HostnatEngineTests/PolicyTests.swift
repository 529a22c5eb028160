import HostnatAddressing
import HostnatEngine
import HostnatPackets
import HostnatTestSupport
import Testing

/// The VPC around the VM: firewall rules, custom routes, Private Google Access.
@Suite struct PolicyTests {
  static let vpc = "vpc-a"
  static let google = cidr("199.36.153.8/30")
  static let googleAPI = ip("199.36.153.9")
  static let external = ip("34.1.2.3")
  static let peer = ip("198.51.100.5")

  static func vm(
    id: String = "vm-a", address: IPv4Address = vmIP, external: IPv4Address? = nil, pga: Bool = false,
    network: String = vpc, gateway: GatewaySettings = .init(), ports: Range<Int> = 34000..<34064, tags: [String] = []
  ) -> VMConfig {
    VMConfig(
      id: id, primaryIP: address, natSourceRanges: [IPv4CIDR(address, prefixLength: 32)!], externalIP: external,
      portBlocks: [PortBlock(natIP: natIP, ports: ports)], gateway: gateway, network: network,
      privateGoogleAccess: pga, tags: tags)
  }

  static func config(_ vms: [VMConfig], rules: [FirewallRule] = [], routes: [CustomRoute] = []) -> EngineConfig {
    EngineConfig(
      vms: vms, networks: [vpc: NetworkPolicy(firewallRules: rules, routes: routes, googleAPIsRanges: [google])])
  }

  enum Kind: String, Sendable { case tcp, udp, icmp }

  static func packet(_ kind: Kind, from src: IPv4Address = vmIP, _ sport: UInt16 = 24000, to dst: IPv4Address = server, _ dport: UInt16 = 80) -> [UInt8] {
    switch kind {
    case .tcp: PacketBuilder.tcp(source: src, destination: dst, sourcePort: sport, destinationPort: dport, flags: .syn, payload: [1, 2])
    case .udp: PacketBuilder.udp(source: src, destination: dst, sourcePort: sport, destinationPort: dport, payload: [3, 4])
    case .icmp: PacketBuilder.icmpEcho(source: src, destination: dst, identifier: sport, sequence: 1)
    }
  }

  static func tcpRule(_ ports: [ClosedRange<UInt16>]) -> [FirewallMatch] { [FirewallMatch(protocolNumber: IPProtocol.tcp, ports: ports)] }

  // MARK: egress

  struct EgressCase: Sendable, CustomStringConvertible {
    var description: String
    var rules: [FirewallRule]
    var kind: Kind
    var dst: IPv4Address = server
    var port: UInt16 = 80
    var denied: Bool
  }

  static let egressCases: [EgressCase] = [
    .init(description: "implied allow", rules: [], kind: .tcp, denied: false),
    .init(description: "deny tcp:22, tcp 22", rules: [.init(name: "no-ssh", direction: .egress, allow: false, matches: tcpRule([22...22]))], kind: .tcp, port: 22, denied: true),
    .init(description: "deny tcp:22, tcp 80", rules: [.init(name: "no-ssh", direction: .egress, allow: false, matches: tcpRule([22...22]))], kind: .tcp, port: 80, denied: false),
    .init(description: "deny tcp:22, udp 22", rules: [.init(name: "no-ssh", direction: .egress, allow: false, matches: tcpRule([22...22]))], kind: .udp, port: 22, denied: false),
    .init(description: "port range inside", rules: [.init(name: "r", direction: .egress, allow: false, matches: tcpRule([1000...2000, 3000...3000]))], kind: .tcp, port: 3000, denied: true),
    .init(description: "port range outside", rules: [.init(name: "r", direction: .egress, allow: false, matches: tcpRule([1000...2000, 3000...3000]))], kind: .tcp, port: 2001, denied: false),
    .init(description: "deny all to range, inside", rules: [.init(name: "r", direction: .egress, allow: false, ranges: [cidr("203.0.113.0/24")])], kind: .udp, denied: true),
    .init(description: "deny all to range, outside", rules: [.init(name: "r", direction: .egress, allow: false, ranges: [cidr("203.0.113.0/24")])], kind: .udp, dst: ip("198.51.100.7"), denied: false),
    .init(description: "deny icmp, echo", rules: [.init(name: "r", direction: .egress, allow: false, matches: [.init(protocolNumber: IPProtocol.icmp)])], kind: .icmp, denied: true),
    .init(description: "deny icmp, tcp", rules: [.init(name: "r", direction: .egress, allow: false, matches: [.init(protocolNumber: IPProtocol.icmp)])], kind: .tcp, denied: false),
    .init(description: "ports match no icmp", rules: [.init(name: "r", direction: .egress, allow: false, matches: [.init(protocolNumber: nil, ports: [80...90])])], kind: .icmp, denied: false),
    .init(description: "ports with any protocol, udp", rules: [.init(name: "r", direction: .egress, allow: false, matches: [.init(protocolNumber: nil, ports: [80...90])])], kind: .udp, port: 85, denied: true),
    .init(
      description: "lower priority number wins (allow 900 over deny 1000)",
      rules: [.init(name: "deny", direction: .egress, priority: 1000, allow: false), .init(name: "allow", direction: .egress, priority: 900, allow: true)],
      kind: .tcp, denied: false),
    .init(
      description: "lower priority number wins (deny 10 over allow 20)",
      rules: [.init(name: "allow", direction: .egress, priority: 20, allow: true), .init(name: "deny", direction: .egress, priority: 10, allow: false, matches: tcpRule([80...80]))],
      kind: .tcp, denied: true),
    .init(
      description: "deny beats allow at equal priority (allow listed first)",
      rules: [.init(name: "allow", direction: .egress, priority: 500, allow: true), .init(name: "deny", direction: .egress, priority: 500, allow: false)],
      kind: .udp, denied: true),
    .init(
      description: "deny beats allow at equal priority (deny listed first)",
      rules: [.init(name: "deny", direction: .egress, priority: 500, allow: false), .init(name: "allow", direction: .egress, priority: 500, allow: true)],
      kind: .udp, denied: true),
    .init(description: "ingress rules do not apply to egress", rules: [.init(name: "in", direction: .ingress, priority: 0, allow: false)], kind: .tcp, denied: false),
  ]

  @Test(arguments: egressCases)
  func egressFirewall(testCase: EgressCase) throws {
    for external in [nil, Self.external] {  // NAT and 1:1 alike
      let engine = try NATEngine(capacity: 64, config: Self.config([Self.vm(external: external)], rules: testCase.rules))
      let original = Self.packet(testCase.kind, to: testCase.dst, testCase.port)
      let (verdict, out) = run(engine, outbound: true, original, now: 0)
      let c = try #require(engine.counters(forVM: "vm-a"))
      if testCase.denied {
        #expect(verdict == .drop(.firewallDenied))
        #expect(out == original && engine.flowCount == 0)
        #expect(c.droppedFirewall == 1 && engine.globalCounters.firewallDeniedEgress == 1)
      } else {
        #expect(verdict == .forward)
        #expect(expectValid(out)?.source == (external ?? natIP))
        #expect(c.droppedFirewall == 0 && engine.globalCounters.firewallDeniedEgress == 0)
      }
    }
  }

  @Test func establishedFlowsAreNotRecheckedWhenRulesChange() throws {
    let engine = try NATEngine(capacity: 64, config: Self.config([Self.vm()]))
    let syn = Self.packet(.tcp)
    let (_, out) = run(engine, outbound: true, syn, now: 0)
    try engine.apply(Self.config([Self.vm()], rules: [.init(name: "deny", direction: .egress, priority: 0, allow: false)]), now: 1)
    #expect(run(engine, outbound: true, syn, now: 2) == (.forward, out))
    #expect(run(engine, outbound: false, reversed(out), now: 2).0 == .forward)
    #expect(run(engine, outbound: true, Self.packet(.tcp, 24001), now: 3).0 == .drop(.firewallDenied))
  }

  // MARK: ingress

  @Test func natRepliesPassTheImpliedAndExplicitIngressDeny() throws {
    let denyAll = FirewallRule(name: "deny-in", direction: .ingress, priority: 0, allow: false, logging: true)
    for rules in [[], [denyAll]] {
      let engine = try NATEngine(capacity: 64, config: Self.config([Self.vm()], rules: rules))
      let ring = LogRing(capacity: 4)
      engine.logSink = ring
      for kind in [Kind.tcp, .udp] {
        let (_, out) = run(engine, outbound: true, Self.packet(kind), now: 0)
        let (v, back) = run(engine, outbound: false, reversed(out), now: 1)
        #expect(v == .forward && back == reversed(Self.packet(kind)))
      }
      // Unsolicited traffic to the NAT IP stays filtered by the NAT itself.
      let probe = PacketBuilder.tcp(source: Self.peer, destination: natIP, sourcePort: 1, destinationPort: 34010, flags: .syn)
      #expect(run(engine, outbound: false, probe, now: 1).0 == .drop(.filteredInbound))
      #expect(engine.globalCounters.firewallDeniedIngress == 0 && ring.count == 0)
    }
  }

  struct IngressCase: Sendable, CustomStringConvertible {
    var description: String
    var kind: Kind
    var src: IPv4Address
    var port: UInt16
    var allowed: Bool
  }

  static let sshFromPeers = FirewallRule(
    name: "ssh-from-peers", direction: .ingress, allow: true, matches: tcpRule([22...22]), ranges: [cidr("198.51.100.0/24")])
  static let pingFromAnywhere = FirewallRule(
    name: "ping", direction: .ingress, allow: true, matches: [.init(protocolNumber: IPProtocol.icmp)])

  static let ingressCases: [IngressCase] = [
    .init(description: "ssh from an allowed range", kind: .tcp, src: peer, port: 22, allowed: true),
    .init(description: "ssh from elsewhere", kind: .tcp, src: ip("203.0.113.9"), port: 22, allowed: false),
    .init(description: "another port from the allowed range", kind: .tcp, src: peer, port: 23, allowed: false),
    .init(description: "udp to port 22", kind: .udp, src: peer, port: 22, allowed: false),
    .init(description: "ping", kind: .icmp, src: ip("203.0.113.9"), port: 0, allowed: true),
  ]

  @Test(arguments: ingressCases)
  func unsolicitedInboundToOneToOne(testCase: IngressCase) throws {
    for rules in [[], [Self.sshFromPeers, Self.pingFromAnywhere]] {
      let engine = try NATEngine(capacity: 64, config: Self.config([Self.vm(external: Self.external)], rules: rules))
      let inbound = Self.packet(testCase.kind, from: testCase.src, 5555, to: Self.external, testCase.port)
      let (verdict, out) = run(engine, outbound: false, inbound, now: 0)
      if testCase.allowed && !rules.isEmpty {
        #expect(verdict == .forward)
        #expect(out == Self.packet(testCase.kind, from: testCase.src, 5555, to: vmIP, testCase.port))
        #expect(engine.globalCounters.oneToOneIn == 1)
      } else {
        #expect(verdict == .drop(.firewallDenied) && out == inbound)
        #expect(engine.globalCounters.firewallDeniedIngress == 1 && engine.counters(forVM: "vm-a")?.droppedFirewall == 1)
      }
    }
  }

  /// A VM with an external IP answers pings to that IP when an ingress rule lets them in: its
  /// echo reply leaves from the external IP. Without a network policy there is no firewall.
  @Test func oneToOneVMsAnswerPings() throws {
    let withRules = try NATEngine(capacity: 64, config: Self.config([Self.vm(external: Self.external)], rules: [Self.pingFromAnywhere]))
    let bare = try NATEngine(capacity: 64, config: EngineConfig(vms: [Self.vm(external: Self.external, network: "")]))
    for engine in [withRules, bare] {
      let request = PacketBuilder.icmpEcho(source: Self.peer, destination: Self.external, identifier: 9, sequence: 1)
      let (v1, delivered) = run(engine, outbound: false, request, now: 0)
      #expect(v1 == .forward && expectValid(delivered)?.destination == vmIP)
      let reply = PacketBuilder.icmpEcho(source: vmIP, destination: Self.peer, type: ICMPType.echoReply, identifier: 9, sequence: 1)
      let (v2, out) = run(engine, outbound: true, reply, now: 1)
      #expect(v2 == .forward)
      #expect(expectValid(out)?.source == Self.external)
    }
    // A NAT-only VM still never sends echo replies to the Internet (nothing can have asked).
    let natOnly = try NATEngine(capacity: 64, config: Self.config([Self.vm()]))
    let reply = PacketBuilder.icmpEcho(source: vmIP, destination: Self.peer, type: ICMPType.echoReply, identifier: 9, sequence: 1)
    #expect(run(natOnly, outbound: true, reply, now: 0).0 == .drop(.unsupportedProtocol))
  }

  @Test func oneToOneConnectionsAreStatefulBothWays() throws {
    // Egress to the peers' range is denied, ingress ssh from them allowed: the VM can still answer.
    let denyOut = FirewallRule(name: "no-out", direction: .egress, priority: 100, allow: false, ranges: [cidr("198.51.100.0/24")])
    let engine = try NATEngine(capacity: 64, config: Self.config([Self.vm(external: Self.external)], rules: [Self.sshFromPeers, denyOut]))
    let ssh = PacketBuilder.tcp(source: Self.peer, destination: Self.external, sourcePort: 5555, destinationPort: 22, flags: .syn)
    #expect(run(engine, outbound: false, ssh, now: 0).0 == .forward)
    let answer = PacketBuilder.tcp(source: vmIP, destination: Self.peer, sourcePort: 22, destinationPort: 5555, flags: [.syn, .ack])
    let (v, out) = run(engine, outbound: true, answer, now: 1)
    #expect(v == .forward && expectValid(out)?.source == Self.external)
    // A connection the VM opens itself to the peers is still denied.
    #expect(run(engine, outbound: true, Self.packet(.tcp, 22, to: Self.peer, 5556), now: 1).0 == .drop(.firewallDenied))

    // A reply to a connection the VM opened passes the implied ingress deny; other sources do not.
    for kind in [Kind.tcp, .udp] {
      let (v1, sent) = run(engine, outbound: true, Self.packet(kind, 24000, to: server, 443), now: 2)
      #expect(v1 == .forward)
      let (v2, back) = run(engine, outbound: false, reversed(sent), now: 3)
      #expect(v2 == .forward && back == reversed(Self.packet(kind, 24000, to: server, 443)))
      var otherPort = reversed(sent)
      otherPort[21] ^= 1
      #expect(run(engine, outbound: false, otherPort, now: 3).0 == .drop(.firewallDenied))
    }
    let ping = Self.packet(.icmp, 77, to: server)
    #expect(run(engine, outbound: true, ping, now: 4).0 == .forward)
    let pong = PacketBuilder.icmpEcho(source: server, destination: Self.external, type: 0, identifier: 77, sequence: 1)
    #expect(run(engine, outbound: false, pong, now: 5).0 == .forward)
    // The tracked connection expires with the gateway's UDP timeout (30 s).
    let (_, sent) = run(engine, outbound: true, Self.packet(.udp, 24000, to: server, 443), now: 10 * second)
    #expect(run(engine, outbound: false, reversed(sent), now: 39 * second).0 == .forward)
    #expect(run(engine, outbound: false, reversed(sent), now: 70 * second).0 == .drop(.firewallDenied))
  }

  // MARK: routes

  struct RouteCase: Sendable, CustomStringConvertible {
    var description: String
    var routes: [CustomRoute]
    var dst: IPv4Address
    var routedAway: Bool
  }

  static let appliance = RouteNextHop.instance("fw-appliance")
  static let routeCases: [RouteCase] = [
    .init(description: "no custom route", routes: [], dst: server, routedAway: false),
    .init(description: "/24 to an instance", routes: [.init(name: "via-fw", destination: cidr("203.0.113.0/24"), nextHop: appliance)], dst: server, routedAway: true),
    .init(description: "outside the /24", routes: [.init(name: "via-fw", destination: cidr("203.0.113.0/24"), nextHop: appliance)], dst: ip("198.51.100.7"), routedAway: false),
    .init(
      description: "more specific IGW route re-includes a sub-range",
      routes: [.init(name: "via-fw", destination: cidr("203.0.113.0/24"), nextHop: appliance), .init(name: "direct", destination: cidr("203.0.113.64/26"), priority: 5000, nextHop: .internetGateway)],
      dst: server, routedAway: false),
    .init(
      description: "outside the IGW sub-range",
      routes: [.init(name: "direct", destination: cidr("203.0.113.64/26"), nextHop: .internetGateway), .init(name: "via-fw", destination: cidr("203.0.113.0/24"), nextHop: appliance)],
      dst: ip("203.0.113.200"), routedAway: true),
    .init(
      description: "same prefix: lowest priority wins (IGW)",
      routes: [.init(name: "a", destination: cidr("203.0.113.0/24"), priority: 200, nextHop: appliance), .init(name: "b", destination: cidr("203.0.113.0/24"), priority: 100, nextHop: .internetGateway)],
      dst: server, routedAway: false),
    .init(
      description: "same prefix: lowest priority wins (tunnel)",
      routes: [.init(name: "a", destination: cidr("203.0.113.0/24"), priority: 99, nextHop: .vpnTunnel("t")), .init(name: "b", destination: cidr("203.0.113.0/24"), priority: 100, nextHop: .internetGateway)],
      dst: server, routedAway: true),
    .init(description: "default via tunnel at 1000 loses to the implicit default", routes: [.init(name: "d", destination: cidr("0.0.0.0/0"), nextHop: .vpnTunnel("t"))], dst: server, routedAway: false),
    .init(description: "default via tunnel at 999 wins", routes: [.init(name: "d", destination: cidr("0.0.0.0/0"), priority: 999, nextHop: .vpnTunnel("t"))], dst: server, routedAway: true),
  ]

  @Test(arguments: routeCases)
  func customRoutesTakeTrafficAwayFromNAT(testCase: RouteCase) throws {
    for external in [nil, Self.external] {
      let engine = try NATEngine(capacity: 64, config: Self.config([Self.vm(external: external)], routes: testCase.routes))
      let original = Self.packet(.udp, to: testCase.dst, 53)
      let (verdict, out) = run(engine, outbound: true, original, now: 0)
      let c = try #require(engine.counters(forVM: "vm-a"))
      if testCase.routedAway {
        #expect(verdict == .drop(.routedToNextHop) && out == original)
        #expect(engine.flowCount == 0 && engine.mappingCount == 0)
        #expect(c.routedToNextHop == 1 && engine.globalCounters.routedToNextHop == 1 && c.newFlows == 0)
      } else {
        #expect(verdict == .forward && expectValid(out)?.source == (external ?? natIP))
        #expect(c.routedToNextHop == 0)
      }
    }
  }

  @Test func applyingARouteEndsTheFlowsItTakesAway() throws {
    let engine = try NATEngine(capacity: 64, config: Self.config([Self.vm()]))
    let other = ip("198.51.100.7")
    let (_, toServer) = run(engine, outbound: true, Self.packet(.tcp, 1000, to: server), now: 0)
    let (_, toOther) = run(engine, outbound: true, Self.packet(.tcp, 1001, to: other), now: 0)
    #expect(engine.flowCount == 2)
    let route = CustomRoute(name: "via-fw", destination: cidr("203.0.113.0/24"), nextHop: Self.appliance)
    try engine.apply(Self.config([Self.vm()], routes: [route]), now: 1)
    #expect(run(engine, outbound: false, reversed(toServer), now: 2).0 == .drop(.filteredInbound))
    #expect(run(engine, outbound: false, reversed(toOther), now: 2).0 == .forward)
    #expect(engine.globalCounters.flowsEndedByConfig == 1 && engine.flowCount == 1)
    #expect(run(engine, outbound: true, Self.packet(.tcp, 1000, to: server), now: 3).0 == .drop(.routedToNextHop))
    // sweep finds them too.
    let (_, again) = run(engine, outbound: true, Self.packet(.tcp, 1002, to: other), now: 4)
    try engine.apply(Self.config([Self.vm()], routes: [CustomRoute(name: "all", destination: cidr("198.51.100.0/24"), nextHop: Self.appliance)]), now: 5)
    #expect(engine.sweep(now: 6, budget: 64) == 2 && engine.flowCount == 0)
    #expect(run(engine, outbound: false, reversed(again), now: 7).0 == .drop(.filteredInbound))
  }

  // MARK: Private Google Access

  @Test(arguments: [Kind.tcp, .udp, .icmp])
  func privateGoogleAccessLeavesUntranslated(kind: Kind) throws {
    let engine = try NATEngine(capacity: 64, config: Self.config([Self.vm(pga: true)]))
    let original = Self.packet(kind, 24000, to: Self.googleAPI, 443)
    let (verdict, out) = run(engine, outbound: true, original, now: 0)
    #expect(verdict == .forward && out == original)
    #expect(engine.flowCount == 0 && engine.mappingCount == 0)
    let reply =
      kind == .icmp
      ? PacketBuilder.icmpEcho(source: Self.googleAPI, destination: vmIP, type: 0, identifier: 24000, sequence: 1) : reversed(original)
    let (v2, back) = run(engine, outbound: false, reply, now: 1)
    #expect(v2 == .forward && back == reply)
    let c = try #require(engine.counters(forVM: "vm-a"))
    #expect(c.privateGoogleAccessPackets == 2 && c.packetsOut == 0 && c.newFlows == 0)
    #expect(engine.globalCounters.privateGoogleAccessOut == 1 && engine.globalCounters.privateGoogleAccessIn == 1)
    #expect(engine.globalCounters.translatedOut == 0)
    // Unsolicited traffic from the Google range to the VM meets the implied ingress deny.
    let unsolicited = Self.packet(kind == .icmp ? .udp : kind, from: ip("199.36.153.10"), 443, to: vmIP, 5555)
    #expect(run(engine, outbound: false, unsolicited, now: 1) == (.drop(.firewallDenied), unsolicited))
    // Outside the Google ranges nothing comes in to the internal IP.
    let stray = Self.packet(.udp, from: server, 443, to: vmIP, 24000)
    #expect(run(engine, outbound: false, stray, now: 1).0 == .drop(.filteredInbound))
  }

  struct PGACase: Sendable, CustomStringConvertible {
    var description: String
    var vm: VMConfig
    var expectedSource: IPv4Address
  }

  static let pgaCases: [PGACase] = [
    .init(description: "PGA on", vm: vm(pga: true), expectedSource: vmIP),
    .init(description: "PGA off: Cloud NAT", vm: vm(pga: false), expectedSource: natIP),
    .init(description: "external IP: 1:1, not PGA", vm: vm(external: external, pga: true), expectedSource: external),
    .init(description: "network without a policy", vm: vm(pga: true, network: "elsewhere"), expectedSource: natIP),
    .init(
      description: "no NAT for the primary range",
      vm: VMConfig(id: "vm-a", primaryIP: vmIP, natSourceRanges: [], portBlocks: [], network: vpc, privateGoogleAccess: true),
      expectedSource: vmIP),
  ]

  @Test(arguments: pgaCases)
  func whoUsesPrivateGoogleAccess(testCase: PGACase) throws {
    let engine = try NATEngine(capacity: 64, config: Self.config([testCase.vm]))
    let (verdict, out) = run(engine, outbound: true, Self.packet(.tcp, to: Self.googleAPI, 443), now: 0)
    #expect(verdict == .forward)
    #expect(expectValid(out)?.source == testCase.expectedSource)
    let (v2, back) = run(engine, outbound: false, reversed(out), now: 1)
    #expect(v2 == .forward && expectValid(back)?.destination == vmIP)
  }

  @Test func turningOnPrivateGoogleAccessEndsNATFlowsToGoogle() throws {
    let engine = try NATEngine(capacity: 64, config: Self.config([Self.vm()]))
    let syn = Self.packet(.tcp, to: Self.googleAPI, 443)
    let (_, out) = run(engine, outbound: true, syn, now: 0)
    #expect(expectValid(out)?.source == natIP)
    try engine.apply(Self.config([Self.vm(pga: true)]), now: 1)
    #expect(run(engine, outbound: true, syn, now: 2) == (.forward, syn))
    #expect(engine.flowCount == 0 && engine.globalCounters.flowsEndedByConfig == 1)
  }

  // MARK: logging

  @Test func deniedPacketsAreLoggedWhenTheRuleLogs() throws {
    let logged = FirewallRule(name: "deny-dns", direction: .egress, allow: false, matches: [.init(protocolNumber: IPProtocol.udp, ports: [53...53])], logging: true)
    let silent = FirewallRule(name: "deny-ntp", direction: .egress, allow: false, matches: [.init(protocolNumber: IPProtocol.udp, ports: [123...123])])
    let loggedIn = FirewallRule(name: "deny-telnet", direction: .ingress, allow: false, matches: Self.tcpRule([23...23]), logging: true)
    let route = CustomRoute(name: "via-fw", destination: cidr("192.0.2.128/25"), nextHop: Self.appliance)
    let gw = GatewaySettings(logging: LoggingConfig(enabled: true, filter: .errorsOnly))
    let engine = try NATEngine(
      capacity: 64,
      config: Self.config(
        [Self.vm(), Self.vm(id: "vm-b", address: ip("10.0.0.3"), external: Self.external, gateway: gw, ports: 35000..<35064)], rules: [logged, silent, loggedIn],
        routes: [route]))
    let ring = LogRing(capacity: 8)
    engine.logSink = ring
    #expect(run(engine, outbound: true, Self.packet(.udp, 1000, to: server, 53), now: 7).0 == .drop(.firewallDenied))
    #expect(run(engine, outbound: true, Self.packet(.udp, 1000, to: server, 123), now: 8).0 == .drop(.firewallDenied))
    // Implied ingress deny: never logged; an explicit logging rule: logged.
    #expect(run(engine, outbound: false, Self.packet(.tcp, from: Self.peer, 4000, to: Self.external, 22), now: 9).0 == .drop(.firewallDenied))
    #expect(run(engine, outbound: false, Self.packet(.tcp, from: Self.peer, 4000, to: Self.external, 23), now: 10).0 == .drop(.firewallDenied))
    // Routed away: logged because vm-b's gateway logs errors; vm-a's does not log.
    #expect(run(engine, outbound: true, Self.packet(.udp, 1000, to: ip("192.0.2.200"), 9), now: 11).0 == .drop(.routedToNextHop))
    #expect(run(engine, outbound: true, Self.packet(.udp, from: ip("10.0.0.3"), 1000, to: ip("192.0.2.200"), 9), now: 12).0 == .drop(.routedToNextHop))
    let records = ring.drain()
    try #require(records.count == 3)
    #expect(records[0] == LogRecord(
      timestamp: 7, insideIP: vmIP, remoteIP: server, natIP: IPv4Address(0), insidePort: 1000, remotePort: 53, natPort: 0,
      protocolNumber: IPProtocol.udp, status: .dropped, reason: .firewallDenied, vmIndex: 0))
    #expect(records[1] == LogRecord(
      timestamp: 10, insideIP: ip("10.0.0.3"), remoteIP: Self.peer, natIP: Self.external, insidePort: 23, remotePort: 4000,
      natPort: 23, protocolNumber: IPProtocol.tcp, status: .dropped, reason: .firewallDenied, vmIndex: 1))
    #expect(records[2].reason == .routedToNextHop && records[2].vmIndex == 1 && records[2].timestamp == 12)
  }

  // MARK: no policy

  @Test func vmsWithoutAPolicyAreUnaffected() throws {
    let denyAll = [
      FirewallRule(name: "deny-out", direction: .egress, priority: 0, allow: false),
      FirewallRule(name: "deny-in", direction: .ingress, priority: 0, allow: false),
    ]
    let routes = [CustomRoute(name: "d", destination: cidr("0.0.0.0/0"), priority: 0, nextHop: .vpnTunnel("t"))]
    let a = Self.vm(id: "no-network", address: ip("10.0.0.2"), external: Self.external, pga: true, network: "")
    let b = Self.vm(id: "unknown-network", address: ip("10.0.0.3"), pga: true, network: "other", ports: 35000..<35064)
    let c = Self.vm(id: "policed", address: ip("10.0.0.4"), network: Self.vpc, ports: 36000..<36064)
    let engine = try NATEngine(capacity: 64, config: Self.config([a, b, c], rules: denyAll, routes: routes))
    // 1:1 both ways, unsolicited inbound included.
    #expect(run(engine, outbound: true, Self.packet(.tcp, from: a.primaryIP, to: Self.googleAPI, 443), now: 0).0 == .forward)
    #expect(run(engine, outbound: false, Self.packet(.tcp, from: Self.peer, 1, to: Self.external, 22), now: 0).0 == .forward)
    // NAT, even to the Google range.
    let (v, out) = run(engine, outbound: true, Self.packet(.udp, from: b.primaryIP, to: Self.googleAPI, 443), now: 0)
    #expect(v == .forward && expectValid(out)?.source == natIP)
    #expect(run(engine, outbound: false, Self.packet(.udp, from: Self.googleAPI, 443, to: b.primaryIP, 24000), now: 0).0 == .drop(.filteredInbound))
    // The VM in the policed network is denied.
    #expect(run(engine, outbound: true, Self.packet(.udp, from: c.primaryIP, to: server, 53), now: 0).0 == .drop(.firewallDenied))
    #expect(engine.globalCounters.firewallDeniedEgress == 1 && engine.globalCounters.routedToNextHop == 0)
  }

  // MARK: target tags

  /// Two VMs with external IPs in one network: `web` carries the tag "web", `plain` none.
  static func taggedPair(webTags: [String] = ["web"], plainTags: [String] = []) -> [VMConfig] {
    [
      vm(id: "web", address: ip("10.0.0.2"), external: ip("34.1.2.3"), ports: 34000..<34064, tags: webTags),
      vm(id: "plain", address: ip("10.0.0.3"), external: ip("34.1.2.4"), ports: 34064..<34128, tags: plainTags),
    ]
  }

  @Test func targetTagsPickTheVMsARuleAppliesTo() throws {
    let allowWeb = FirewallRule(name: "allow-web", direction: .ingress, allow: true, matches: Self.tcpRule([80...80]), targetTags: ["web", "www"])
    let lockOut = FirewallRule(name: "lock-out", direction: .egress, priority: 10, allow: false, targetTags: ["locked"])
    let nobody = FirewallRule(name: "nobody", direction: .egress, priority: 0, allow: false, targetTags: ["unused"])
    let rules = [allowWeb, lockOut, nobody]
    let engine = try NATEngine(capacity: 64, config: Self.config(Self.taggedPair(plainTags: ["locked"]), rules: rules))
    func http(to external: String, _ sport: UInt16) -> [UInt8] { Self.packet(.tcp, from: Self.peer, sport, to: ip(external), 80) }
    // Ingress: only the tagged VM takes port 80; the other falls to the implied deny.
    #expect(run(engine, outbound: false, http(to: "34.1.2.3", 5000), now: 0).0 == .forward)
    #expect(run(engine, outbound: false, http(to: "34.1.2.4", 5000), now: 0).0 == .drop(.firewallDenied))
    // Egress: the deny applies to the "locked" VM only; the rule whose tag nobody carries to nobody.
    #expect(run(engine, outbound: true, Self.packet(.udp, from: ip("10.0.0.2"), to: server, 53), now: 0).0 == .forward)
    #expect(run(engine, outbound: true, Self.packet(.udp, from: ip("10.0.0.3"), to: server, 53), now: 0).0 == .drop(.firewallDenied))
    #expect(engine.counters(forVM: "plain")?.droppedFirewall == 2 && engine.counters(forVM: "web")?.droppedFirewall == 0)

    // Retagging: "plain" gains "www" (one of allow-web's tags) and loses "locked"; "web" loses its tag.
    try engine.apply(Self.config(Self.taggedPair(webTags: [], plainTags: ["www"]), rules: rules), now: 1)
    #expect(run(engine, outbound: false, http(to: "34.1.2.4", 5001), now: 2).0 == .forward)
    #expect(run(engine, outbound: true, Self.packet(.udp, from: ip("10.0.0.3"), to: server, 53), now: 2).0 == .forward)
    // A new connection to the untagged VM is denied; the one it already had goes on (stateful).
    #expect(run(engine, outbound: false, http(to: "34.1.2.3", 5002), now: 2).0 == .drop(.firewallDenied))
    #expect(run(engine, outbound: false, http(to: "34.1.2.3", 5000), now: 2).0 == .forward)
  }

  @Test func targetTagsApplyToNATedVMs() throws {
    // NAT-only VMs: egress rules by tag before NAT.
    let denyTagged = FirewallRule(name: "deny-tagged", direction: .egress, allow: false, matches: Self.tcpRule([443...443]), targetTags: ["no-https"])
    let engine = try NATEngine(
      capacity: 64,
      config: Self.config(
        [Self.vm(id: "a", address: ip("10.0.0.2"), ports: 34000..<34064, tags: ["no-https"]), Self.vm(id: "b", address: ip("10.0.0.3"), ports: 34064..<34128)],
        rules: [denyTagged]))
    #expect(run(engine, outbound: true, Self.packet(.tcp, from: ip("10.0.0.2"), to: server, 443), now: 0).0 == .drop(.firewallDenied))
    let (v, out) = run(engine, outbound: true, Self.packet(.tcp, from: ip("10.0.0.3"), to: server, 443), now: 0)
    #expect(v == .forward && expectValid(out)?.source == natIP)
  }

  @Test func aNetworkNamesAtMost64TargetTags() throws {
    let engine = try NATEngine(capacity: 16, config: Self.config([Self.vm()]))
    let many = (0..<64).map { FirewallRule(name: "r\($0)", direction: .ingress, allow: true, targetTags: ["t\($0)", "t\(($0 + 1) % 64)"]) }
    try engine.apply(Self.config([Self.vm(tags: ["t5"])], rules: many), now: 0)
    let tooMany = many + [FirewallRule(name: "one-more", direction: .ingress, allow: true, targetTags: ["t64"])]
    #expect(throws: EngineError.invalidPolicy(network: Self.vpc, name: "one-more")) {
      try engine.apply(Self.config([Self.vm()], rules: tooMany), now: 1)
    }
  }

  @Test func invalidPrioritiesAreRefused() throws {
    let engine = try NATEngine(capacity: 16, config: Self.config([Self.vm()]))
    #expect(throws: EngineError.invalidPolicy(network: Self.vpc, name: "bad")) {
      try engine.apply(Self.config([Self.vm()], rules: [.init(name: "bad", direction: .egress, priority: 70000, allow: false)]), now: 0)
    }
    #expect(throws: EngineError.invalidPolicy(network: Self.vpc, name: "r")) {
      try engine.apply(Self.config([Self.vm()], routes: [.init(name: "r", destination: cidr("0.0.0.0/0"), priority: -1, nextHop: .internetGateway)]), now: 0)
    }
  }
}
