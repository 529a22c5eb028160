public import HostnatAddressing

// The intent compiler: checks a `NATIntent` and indexes it for the planner. Everything but the
// instances is compiled once per intent (this file and its +Topology, +Gateways, +Rules parts);
// instances are compiled one at a time against an `AddressIndex` (+Instances).

/// Why the planner refused an intent or a change: `field` is a path into the intent such as
/// "natGateways[gw1].minPortsPerVm" or "instances[vm1].networkInterfaces[0].networkIP", and
/// `reason` is text for an operator. A refused change leaves the planner exactly as it was.
public typealias PlannerValidationError = FieldError

func fail(_ field: String, _ reason: String) -> PlannerValidationError {
  PlannerValidationError(field: field, reason: reason)
}

// `field` is an autoclosure: building the path costs more than parsing, and is rarely needed.
func parseCIDR(_ text: String, field: @autoclosure () -> String) throws(PlannerValidationError) -> IPv4CIDR {
  guard let cidr = IPv4CIDR(strict: text) else {
    throw fail(field(), "'\(text)' is not an IPv4 range a.b.c.d/n with zero host bits")
  }
  return cidr
}

func parseAddress(_ text: String, field: @autoclosure () -> String) throws(PlannerValidationError) -> UInt32 {
  guard let address = IPv4Address(text) else { throw fail(field(), "'\(text)' is not an IPv4 address a.b.c.d") }
  return address.value
}

// MARK: - Identifiers

/// A network's position in the intent.
struct NetworkID: Hashable, Comparable, Sendable {
  var raw: Int32
  init(_ index: Int) { raw = Int32(index) }
  var index: Int { Int(raw) }
  static func < (a: Self, b: Self) -> Bool { a.raw < b.raw }
}

/// A subnetwork's position in `CompiledIntent.subnets`.
struct SubnetID: Hashable, Sendable {
  var raw: Int32
  init(_ index: Int) { raw = Int32(index) }
  var index: Int { Int(raw) }
}

/// A gateway's position in `CompiledIntent.gateways` (the intent's order).
struct GatewayID: Hashable, Comparable, Sendable {
  var raw: Int32
  init(_ index: Int) { raw = Int32(index) }
  init(raw: Int32) { self.raw = raw }
  var index: Int { Int(raw) }
  static func < (a: Self, b: Self) -> Bool { a.raw < b.raw }

  /// An optional gateway in four bytes, for the per-NIC records of a plan: `Optional` adds a
  /// tag byte, and with it value-witness calls where a NIC is copied or stored in a `SmallArray`.
  struct Storage: Hashable, Sendable {
    fileprivate var raw: Int32
    init(_ id: GatewayID?) { raw = id?.raw ?? -1 }
  }

  @inline(__always)
  init?(_ storage: Storage) {
    guard storage.raw >= 0 else { return nil }
    raw = storage.raw
  }
}

/// A NAT rule's position in `CompiledIntent.rules`.
struct RuleID: Hashable, Comparable, Sendable {
  var raw: Int32
  init(_ index: Int) { raw = Int32(index) }
  init(raw: Int32) { self.raw = raw }
  var index: Int { Int(raw) }
  static func < (a: Self, b: Self) -> Bool { a.raw < b.raw }
}

/// A pool of NAT IPs the planner allocates from: a gateway's default NAT IPs, or one of its NAT
/// rules' IPs. Ordered as the planner fills them: every gateway's default pool, then the rules.
///
/// One `Int32` underneath (rule pools from `ruleBase` up), so that comparing, hashing and storing
/// one costs what an index does on the allocation path; read it through `kind`.
struct PoolID: Hashable, Comparable, Sendable {
  enum Kind {
    case gateway(GatewayID)
    case rule(RuleID)
  }

  private let raw: Int32
  private static let ruleBase: Int32 = 1 << 30

  private init(raw: Int32) { self.raw = raw }

  static func gateway(_ g: GatewayID) -> PoolID { PoolID(raw: g.raw) }
  static func rule(_ r: RuleID) -> PoolID { PoolID(raw: ruleBase + r.raw) }

  @inline(__always)
  var kind: Kind { raw < Self.ruleBase ? .gateway(GatewayID(raw: raw)) : .rule(RuleID(raw: raw - Self.ruleBase)) }

  static func < (a: Self, b: Self) -> Bool { a.raw < b.raw }
}

/// Names a pool of NAT IPs across re-plans: a gateway's default pool (`rule` nil) or one of its
/// rules. Gateway names are free text, so the rule is a field rather than part of the name.
struct PoolKey: Hashable, Sendable {
  var gateway: String
  var rule: Int32?
}

// MARK: - The compiled intent

