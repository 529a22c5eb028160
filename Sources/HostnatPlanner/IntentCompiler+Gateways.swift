// NAT gateways: port and timeout settings, default NAT IPs, and which subnet ranges each translates.

/// The timeouts a gateway hands to hosts, with Cloud NAT's defaults filled in.
public struct NATTimeouts: Hashable, Sendable {
  public var udpIdleSec: Int
  public var icmpIdleSec: Int
  public var tcpEstablishedIdleSec: Int
  public var tcpTransitoryIdleSec: Int
  public var tcpTimeWaitSec: Int

  public static let defaults = NATTimeouts(udpIdleSec: 30, icmpIdleSec: 30, tcpEstablishedIdleSec: 1200, tcpTransitoryIdleSec: 30, tcpTimeWaitSec: 120)
  /// Upper bound for every timeout: 7 days. Longer idle timers would pin ports for longer than any
  /// lease the controller hands out, so they are rejected rather than silently clamped.
  public static let maximumSec = 7 * 24 * 3600

  public init(udpIdleSec: Int, icmpIdleSec: Int, tcpEstablishedIdleSec: Int, tcpTransitoryIdleSec: Int, tcpTimeWaitSec: Int) {
    self.udpIdleSec = udpIdleSec
    self.icmpIdleSec = icmpIdleSec
    self.tcpEstablishedIdleSec = tcpEstablishedIdleSec
    self.tcpTransitoryIdleSec = tcpTransitoryIdleSec
    self.tcpTimeWaitSec = tcpTimeWaitSec
  }
}

/// Ports a gateway gives each VM NIC. Static: `minPorts == maxPorts`.
struct PortPolicy: Hashable, Sendable {
  var dynamic: Bool
  var minPorts: Int
  var maxPorts: Int

  func clamp(_ ports: Int) -> Int { dynamic ? min(max(ports, minPorts), maxPorts) : minPorts }
}

/// A NAT gateway with its settings resolved and its default NAT IPs parsed.
struct IntentGateway: Sendable {
  var spec: NATGateway
  var network: NetworkID
  var region: String
  var policy: PortPolicy
  var endpointIndependentMapping: Bool
  var timeouts: NATTimeouts
  var active: [UInt32]
  var drained: [UInt32]
  var auto: Bool { spec.natIpAllocateOption == .autoOnly }
}

extension IntentCompiler {
  mutating func compileGateways() throws(PlannerValidationError) {
    for (i, spec) in source.natGateways.enumerated() { try compileGateway(spec, at: i) }
    for rules in rulesByGateway {
      result.ruleRanges.append(result.rules.count..<(result.rules.count + rules.count))
      result.rules += rules
    }
  }

  private mutating func compileGateway(_ spec: NATGateway, at i: Int) throws(PlannerValidationError) {
    guard !spec.name.isEmpty else { throw fail("natGateways[\(i)].name", "must not be empty") }
    guard result.gatewayIndex[spec.name] == nil else { throw fail("natGateways[\(i)].name", "duplicate NAT gateway name '\(spec.name)'") }
    let path = "natGateways[\(spec.name)]"
    guard let router = routers[spec.router] else { throw fail("\(path).router", "unknown router '\(spec.router)'") }
    let id = GatewayID(result.gateways.count)
    let scope = Scope(network: router.network, region: router.region)
    let policy = try Self.compilePorts(spec, path: path)
    let endpointIndependent = try Self.endpointIndependentMapping(spec, path: path)
    let timeouts = try Self.compileTimeouts(spec, path: path)
    let (active, drained) = try compileDefaultNatIps(spec, path: path)
    try claimSourceRanges(spec, id, scope: scope, path: path)
    // Rules come after the gateway's own NAT IPs, so a clash between them is reported at the rule.
    rulesByGateway.append(try compileRules(spec, id, path: path))

    gatewaysInScope[scope, default: []].append(spec.name)
    result.gatewayIndex[spec.name] = id
    result.gateways.append(
      IntentGateway(
        spec: spec, network: router.network, region: router.region, policy: policy,
        endpointIndependentMapping: endpointIndependent, timeouts: timeouts, active: active, drained: drained))
  }

  private static func endpointIndependentMapping(_ spec: NATGateway, path: String) throws(PlannerValidationError) -> Bool {
    guard spec.enableDynamicPortAllocation else { return spec.enableEndpointIndependentMapping ?? true }
    if spec.enableEndpointIndependentMapping == true {
      throw fail("\(path).enableEndpointIndependentMapping", "cannot be enabled together with enableDynamicPortAllocation (Cloud NAT rejects this combination)")
    }
    return false
  }

