public import HostnatAddressing
import HostnatPackets

// The VPC network around the VMs: firewall rules, custom routes and Private Google Access, as the
// host applies them around Cloud NAT (egress rules before NAT, ingress rules after the NAT IP is
// translated back to the VM's internal IP).

/// Direction of a firewall rule, from the VM's point of view.
public enum FirewallDirection: UInt8, Sendable, Hashable { case ingress, egress }

/// One protocol a rule matches, with optional port ranges (empty = all ports; ICMP has none).
public struct FirewallMatch: Sendable, Hashable {
  /// IP protocol number; nil = every protocol.
  public var protocolNumber: UInt8?
  /// Destination port ranges; empty = all ports. Only TCP and UDP packets have ports, so a match with
  /// ports never matches other protocols.
  public var ports: [ClosedRange<UInt16>]

  public init(protocolNumber: UInt8?, ports: [ClosedRange<UInt16>] = []) {
    self.protocolNumber = protocolNumber
    self.ports = ports
  }
}

/// A VPC firewall rule. Among the rules matching a packet the lowest priority number wins; at equal
/// priority deny beats allow. The implied rules (allow all egress, deny all ingress, priority 65535)
/// are not listed. Rules are stateful: replies of an allowed connection are always allowed.
public struct FirewallRule: Sendable, Hashable {
  public var name: String
  public var direction: FirewallDirection
  /// 0...65535, lower wins.
  public var priority: Int
  public var allow: Bool
  /// Empty = every protocol.
  public var matches: [FirewallMatch]
  /// Ingress: source ranges; egress: destination ranges. Empty = 0.0.0.0/0.
  public var ranges: [IPv4CIDR]
  /// Log the packets this rule denies (allowed packets are never logged by the engine).
  public var logging: Bool
  /// The rule applies only to VMs carrying one of these network tags (`VMConfig.tags`); empty = all.
  public var targetTags: [String]

  public init(
    name: String, direction: FirewallDirection, priority: Int = 1000, allow: Bool, matches: [FirewallMatch] = [],
    ranges: [IPv4CIDR] = [], logging: Bool = false, targetTags: [String] = []
  ) {
    self.name = name
    self.direction = direction
    self.priority = priority
    self.allow = allow
    self.matches = matches
    self.ranges = ranges
    self.logging = logging
    self.targetTags = targetTags
  }
}

/// Where a route sends matching traffic.
public enum RouteNextHop: Sendable, Hashable {
  /// The default Internet gateway: the traffic may use Cloud NAT.
  case internetGateway
  case instance(String)
  case vpnTunnel(String)
}

/// A custom static route. Traffic it sends anywhere but the Internet gateway never uses Cloud NAT.
public struct CustomRoute: Sendable, Hashable {
  public var name: String
  public var destination: IPv4CIDR
  /// 0...65535, lower wins among routes of the same prefix length.
  public var priority: Int
  public var nextHop: RouteNextHop

  public init(name: String, destination: IPv4CIDR, priority: Int = 1000, nextHop: RouteNextHop) {
    self.name = name
    self.destination = destination
    self.priority = priority
    self.nextHop = nextHop
  }
}

/// The VPC network around a set of VMs.
public struct NetworkPolicy: Sendable, Hashable {
  public var firewallRules: [FirewallRule]
  /// Custom routes; the implicit default route 0.0.0.0/0 → Internet gateway (priority 1000) always exists.
  public var routes: [CustomRoute]
  /// The ranges Private Google Access reaches without NAT (private.googleapis.com and the like).
  public var googleAPIsRanges: [IPv4CIDR]
  /// Subnet routes: destinations reached inside the VPC (the network's subnets and its peers'),
  /// which beat every custom route and never use NAT. Packets to them leave as
  /// `Verdict.forwardInVPC`, and only sources in them are accepted from the fabric.
  public var internalRanges: [IPv4CIDR]
  /// The network's tag in the VPC fabric (`Underlay.vpcVNI`); the engine only carries it.
  public var fabricID: UInt32

  public init(
    firewallRules: [FirewallRule] = [], routes: [CustomRoute] = [], googleAPIsRanges: [IPv4CIDR] = [],
    internalRanges: [IPv4CIDR] = [], fabricID: UInt32 = 0
  ) {
    self.firewallRules = firewallRules
    self.routes = routes
    self.googleAPIsRanges = googleAPIsRanges
    self.internalRanges = internalRanges
    self.fabricID = fabricID
  }
}

// MARK: - Compiled form

/// A firewall rule flattened for the packet path: its matches and ranges are slices of the policy's
/// plain arrays.
struct CompiledRule {
  /// Bits of the network's target tags (`CompiledPolicies.tagBits`) the rule applies to; 0 = every VM.
  var targets: UInt64
  var allow: Bool
  var logging: Bool
  var matchStart: Int
  var matchCount: Int
  var rangeStart: Int
  var rangeCount: Int
}