/// Everything but the instances, checked and indexed.
///
/// Rules are sorted by gateway, then rule number, so the rules of a gateway are contiguous
/// (`ruleRanges`).
struct CompiledIntent: Sendable {
  var intent = NATIntent()
  var networkIndex: [String: NetworkID] = [:]
  var subnets: [IntentSubnet] = []
  var subnetIndex: [String: SubnetID] = [:]
  var gateways: [IntentGateway] = []
  var gatewayIndex: [String: GatewayID] = [:]
  var autoPools: [String: [UInt32]] = [:]
  var autoPoolRegion: [UInt32: String] = [:]
  var rules: [IntentRule] = []
  /// Per gateway: its indices in `rules`.
  var ruleRanges: [Range<Int>] = []

  /// Checks the non-instance part of an intent.
  static func compile(_ source: NATIntent) throws(PlannerValidationError) -> CompiledIntent {
    var compiler = IntentCompiler(source)
    try compiler.compileNetworks()
    try compiler.compileSubnets()
    try compiler.checkRangeOverlaps()
    try compiler.compileRouters()
    try compiler.compileAutoPools()
    try compiler.compileGateways()
    return compiler.result
  }

  subscript(gateway: GatewayID) -> IntentGateway { gateways[gateway.index] }
  subscript(rule: RuleID) -> IntentRule { rules[rule.index] }
  subscript(subnet: SubnetID) -> IntentSubnet { subnets[subnet.index] }

  /// Every pool in fill order: the gateways' default pools, then the rules.
  var poolIDs: [PoolID] { gateways.indices.map { .gateway(GatewayID($0)) } + rules.indices.map { .rule(RuleID($0)) } }

  /// The gateway a pool belongs to.
  @inline(__always)
  func gateway(of pool: PoolID) -> GatewayID {
    switch pool.kind {
    case .gateway(let g): g
    case .rule(let r): self[r].gateway
    }
  }

  /// A rule pool gets the gateway's static `minPortsPerVm`: no dynamic port allocation on rule
  /// IPs, so every NIC holds exactly minPortsPerVm there. A limitation of this emulation (Cloud
  /// NAT grows rule mappings too); it keeps rule pools out of grant/reclaim, which the hosts
  /// drive for the default NAT IPs only.
  func policy(of pool: PoolID) -> PortPolicy {
    switch pool.kind {
    case .gateway(let g): return self[g].policy
    case .rule(let r):
      let minPorts = self[self[r].gateway].policy.minPorts
      return PortPolicy(dynamic: false, minPorts: minPorts, maxPorts: minPorts)
    }
  }

  /// The pool's active NAT IPs as the intent lists them (empty for an auto-allocating gateway).
  func active(of pool: PoolID) -> [UInt32] {
    switch pool.kind {
    case .gateway(let g): self[g].active
    case .rule(let r): self[r].active
    }
  }

  /// The pool's drained NAT IPs as the intent lists them.
  func drained(of pool: PoolID) -> [UInt32] {
    switch pool.kind {
    case .gateway(let g): self[g].drained
    case .rule(let r): self[r].drained
    }
  }

  /// Whether the pool takes auto-allocated NAT IPs: rule IPs are always manual.
  func isAuto(_ pool: PoolID) -> Bool {
    switch pool.kind {
    case .gateway(let g): self[g].auto
    case .rule: false
    }
  }

  func key(of pool: PoolID) -> PoolKey {
    switch pool.kind {
    case .gateway(let g): PoolKey(gateway: self[g].spec.name, rule: nil)
    case .rule(let r): PoolKey(gateway: self[self[r].gateway].spec.name, rule: Int32(self[r].ruleNumber))
    }
  }

  /// The pools of a gateway's rules, by rule number. Lazy: this runs for every NIC of a plan.
  func rulePools(of gateway: GatewayID) -> LazyMapSequence<Range<Int>, PoolID> {
    ruleRanges[gateway.index].lazy.map { .rule(RuleID($0)) }
  }
}

/// The compiler's working state while it checks one intent. Each check runs in intent order, so
/// when two items clash the later one is reported.
struct IntentCompiler {
  let source: NATIntent
  var result = CompiledIntent()
  /// Every subnet range of each network, for the overlap check.
  var rangesByNetwork: [NetworkID: [(cidr: IPv4CIDR, field: String, order: Int)]] = [:]
  var routers: [String: (network: NetworkID, region: String)] = [:]
  /// Gateways so far per network and region, and those claiming all its ranges or primaries.
  var gatewaysInScope: [Scope: [String]] = [:]
  var allRangesOwner: [Scope: String] = [:]
  var allPrimaryOwner: [Scope: String] = [:]
  /// The pool each NAT IP seen so far belongs to.
  var natIpOwner: [UInt32: NATIPOwner] = [:]
  /// Per gateway, its rules sorted by rule number (numbered into `result.rules` at the end).
  var rulesByGateway: [[IntentRule]] = []

  struct Scope: Hashable {
    var network: NetworkID
    var region: String
  }

  /// A gateway's default NAT IPs (`rule` nil) or one of its rules'.
  struct NATIPOwner: Equatable {
    var gateway: String
    var rule: Int?
  }

  init(_ source: NATIntent) {
    self.source = source
    result.intent = source
    result.intent.instances = []
  }
}