  private mutating func compileDefaultNatIps(_ spec: NATGateway, path: String) throws(PlannerValidationError) -> (active: [UInt32], drained: [UInt32]) {
    switch spec.natIpAllocateOption {
    case .autoOnly:
      if !spec.natIps.isEmpty { throw fail("\(path).natIps", "NAT IPs can only be listed with MANUAL_ONLY allocation") }
      if !spec.drainNatIps.isEmpty { throw fail("\(path).drainNatIps", "only manually allocated NAT IPs can be drained") }
      return ([], [])
    case .manualOnly:
      if spec.natIps.isEmpty && spec.drainNatIps.isEmpty { throw fail("\(path).natIps", "MANUAL_ONLY allocation needs at least one NAT IP") }
      return try claimNatIps(
        path: path, active: ("natIps", spec.natIps), drained: ("drainNatIps", spec.drainNatIps), owner: NATIPOwner(gateway: spec.name, rule: nil))
    }
  }

  static func compilePorts(_ spec: NATGateway, path: String) throws(PlannerValidationError) -> PortPolicy {
    let minField = "\(path).minPortsPerVm"
    let maxField = "\(path).maxPortsPerVm"
    if !spec.enableDynamicPortAllocation {
      if spec.maxPortsPerVm != nil { throw fail(maxField, "only allowed with enableDynamicPortAllocation") }
      let requested = spec.minPortsPerVm ?? 64
      guard (2...57344).contains(requested) else { throw fail(minField, "must be between 2 and 57344 (got \(requested))") }
      let ports = NATPorts.roundUpToPowerOfTwo(requested)
      return PortPolicy(dynamic: false, minPorts: ports, maxPorts: ports)
    }
    let minimum = spec.minPortsPerVm ?? 32
    guard minimum.nonzeroBitCount == 1 else { throw fail(minField, "must be a power of two with dynamic port allocation (got \(minimum))") }
    guard (32...32768).contains(minimum) else { throw fail(minField, "must be between 32 and 32768 with dynamic port allocation (got \(minimum))") }
    let maximum = spec.maxPortsPerVm ?? 65536
    guard maximum.nonzeroBitCount == 1 else { throw fail(maxField, "must be a power of two (got \(maximum))") }
    guard (64...65536).contains(maximum) else { throw fail(maxField, "must be between 64 and 65536 (got \(maximum))") }
    guard maximum > minimum else { throw fail(maxField, "must be greater than minPortsPerVm (\(minimum))") }
    return PortPolicy(dynamic: true, minPorts: minimum, maxPorts: maximum)
  }

  static func compileTimeouts(_ spec: NATGateway, path: String) throws(PlannerValidationError) -> NATTimeouts {
    let d = NATTimeouts.defaults
    let values: [(String, Int?, Int)] = [
      ("udpIdleTimeoutSec", spec.udpIdleTimeoutSec, d.udpIdleSec),
      ("icmpIdleTimeoutSec", spec.icmpIdleTimeoutSec, d.icmpIdleSec),
      ("tcpEstablishedIdleTimeoutSec", spec.tcpEstablishedIdleTimeoutSec, d.tcpEstablishedIdleSec),
      ("tcpTransitoryIdleTimeoutSec", spec.tcpTransitoryIdleTimeoutSec, d.tcpTransitoryIdleSec),
      ("tcpTimeWaitTimeoutSec", spec.tcpTimeWaitTimeoutSec, d.tcpTimeWaitSec),
    ]
    var resolved: [Int] = []
    for (name, value, fallback) in values {
      let v = value ?? fallback
      guard (1...NATTimeouts.maximumSec).contains(v) else {
        throw fail("\(path).\(name)", "must be between 1 and \(NATTimeouts.maximumSec) seconds (7 days) (got \(v))")
      }
      resolved.append(v)
    }
    return NATTimeouts(udpIdleSec: resolved[0], icmpIdleSec: resolved[1], tcpEstablishedIdleSec: resolved[2], tcpTransitoryIdleSec: resolved[3], tcpTimeWaitSec: resolved[4])
  }

  // MARK: Source ranges