struct CompiledMatch {
  /// 0x100 = every protocol.
  var proto: UInt16
  var portStart: Int
  var portCount: Int
}

struct CompiledRoute {
  var first: UInt32
  var last: UInt32
  var toInternet: Bool
}

/// One network's slices of the compiled policy arrays.
struct CompiledNetwork {
  var egressStart: Int
  var egressCount: Int
  var ingressStart: Int
  var ingressCount: Int
  /// Routes in precedence order (longest prefix, then lowest priority, the implicit default before a
  /// custom route of equal standing); the first containing the destination decides.
  var routeStart: Int
  var routeCount: Int
  /// False when every route leads to the Internet gateway, so route lookups can be skipped.
  var hasNextHopRoutes: Bool
  var googleStart: Int
  var googleCount: Int
  var internalStart: Int
  var internalCount: Int
}

/// All networks' policies as plain arrays, built off the packet path so checks allocate nothing.
struct CompiledPolicies {
  var networks: [CompiledNetwork] = []
  var rules: [CompiledRule] = []
  var matches: [CompiledMatch] = []
  /// Port ranges as (low, high).
  var ports: [(UInt16, UInt16)] = []
  /// Address ranges as (first, last): rule ranges and Google APIs ranges.
  var ranges: [(UInt32, UInt32)] = []
  var routes: [CompiledRoute] = []
  /// Network name → index in `networks`, or -1 when the network has no policy.
  var cache: [String: Int] = [:]
  /// Per compiled network, the bit of each target tag its rules name (at most `maxTargetTags`).
  var tagBits: [[String: Int]] = []

  /// Target tags per network a host can tell apart: one bit each in a 64-bit mask per rule and VM.
  static let maxTargetTags = 64

  /// The mask of `tags` in compiled network `network` (0 when it has no policy or names none of them).
  func tagMask(_ tags: [String], network: Int) -> UInt64 {
    guard network >= 0 else { return 0 }
    var mask: UInt64 = 0
    for tag in tags { if let bit = tagBits[network][tag] { mask |= 1 << UInt64(bit) } }
    return mask
  }

  /// Index of the compiled network named `name`, compiling it on first use; -1 when it has no policy.
  mutating func network(named name: String, in policies: [String: NetworkPolicy]) throws(EngineError) -> Int {
    if let i = cache[name] { return i }
    guard let policy = policies[name] else {
      cache[name] = -1
      return -1
    }
    var n = CompiledNetwork(
      egressStart: 0, egressCount: 0, ingressStart: 0, ingressCount: 0, routeStart: 0, routeCount: 0,
      hasNextHopRoutes: false, googleStart: 0, googleCount: 0, internalStart: 0, internalCount: 0)
    for rule in policy.firewallRules where !(0...65535).contains(rule.priority) {
      throw .invalidPolicy(network: name, name: rule.name)
    }
    var bits: [String: Int] = [:]
    for rule in policy.firewallRules {
      for tag in rule.targetTags where bits[tag] == nil {
        guard bits.count < Self.maxTargetTags else { throw .invalidPolicy(network: name, name: rule.name) }
        bits[tag] = bits.count
      }
    }
    for direction in [FirewallDirection.egress, .ingress] {
      // Stable: first match wins, so lower priority first and deny before allow at equal priority.
      let sorted = policy.firewallRules.enumerated().filter { $0.element.direction == direction }
        .sorted { a, b in
          (a.element.priority, a.element.allow ? 1 : 0, a.offset) < (b.element.priority, b.element.allow ? 1 : 0, b.offset)
        }
      let start = rules.count
      for (_, rule) in sorted {
        let matchStart = matches.count
        for m in rule.matches {
          let portStart = ports.count
          for r in m.ports { ports.append((r.lowerBound, r.upperBound)) }
          matches.append(
            CompiledMatch(
              proto: m.protocolNumber.map { UInt16($0) } ?? 0x100, portStart: portStart, portCount: ports.count - portStart))
        }
        let rangeStart = ranges.count
        for r in rule.ranges { ranges.append((r.first.value, r.last.value)) }
        var targets: UInt64 = 0
        for tag in rule.targetTags { targets |= 1 << UInt64(bits[tag]!) }
        rules.append(
          CompiledRule(
            targets: targets, allow: rule.allow, logging: rule.logging, matchStart: matchStart, matchCount: matches.count - matchStart,
            rangeStart: rangeStart, rangeCount: ranges.count - rangeStart))
      }
      if direction == .egress {
        n.egressStart = start
        n.egressCount = rules.count - start
      } else {
        n.ingressStart = start
        n.ingressCount = rules.count - start
      }
    }
    for route in policy.routes where !(0...65535).contains(route.priority) {
      throw .invalidPolicy(network: name, name: route.name)
    }
    // The implicit default route ranks before custom routes of equal prefix and priority.
    let implicit = CustomRoute(name: "", destination: IPv4CIDR(IPv4Address(0), prefixLength: 0)!, nextHop: .internetGateway)
    let all = [(-1, implicit)] + policy.routes.enumerated().map { ($0.offset, $0.element) }
    let ordered = all.sorted { a, b in
      (-a.1.destination.prefixLength, a.1.priority, a.0) < (-b.1.destination.prefixLength, b.1.priority, b.0)
    }
    n.routeStart = routes.count
    for (_, route) in ordered {
      let toInternet = route.nextHop == .internetGateway
      if !toInternet { n.hasNextHopRoutes = true }
      routes.append(CompiledRoute(first: route.destination.first.value, last: route.destination.last.value, toInternet: toInternet))
    }
    n.routeCount = routes.count - n.routeStart
    n.googleStart = ranges.count
    for r in policy.googleAPIsRanges { ranges.append((r.first.value, r.last.value)) }
    n.googleCount = ranges.count - n.googleStart
    n.internalStart = ranges.count
    for r in policy.internalRanges { ranges.append((r.first.value, r.last.value)) }
    n.internalCount = ranges.count - n.internalStart
    let index = networks.count
    networks.append(n)
    tagBits.append(bits)
    cache[name] = index
    return index
  }
}

/// The compiled policies in raw buffers (no array bounds checks or retain/release on the packet path).
/// A plain struct of buffer pointers owned by its `CompiledConfig`, which frees them (`deallocate`).
struct PolicyTables {
  let networks: UnsafeMutableBufferPointer<CompiledNetwork>
  let rules: UnsafeMutableBufferPointer<CompiledRule>
  let matches: UnsafeMutableBufferPointer<CompiledMatch>
  let ports: UnsafeMutableBufferPointer<(UInt16, UInt16)>
  let ranges: UnsafeMutableBufferPointer<(UInt32, UInt32)>
  let routes: UnsafeMutableBufferPointer<CompiledRoute>

  init(_ p: CompiledPolicies) {
    func copy<T>(_ a: [T]) -> UnsafeMutableBufferPointer<T> {
      let b = UnsafeMutableBufferPointer<T>.allocate(capacity: max(a.count, 1))
      _ = b.initialize(from: a)
      return b
    }
    networks = copy(p.networks)
    rules = copy(p.rules)
    matches = copy(p.matches)
    ports = copy(p.ports)
    ranges = copy(p.ranges)
    routes = copy(p.routes)
  }

  /// Frees the buffers; called once, by the owning `CompiledConfig`'s deinit.
  func deallocate() {
    networks.deallocate()
    rules.deallocate()
    matches.deallocate()
    ports.deallocate()
    ranges.deallocate()
    routes.deallocate()
  }

  /// Whether one of the address ranges `ranges[start..<start + count]` (as (first, last)) contains
  /// `address`.
  @inline(__always)
  static func inRanges(
    _ ranges: UnsafeMutableBufferPointer<(UInt32, UInt32)>, _ start: Int, _ count: Int, _ address: UInt32
  ) -> Bool {
    for i in start..<(start &+ count) {
      let r = ranges[i]
      if address >= r.0 && address <= r.1 { return true }
    }
    return false
  }

  /// The first rule (in precedence order) of one direction that applies to a VM with tag mask `tags`
  /// and matches the packet: its index, or -1 for the implied rule. `port` is ignored unless the
  /// protocol has ports (TCP/UDP).
  func firewall(_ n: CompiledNetwork, tags: UInt64, ingress: Bool, remote: UInt32, proto: UInt8, port: UInt16) -> Int {
    let hasPorts = proto == IPProtocol.tcp || proto == IPProtocol.udp
    let start = ingress ? n.ingressStart : n.egressStart
    let count = ingress ? n.ingressCount : n.egressCount
    for i in start..<(start &+ count) {
      let rule = rules[i]
      if rule.targets != 0 && rule.targets & tags == 0 { continue }
      if rule.rangeCount > 0 && !Self.inRanges(ranges, rule.rangeStart, rule.rangeCount, remote) { continue }
      if rule.matchCount == 0 { return i }
      for m in rule.matchStart..<(rule.matchStart &+ rule.matchCount) {
        let match = matches[m]
        guard match.proto == 0x100 || match.proto == UInt16(proto) else { continue }
        if match.portCount == 0 { return i }
        guard hasPorts else { continue }
        for p in match.portStart..<(match.portStart &+ match.portCount) {
          let r = ports[p]
          if port >= r.0 && port <= r.1 { return i }
        }
      }
    }
    return -1
  }