  /// Which ranges the gateway translates: at most one gateway per range of a network in a region.
  private mutating func claimSourceRanges(_ spec: NATGateway, _ id: GatewayID, scope: Scope, path: String) throws(PlannerValidationError) {
    let networkName = source.networks[scope.network.index].name
    if let owner = allRangesOwner[scope] {
      throw fail("\(path).router", "gateway '\(owner)' already translates every range of network '\(networkName)' in region '\(scope.region)'")
    }
    let sourceField = "\(path).sourceSubnetworkIpRangesToNat"
    let inScope = result.subnets.indices.filter { result.subnets[$0].network == scope.network && result.subnets[$0].region == scope.region }
    switch spec.sourceSubnetworkIpRangesToNat {
    case .allSubnetworksAllIpRanges:
      if let other = gatewaysInScope[scope]?.first {
        throw fail(sourceField, "ALL_SUBNETWORKS_ALL_IP_RANGES must be the only gateway of network '\(networkName)' in region '\(scope.region)', but gateway '\(other)' is there too")
      }
      guard spec.subnetworks.isEmpty else { throw fail("\(path).subnetworks", "only allowed with LIST_OF_SUBNETWORKS") }
      allRangesOwner[scope] = spec.name
      for s in inScope { try claimAllRanges(s, for: id, field: sourceField) }
    case .allSubnetworksAllPrimaryIpRanges:
      if let owner = allPrimaryOwner[scope] {
        throw fail(sourceField, "gateway '\(owner)' already translates the primary ranges of network '\(networkName)' in region '\(scope.region)'")
      }
      guard spec.subnetworks.isEmpty else { throw fail("\(path).subnetworks", "only allowed with LIST_OF_SUBNETWORKS") }
      allPrimaryOwner[scope] = spec.name
      for s in inScope { try claimPrimary(s, for: id, field: sourceField) }
    case .listOfSubnetworks:
      guard !spec.subnetworks.isEmpty else { throw fail("\(path).subnetworks", "LIST_OF_SUBNETWORKS needs at least one subnetwork") }
      var listed: Set<String> = []
      for (j, entry) in spec.subnetworks.enumerated() {
        guard let s = result.subnetIndex[entry.name] else { throw fail("\(path).subnetworks[\(j)].name", "unknown subnetwork '\(entry.name)'") }
        guard listed.insert(entry.name).inserted else { throw fail("\(path).subnetworks[\(j)].name", "subnetwork '\(entry.name)' is listed twice") }
        try claimListed(entry, subnet: s.index, for: id, scope: scope, networkName: networkName, router: spec.router, path: path)
      }
    }
  }

  /// One entry of LIST_OF_SUBNETWORKS.
  private mutating func claimListed(
    _ entry: NATGateway.SubnetworkToNAT, subnet s: Int, for id: GatewayID, scope: Scope, networkName: String, router: String, path: String
  ) throws(PlannerValidationError) {
    let field = "\(path).subnetworks[\(entry.name)]"
    guard result.subnets[s].network == scope.network, result.subnets[s].region == scope.region else {
      throw fail(field, "subnetwork '\(entry.name)' is not in network '\(networkName)' and region '\(scope.region)' of router '\(router)'")
    }
    let kinds = entry.sourceIpRangesToNat
    guard !kinds.isEmpty else { throw fail("\(field).sourceIpRangesToNat", "must not be empty") }
    guard Set(kinds).count == kinds.count else { throw fail("\(field).sourceIpRangesToNat", "lists a value twice") }
    if kinds.contains(.allIpRanges) && kinds.count > 1 {
      throw fail("\(field).sourceIpRangesToNat", "ALL_IP_RANGES cannot be combined with other values")
    }
    if kinds.contains(.listOfSecondaryIpRanges) {
      guard !entry.secondaryIpRangeNames.isEmpty else {
        throw fail("\(field).secondaryIpRangeNames", "LIST_OF_SECONDARY_IP_RANGES needs at least one range name")
      }
    } else if !entry.secondaryIpRangeNames.isEmpty {
      throw fail("\(field).secondaryIpRangeNames", "only allowed with LIST_OF_SECONDARY_IP_RANGES")
    }
    if kinds.contains(.allIpRanges) { try claimAllRanges(s, for: id, field: field) }
    if kinds.contains(.primaryIpRange) { try claimPrimary(s, for: id, field: field) }
    var names: Set<String> = []
    for (k, name) in entry.secondaryIpRangeNames.enumerated() {
      let nameField = "\(field).secondaryIpRangeNames[\(k)]"
      guard names.insert(name).inserted else { throw fail(nameField, "range '\(name)' is listed twice") }
      guard let r = result.subnets[s].secondaryNames.firstIndex(of: name) else {
        throw fail(nameField, "subnetwork '\(entry.name)' has no secondary range '\(name)'")
      }
      try claimSecondary(s, r, for: id, field: nameField)
    }
  }

  private mutating func claimAllRanges(_ s: Int, for id: GatewayID, field: String) throws(PlannerValidationError) {
    try claimPrimary(s, for: id, field: field)
    for r in result.subnets[s].secondaries.indices { try claimSecondary(s, r, for: id, field: field) }
  }

  private mutating func claimPrimary(_ s: Int, for id: GatewayID, field: String) throws(PlannerValidationError) {
    if let existing = result.subnets[s].primaryGateway {
      throw fail(field, "the primary range of subnetwork '\(result.subnets[s].name)' is already translated by gateway '\(result[existing].spec.name)'")
    }
    result.subnets[s].primaryGateway = id
  }

  private mutating func claimSecondary(_ s: Int, _ r: Int, for id: GatewayID, field: String) throws(PlannerValidationError) {
    if let existing = result.subnets[s].secondaryGateways[r] {
      throw fail(field, "secondary range '\(result.subnets[s].secondaryNames[r])' of subnetwork '\(result.subnets[s].name)' is already translated by gateway '\(result[existing].spec.name)'")
    }
    result.subnets[s].secondaryGateways[r] = id
  }
}