  /// Whether traffic to `destination` is routed to the Internet gateway (and so may use NAT).
  func routesToInternet(_ n: CompiledNetwork, _ destination: UInt32) -> Bool {
    guard n.hasNextHopRoutes else { return true }
    for i in n.routeStart..<(n.routeStart &+ n.routeCount) {
      let r = routes[i]
      if destination >= r.first && destination <= r.last { return r.toInternet }
    }
    return true
  }

  /// Whether `address` is reached inside the VPC (a subnet route of the network or of a peer).
  @inline(__always)
  func isInternal(_ n: CompiledNetwork, _ address: UInt32) -> Bool {
    n.internalCount > 0 && Self.inRanges(ranges, n.internalStart, n.internalCount, address)
  }

  @inline(__always)
  func isGoogleAPI(_ n: CompiledNetwork, _ address: UInt32) -> Bool { Self.inRanges(ranges, n.googleStart, n.googleCount, address) }

  /// Whether traffic to `destination` goes through NAT: routed to the Internet gateway, and not to the
  /// Google APIs ranges when Private Google Access applies (`pga`).
  @inline(__always)
  func usesNAT(_ n: CompiledNetwork, pga: Bool, _ destination: UInt32) -> Bool {
    !isInternal(n, destination) && routesToInternet(n, destination) && !(pga && isGoogleAPI(n, destination))
  }
}

/// Connection tracking for the paths that keep no NAT flow (1:1 external IPs and Private Google
/// Access), so that firewall rules are stateful there too: a connection allowed in one direction
/// lets its replies through. 4-way set associative over one fixed array, keyed by (protocol,
/// inside IP:port, remote IP:port): nothing is allocated per packet, and when a set is full the
/// entry closest to expiry is replaced, which only costs that connection its statefulness (its
/// next packet is judged by the rules again).
struct ConnTrackTable: ~Copyable {
  struct Entry {
    var insideIP: UInt32 = 0
    var remoteIP: UInt32 = 0
    var insidePort: UInt16 = 0
    var remotePort: UInt16 = 0
    var proto: UInt8 = 0
    /// 0 = empty.
    var expiresAt: UInt64 = 0
  }

  static let ways = 4
  static let sets = 2048

  private let entries: UnsafeMutableBufferPointer<Entry>

  init() {
    entries = .allocate(capacity: Self.sets * Self.ways)
    entries.initialize(repeating: Entry())
  }

  deinit { entries.deallocate() }

  @inline(__always)
  static func set(_ proto: UInt8, _ insideIP: UInt32, _ insidePort: UInt16, _ remoteIP: UInt32, _ remotePort: UInt16) -> Int {
    let h = hashTuple(insideIP, remoteIP, insidePort, remotePort, proto, seed: 0x436F_6E6E)
    return (Int(truncatingIfNeeded: h) & (sets - 1)) &* ways
  }

  /// What `refresh` found.
  enum Lookup {
    /// The connection is tracked and live; its expiry was pushed on.
    case tracked
    /// Not tracked: `set` is the base of its set, for `insert`.
    case untracked(set: Int)

    var isTracked: Bool {
      if case .tracked = self { return true }
      return false
    }
  }

  func refresh(
    _ proto: UInt8, _ insideIP: UInt32, _ insidePort: UInt16, _ remoteIP: UInt32, _ remotePort: UInt16, now: UInt64,
    expiresAt: UInt64
  ) -> Lookup {
    let base = Self.set(proto, insideIP, insidePort, remoteIP, remotePort)
    for i in base..<(base &+ Self.ways) {
      let e = entries[i]
      if e.expiresAt > now && e.insideIP == insideIP && e.remoteIP == remoteIP && e.insidePort == insidePort
        && e.remotePort == remotePort && e.proto == proto
      {
        entries[i].expiresAt = expiresAt
        return .tracked
      }
    }
    return .untracked(set: base)
  }

  /// Starts tracking a connection in its set `base` (as `refresh` returned it, finding it untracked).
  func insert(
    at base: Int, _ proto: UInt8, _ insideIP: UInt32, _ insidePort: UInt16, _ remoteIP: UInt32, _ remotePort: UInt16,
    expiresAt: UInt64
  ) {
    var victim = base
    for i in base..<(base &+ Self.ways) where entries[i].expiresAt < entries[victim].expiresAt { victim = i }
    entries[victim] = Entry(
      insideIP: insideIP, remoteIP: remoteIP, insidePort: insidePort, remotePort: remotePort, proto: proto,
      expiresAt: expiresAt)
  }
}
