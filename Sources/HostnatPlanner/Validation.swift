/// Why the planner refused an intent or a change: `field` is a path into the intent such as
/// "natGateways[gw1].minPortsPerVm" or "instances[vm1].networkInterfaces[0].networkIP", and
/// `reason` is text for an operator. A refused change leaves the planner exactly as it was.
public struct PlannerValidationError: Error, Hashable, Sendable, CustomStringConvertible {
  public var field: String
  public var reason: String

  public init(field: String, reason: String) {
    self.field = field
    self.reason = reason
  }

  public var description: String { "\(field): \(reason)" }
}

/// The timeouts a gateway hands to hosts, with Cloud NAT's defaults filled in.
public struct NatTimeouts: Hashable, Sendable {
  public var udpIdleSec: Int
  public var icmpIdleSec: Int
  public var tcpEstablishedIdleSec: Int
  public var tcpTransitoryIdleSec: Int
  public var tcpTimeWaitSec: Int

  public static let defaults = NatTimeouts(udpIdleSec: 30, icmpIdleSec: 30, tcpEstablishedIdleSec: 1200, tcpTransitoryIdleSec: 30, tcpTimeWaitSec: 120)
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

struct CompiledSubnet: Sendable {
  var name: String
  var network: Int32
  var region: String
  var primary: PlannerIPv4CIDR
  var secondaryNames: [String]
  var secondaries: [PlannerIPv4CIDR]
  /// Gateway index translating each range, -1 for none.
  var primaryGateway: Int32 = -1
  var secondaryGateways: [Int32]
}

struct CompiledGateway: Sendable {
  var spec: NatGateway
  var network: Int32
  var region: String
  var policy: PortPolicy
  var endpointIndependentMapping: Bool
  var timeouts: NatTimeouts
  var active: [UInt32]
  var drained: [UInt32]
  var auto: Bool { spec.natIpAllocateOption == .autoOnly }
}

/// One NAT rule of a gateway. Its IPs form a pool of their own (see `CompiledConfig.rules`).
struct CompiledRule: Sendable {
  /// Index of the gateway in `CompiledConfig.gateways`.
  var gateway: Int32
  var ruleNumber: Int
  /// `NatRuleMatch.destinationRanges` of the rule's match.
  var destinations: [String]
  var active: [UInt32]
  var drained: [UInt32]
}

/// Names a pool of NAT IPs across re-plans: a gateway's default pool (`rule` -1) or one of its
/// rules. Gateway names are free text, so the rule is a field rather than part of the name.
struct PoolKey: Hashable, Sendable {
  var gateway: String
  var rule: Int32
}

/// Everything but the instances, checked and indexed.
///
/// The planner allocates from pools: pool g < gateways.count is gateway g's default NAT IPs, pool
/// gateways.count + k is `rules[k]`. Rules are sorted by gateway, then rule number, so the rules
/// of a gateway are contiguous (`ruleRanges`).
struct CompiledConfig: Sendable {
  var intent = NatIntent()
  var networkIndex: [String: Int32] = [:]
  var subnets: [CompiledSubnet] = []
  var subnetIndex: [String: Int32] = [:]
  var gateways: [CompiledGateway] = []
  var gatewayIndex: [String: Int32] = [:]
  var autoPools: [String: [UInt32]] = [:]
  var autoPoolRegion: [UInt32: String] = [:]
  var rules: [CompiledRule] = []
  /// Per gateway: its indices in `rules`.
  var ruleRanges: [Range<Int>] = []

  var poolCount: Int { gateways.count + rules.count }

  /// The gateway a pool belongs to (itself for a default pool).
  @inline(__always)
  func gateway(ofPool p: Int) -> Int { p < gateways.count ? p : Int(rules[p - gateways.count].gateway) }

  /// A rule pool gets the gateway's static `minPortsPerVm`: no dynamic port allocation on rule
  /// IPs, so every NIC holds exactly minPortsPerVm there. A limitation of this emulation (Cloud
  /// NAT grows rule mappings too); it keeps rule pools out of grant/reclaim, which the hosts
  /// drive for the default NAT IPs only.
  func policy(ofPool p: Int) -> PortPolicy {
    if p < gateways.count { return gateways[p].policy }
    let minPorts = gateways[Int(rules[p - gateways.count].gateway)].policy.minPorts
    return PortPolicy(dynamic: false, minPorts: minPorts, maxPorts: minPorts)
  }

  /// The pool's active NAT IPs as the intent lists them (empty for an auto-allocating gateway).
  func active(ofPool p: Int) -> [UInt32] { p < gateways.count ? gateways[p].active : rules[p - gateways.count].active }

  /// The pool's drained NAT IPs as the intent lists them.
  func drained(ofPool p: Int) -> [UInt32] { p < gateways.count ? gateways[p].drained : rules[p - gateways.count].drained }

  /// Whether the pool takes auto-allocated NAT IPs: rule IPs are always manual.
  func isAuto(ofPool p: Int) -> Bool { p < gateways.count && gateways[p].auto }

  func key(ofPool p: Int) -> PoolKey {
    p < gateways.count
      ? PoolKey(gateway: gateways[p].spec.name, rule: -1)
      : PoolKey(gateway: gateways[Int(rules[p - gateways.count].gateway)].spec.name, rule: Int32(rules[p - gateways.count].ruleNumber))
  }

  /// The pools of gateway g's rules.
  func rulePools(ofGateway g: Int) -> Range<Int> {
    let range = ruleRanges[g]
    return (gateways.count + range.lowerBound)..<(gateways.count + range.upperBound)
  }
}

private func fail(_ field: String, _ reason: String) -> PlannerValidationError {
  PlannerValidationError(field: field, reason: reason)
}

// `field` is an autoclosure: building the path costs more than parsing, and is rarely needed.
private func parseCIDR(_ text: String, field: @autoclosure () -> String) throws(PlannerValidationError) -> PlannerIPv4CIDR {
  guard let cidr = PlannerIPv4CIDR(text) else {
    throw fail(field(), "'\(text)' is not an IPv4 range a.b.c.d/n with zero host bits")
  }
  return cidr
}

private func parseAddress(_ text: String, field: @autoclosure () -> String) throws(PlannerValidationError) -> UInt32 {
  guard let address = PlannerIPv4Address(text) else { throw fail(field(), "'\(text)' is not an IPv4 address a.b.c.d") }
  return address.value
}

extension CompiledConfig {
  // Checks the non-instance part of an intent. Gateways are checked in order, so when two claim
  // the same range the later one is reported.
  static func compile(_ source: NatIntent) throws(PlannerValidationError) -> CompiledConfig {
    var config = CompiledConfig()
    config.intent = source
    config.intent.instances = []

    for (i, network) in source.networks.enumerated() {
      guard !network.name.isEmpty else { throw fail("networks[\(i)].name", "must not be empty") }
      guard config.networkIndex[network.name] == nil else { throw fail("networks[\(i)].name", "duplicate network name '\(network.name)'") }
      config.networkIndex[network.name] = Int32(i)
    }

    var rangesByNetwork: [Int32: [(cidr: PlannerIPv4CIDR, field: String, order: Int)]] = [:]
    for (i, subnet) in source.subnetworks.enumerated() {
      guard !subnet.name.isEmpty else { throw fail("subnetworks[\(i)].name", "must not be empty") }
      let path = "subnetworks[\(subnet.name)]"
      guard config.subnetIndex[subnet.name] == nil else { throw fail("subnetworks[\(i)].name", "duplicate subnetwork name '\(subnet.name)'") }
      guard let network = config.networkIndex[subnet.network] else { throw fail("\(path).network", "unknown network '\(subnet.network)'") }
      guard !subnet.region.isEmpty else { throw fail("\(path).region", "must not be empty") }
      let primary = try parseCIDR(subnet.ipCidrRange, field: "\(path).ipCidrRange")
      rangesByNetwork[network, default: []].append((primary, "\(path).ipCidrRange", rangesByNetwork[network]?.count ?? 0))
      var names: [String] = []
      var secondaries: [PlannerIPv4CIDR] = []
      for (r, range) in subnet.secondaryIpRanges.enumerated() {
        let rangePath = "\(path).secondaryIpRanges[\(r)]"
        guard !range.rangeName.isEmpty else { throw fail("\(rangePath).rangeName", "must not be empty") }
        guard !names.contains(range.rangeName) else { throw fail("\(rangePath).rangeName", "duplicate range name '\(range.rangeName)'") }
        let cidr = try parseCIDR(range.ipCidrRange, field: "\(rangePath).ipCidrRange")
        names.append(range.rangeName)
        secondaries.append(cidr)
        rangesByNetwork[network, default: []].append((cidr, "\(rangePath).ipCidrRange", rangesByNetwork[network]?.count ?? 0))
      }
      config.subnetIndex[subnet.name] = Int32(config.subnets.count)
      config.subnets.append(
        CompiledSubnet(
          name: subnet.name, network: network, region: subnet.region, primary: primary, secondaryNames: names,
          secondaries: secondaries, secondaryGateways: Array(repeating: -1, count: names.count)))
    }
    // Prefixes overlap iff one contains the other: after sorting by first address, a range
    // overlaps an earlier one iff it starts before the furthest end seen so far.
    for network in rangesByNetwork.keys.sorted() {
      let ranges = rangesByNetwork[network]!.sorted { ($0.cidr.first, $0.cidr.prefixLength) < ($1.cidr.first, $1.cidr.prefixLength) }
      var widest = ranges[0]
      for range in ranges.dropFirst() {
        if range.cidr.first <= widest.cidr.last {
          // Blame whichever of the two comes later in the intent.
          let (later, earlier) = range.order > widest.order ? (range, widest) : (widest, range)
          throw fail(later.field, "\(later.cidr) overlaps \(earlier.cidr) (\(earlier.field))")
        }
        if range.cidr.last > widest.cidr.last { widest = range }
      }
    }

    var routers: [String: (network: Int32, region: String)] = [:]
    for (i, router) in source.routers.enumerated() {
      guard !router.name.isEmpty else { throw fail("routers[\(i)].name", "must not be empty") }
      guard routers[router.name] == nil else { throw fail("routers[\(i)].name", "duplicate router name '\(router.name)'") }
      guard let network = config.networkIndex[router.network] else { throw fail("routers[\(router.name)].network", "unknown network '\(router.network)'") }
      guard !router.region.isEmpty else { throw fail("routers[\(router.name)].region", "must not be empty") }
      routers[router.name] = (network, router.region)
    }

    for (i, pool) in source.autoNatIpPools.enumerated() {
      guard !pool.region.isEmpty else { throw fail("autoNatIpPools[\(i)].region", "must not be empty") }
      guard config.autoPools[pool.region] == nil else { throw fail("autoNatIpPools[\(i)].region", "duplicate pool for region '\(pool.region)'") }
      var addresses: [UInt32] = []
      for (j, text) in pool.natIps.enumerated() {
        let field = "autoNatIpPools[\(pool.region)].natIps[\(j)]"
        let address = try parseAddress(text, field: field)
        if let region = config.autoPoolRegion[address] {
          throw fail(field, "\(text) is already in the auto-allocation pool of region '\(region)'")
        }
        config.autoPoolRegion[address] = pool.region
        addresses.append(address)
      }
      config.autoPools[pool.region] = addresses
    }

    struct Scope: Hashable {
      var network: Int32
      var region: String
    }
    var gatewaysInScope: [Scope: [String]] = [:]
    var allRangesOwner: [Scope: String] = [:]
    var allPrimaryOwner: [Scope: String] = [:]
    var natIpOwner: [UInt32: (gateway: String, rule: Int?)] = [:]
    /// Where an address already is, for an error naming it.
    func ownerText(_ owner: (gateway: String, rule: Int?), me: (gateway: String, rule: Int?)) -> String {
      switch (owner.gateway == me.gateway, owner.rule) {
      case (true, nil): "is already a default NAT IP of this gateway (natIps or drainNatIps)"
      case (true, let rule?): "is already a NAT IP of rule \(rule) of this gateway"
      case (false, nil): "is already a NAT IP of gateway '\(owner.gateway)'"
      case (false, let rule?): "is already a NAT IP of rule \(rule) of gateway '\(owner.gateway)'"
      }
    }
    /// The IPs of one pool (the gateway's default IPs or a rule's): parsed, owned by no other
    /// pool and in no auto-allocation pool; each is claimed for `owner`.
    func claimNatIps(
      path: String, active activeList: (name: String, texts: [String]), drained drainedList: (name: String, texts: [String]),
      owner me: (gateway: String, rule: Int?)
    ) throws(PlannerValidationError) -> (active: [UInt32], drained: [UInt32]) {
      var active: [UInt32] = []
      var drained: [UInt32] = []
      for (isActive, list) in [(true, activeList), (false, drainedList)] {
        for (j, text) in list.texts.enumerated() {
          let field = "\(path).\(list.name)[\(j)]"
          let address = try parseAddress(text, field: field)
          if let owner = natIpOwner[address] {
            throw fail(field, owner == me ? "\(text) is listed more than once" : "\(text) \(ownerText(owner, me: me))")
          }
          if let region = config.autoPoolRegion[address] {
            throw fail(field, "\(text) belongs to the auto-allocation pool of region '\(region)'")
          }
          natIpOwner[address] = me
          if isActive { active.append(address) } else { drained.append(address) }
        }
      }
      return (active, drained)
    }
    var rulesByGateway: [[CompiledRule]] = []
    for (i, spec) in source.natGateways.enumerated() {
      guard !spec.name.isEmpty else { throw fail("natGateways[\(i)].name", "must not be empty") }
      guard config.gatewayIndex[spec.name] == nil else { throw fail("natGateways[\(i)].name", "duplicate NAT gateway name '\(spec.name)'") }
      let path = "natGateways[\(spec.name)]"
      guard let router = routers[spec.router] else { throw fail("\(path).router", "unknown router '\(spec.router)'") }
      let index = Int32(config.gateways.count)
      let scope = Scope(network: router.network, region: router.region)
      let networkName = source.networks[Int(router.network)].name
      let policy = try compilePorts(spec, path: path)
      let endpointIndependent: Bool
      if spec.enableDynamicPortAllocation {
        if spec.enableEndpointIndependentMapping == true {
          throw fail("\(path).enableEndpointIndependentMapping", "cannot be enabled together with enableDynamicPortAllocation (Cloud NAT rejects this combination)")
        }
        endpointIndependent = false
      } else {
        endpointIndependent = spec.enableEndpointIndependentMapping ?? true
      }
      let timeouts = try compileTimeouts(spec, path: path)

      // Addresses.
      var active: [UInt32] = []
      var drained: [UInt32] = []
      switch spec.natIpAllocateOption {
      case .autoOnly:
        if !spec.natIps.isEmpty { throw fail("\(path).natIps", "NAT IPs can only be listed with MANUAL_ONLY allocation") }
        if !spec.drainNatIps.isEmpty { throw fail("\(path).drainNatIps", "only manually allocated NAT IPs can be drained") }
      case .manualOnly:
        if spec.natIps.isEmpty && spec.drainNatIps.isEmpty { throw fail("\(path).natIps", "MANUAL_ONLY allocation needs at least one NAT IP") }
        (active, drained) = try claimNatIps(
          path: path, active: ("natIps", spec.natIps), drained: ("drainNatIps", spec.drainNatIps), owner: (spec.name, nil))
      }

      // Which ranges: at most one gateway per range of a network in a region.
      if let owner = allRangesOwner[scope] {
        throw fail("\(path).router", "gateway '\(owner)' already translates every range of network '\(networkName)' in region '\(router.region)'")
      }
      let sourceField = "\(path).sourceSubnetworkIpRangesToNat"
      func claimPrimary(_ s: Int, field: String) throws(PlannerValidationError) {
        let existing = config.subnets[s].primaryGateway
        if existing >= 0 {
          throw fail(field, "the primary range of subnetwork '\(config.subnets[s].name)' is already translated by gateway '\(config.gateways[Int(existing)].spec.name)'")
        }
        config.subnets[s].primaryGateway = index
      }
      func claimSecondary(_ s: Int, _ r: Int, field: String) throws(PlannerValidationError) {
        let existing = config.subnets[s].secondaryGateways[r]
        if existing >= 0 {
          throw fail(field, "secondary range '\(config.subnets[s].secondaryNames[r])' of subnetwork '\(config.subnets[s].name)' is already translated by gateway '\(config.gateways[Int(existing)].spec.name)'")
        }
        config.subnets[s].secondaryGateways[r] = index
      }
      let inScope = config.subnets.indices.filter { config.subnets[$0].network == scope.network && config.subnets[$0].region == scope.region }
      switch spec.sourceSubnetworkIpRangesToNat {
      case .allSubnetworksAllIpRanges:
        if let other = gatewaysInScope[scope]?.first {
          throw fail(sourceField, "ALL_SUBNETWORKS_ALL_IP_RANGES must be the only gateway of network '\(networkName)' in region '\(router.region)', but gateway '\(other)' is there too")
        }
        guard spec.subnetworks.isEmpty else { throw fail("\(path).subnetworks", "only allowed with LIST_OF_SUBNETWORKS") }
        allRangesOwner[scope] = spec.name
        for s in inScope {
          try claimPrimary(s, field: sourceField)
          for r in config.subnets[s].secondaries.indices { try claimSecondary(s, r, field: sourceField) }
        }
      case .allSubnetworksAllPrimaryIpRanges:
        if let owner = allPrimaryOwner[scope] {
          throw fail(sourceField, "gateway '\(owner)' already translates the primary ranges of network '\(networkName)' in region '\(router.region)'")
        }
        guard spec.subnetworks.isEmpty else { throw fail("\(path).subnetworks", "only allowed with LIST_OF_SUBNETWORKS") }
        allPrimaryOwner[scope] = spec.name
        for s in inScope { try claimPrimary(s, field: sourceField) }
      case .listOfSubnetworks:
        guard !spec.subnetworks.isEmpty else { throw fail("\(path).subnetworks", "LIST_OF_SUBNETWORKS needs at least one subnetwork") }
        var listed: Set<String> = []
        for (j, entry) in spec.subnetworks.enumerated() {
          let field = "\(path).subnetworks[\(entry.name)]"
          guard let s32 = config.subnetIndex[entry.name] else { throw fail("\(path).subnetworks[\(j)].name", "unknown subnetwork '\(entry.name)'") }
          let s = Int(s32)
          guard listed.insert(entry.name).inserted else { throw fail("\(path).subnetworks[\(j)].name", "subnetwork '\(entry.name)' is listed twice") }
          guard config.subnets[s].network == scope.network, config.subnets[s].region == scope.region else {
            throw fail(field, "subnetwork '\(entry.name)' is not in network '\(networkName)' and region '\(router.region)' of router '\(spec.router)'")
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
          if kinds.contains(.allIpRanges) {
            try claimPrimary(s, field: field)
            for r in config.subnets[s].secondaries.indices { try claimSecondary(s, r, field: field) }
          }
          if kinds.contains(.primaryIpRange) { try claimPrimary(s, field: field) }
          var names: Set<String> = []
          for (k, name) in entry.secondaryIpRangeNames.enumerated() {
            let nameField = "\(field).secondaryIpRangeNames[\(k)]"
            guard names.insert(name).inserted else { throw fail(nameField, "range '\(name)' is listed twice") }
            guard let r = config.subnets[s].secondaryNames.firstIndex(of: name) else {
              throw fail(nameField, "subnetwork '\(entry.name)' has no secondary range '\(name)'")
            }
            try claimSecondary(s, r, field: nameField)
          }
        }
      }
      // Rules, in intent order (pools are numbered by rule number, see `rulesByGateway`). Their
      // IPs are checked against every address seen so far, so a clash is reported at the later one.
      var rules: [CompiledRule] = []
      var ruleNumbers: [Int: Int] = [:]
      for (k, rule) in spec.rules.enumerated() {
        // Cloud NAT allows 0; hostnat's hosts use rule number 0 for the gateway's default IPs.
        guard NatRule.validNumbers.contains(rule.ruleNumber) else {
          throw fail("\(path).rules[\(k)].ruleNumber", "must be between \(NatRule.validNumbers.lowerBound) and \(NatRule.validNumbers.upperBound) (got \(rule.ruleNumber); 0 stands for the gateway's default IPs)")
        }
        if let earlier = ruleNumbers.updateValue(k, forKey: rule.ruleNumber) {
          throw fail("\(path).rules[\(k)].ruleNumber", "duplicate rule number \(rule.ruleNumber) (also rules[\(earlier)])")
        }
      }
      for rule in spec.rules {
        let rulePath = "\(path).rules[\(rule.ruleNumber)]"
        let destinations: [String]
        do {
          destinations = try NatRuleMatch.destinationRanges(rule.match)
        } catch {
          throw fail("\(rulePath).match", error.reason)
        }
        if rule.sourceNatActiveIps.isEmpty && rule.sourceNatDrainIps.isEmpty {
          throw fail("\(rulePath).sourceNatActiveIps", "a rule needs at least one NAT IP")
        }
        let (active, drained) = try claimNatIps(
          path: rulePath, active: ("sourceNatActiveIps", rule.sourceNatActiveIps), drained: ("sourceNatDrainIps", rule.sourceNatDrainIps),
          owner: (spec.name, rule.ruleNumber))
        // Rule pools take their (static) port policy from the gateway: `policy(ofPool:)`.
        rules.append(CompiledRule(gateway: index, ruleNumber: rule.ruleNumber, destinations: destinations, active: active, drained: drained))
      }
      rulesByGateway.append(rules.sorted { $0.ruleNumber < $1.ruleNumber })

      gatewaysInScope[scope, default: []].append(spec.name)
      config.gatewayIndex[spec.name] = index
      config.gateways.append(
        CompiledGateway(
          spec: spec, network: router.network, region: router.region, policy: policy,
          endpointIndependentMapping: endpointIndependent, timeouts: timeouts, active: active, drained: drained))
    }
    for rules in rulesByGateway {
      config.ruleRanges.append(config.rules.count..<(config.rules.count + rules.count))
      config.rules += rules
    }
    return config
  }

  private static func compilePorts(_ spec: NatGateway, path: String) throws(PlannerValidationError) -> PortPolicy {
    let minField = "\(path).minPortsPerVm"
    let maxField = "\(path).maxPortsPerVm"
    if !spec.enableDynamicPortAllocation {
      if spec.maxPortsPerVm != nil { throw fail(maxField, "only allowed with enableDynamicPortAllocation") }
      let requested = spec.minPortsPerVm ?? 64
      guard (2...57344).contains(requested) else { throw fail(minField, "must be between 2 and 57344 (got \(requested))") }
      let ports = NatPorts.roundUpToPowerOfTwo(requested)
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

  private static func compileTimeouts(_ spec: NatGateway, path: String) throws(PlannerValidationError) -> NatTimeouts {
    let d = NatTimeouts.defaults
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
      guard (1...NatTimeouts.maximumSec).contains(v) else {
        throw fail("\(path).\(name)", "must be between 1 and \(NatTimeouts.maximumSec) seconds (7 days) (got \(v))")
      }
      resolved.append(v)
    }
    return NatTimeouts(udpIdleSec: resolved[0], icmpIdleSec: resolved[1], tcpEstablishedIdleSec: resolved[2], tcpTransitoryIdleSec: resolved[3], tcpTimeWaitSec: resolved[4])
  }
}

// MARK: - Instances

struct CompiledAlias: Sendable {
  var cidr: PlannerIPv4CIDR
  /// -1: the subnet's primary range; otherwise the secondary range index.
  var range: Int32
  /// Prefix length of the range the alias comes from (where the overlap index starts counting).
  var rangeLength: UInt8
  var gateway: Int32
}

struct CompiledNic: Sendable {
  var network: Int32
  var subnet: Int32
  var primaryIP: UInt32
  /// The gateway translating the primary IP; -1 when none does or the NIC has an external IP.
  var primaryGateway: Int32
  var aliases: [CompiledAlias]

  /// Gateways serving any source of this NIC, primary first, without repeats.
  var gateways: [Int32] {
    var result: [Int32] = []
    if primaryGateway >= 0 { result.append(primaryGateway) }
    for alias in aliases where alias.gateway >= 0 && !result.contains(alias.gateway) { result.append(alias.gateway) }
    return result
  }
}

struct AliasKey: Hashable, Sendable {
  var network: Int32
  var base: UInt32
  var length: UInt8
}

/// Which internal addresses are taken, per network, so that a NIC cannot reuse another's primary
/// IP or overlap its alias ranges. Alias ranges are prefixes, so overlap means containment: a new
/// range R overlaps an existing one if one of R's ancestors is an alias (looked up only at the
/// prefix lengths in use) or if some alias lies at or below R (`aliasesBelow` counts them for
/// every prefix between the alias and its subnet range).
struct AddressIndex: Sendable {
  var primary: [UInt64: Int32] = [:]
  var aliasExact: [AliasKey: Int32] = [:]
  var aliasesBelow: [AliasKey: Int32] = [:]
  /// Per network id: bit l set when some alias has prefix length l.
  var aliasLengths: [UInt64] = []

  @inline(__always)
  static func key(_ network: Int32, _ ip: UInt32) -> UInt64 { UInt64(UInt32(bitPattern: network)) << 32 | UInt64(ip) }

  func aliasOwner(containing ip: UInt32, network: Int32, shorterThan limit: Int = 33) -> Int32? {
    guard Int(network) < aliasLengths.count else { return nil }
    var lengths = aliasLengths[Int(network)]
    while lengths != 0 {
      let length = lengths.trailingZeroBitCount
      lengths &= lengths - 1
      guard length < limit else { break }
      if let owner = aliasExact[AliasKey(network: network, base: ip & PlannerIPv4CIDR.mask(length), length: UInt8(length))] {
        return owner
      }
    }
    return nil
  }

  mutating func insert(_ nics: CompiledNics, owner: Int32) {
    for nic in nics { primary[Self.key(nic.network, nic.primaryIP)] = owner }
    insertAliases(nics, owner: owner)
  }

  mutating func insertAliases(_ nics: CompiledNics, owner: Int32) {
    for nic in nics {
      for alias in nic.aliases {
        let length = alias.cidr.prefixLength
        aliasExact[AliasKey(network: nic.network, base: alias.cidr.first, length: UInt8(length))] = owner
        while aliasLengths.count <= Int(nic.network) { aliasLengths.append(0) }
        aliasLengths[Int(nic.network)] |= 1 << UInt64(length)
        for l in Int(alias.rangeLength)...length {
          aliasesBelow[AliasKey(network: nic.network, base: alias.cidr.first & PlannerIPv4CIDR.mask(l), length: UInt8(l)), default: 0] += 1
        }
      }
    }
  }

  mutating func remove(_ nics: CompiledNics) {
    for nic in nics {
      primary[Self.key(nic.network, nic.primaryIP)] = nil
      for alias in nic.aliases {
        let length = alias.cidr.prefixLength
        aliasExact[AliasKey(network: nic.network, base: alias.cidr.first, length: UInt8(length))] = nil
        for l in Int(alias.rangeLength)...length {
          let key = AliasKey(network: nic.network, base: alias.cidr.first & PlannerIPv4CIDR.mask(l), length: UInt8(l))
          let count = aliasesBelow[key, default: 0] - 1
          aliasesBelow[key] = count > 0 ? count : nil
        }
      }
    }
  }
}

extension CompiledConfig {
  /// Checks one instance against the topology and the addresses other instances hold. `me` is
  /// the instance's own id in `addresses` (its current entries do not conflict with itself), or -1.
  /// With `insertAs`, the instance's addresses are also entered under that id (a full plan builds
  /// a fresh index this way: one hash lookup per primary IP instead of two); without it,
  /// `addresses` is only read.
  func compileInstance(
    _ instance: borrowing Instance, addresses: inout AddressIndex, insertAs newOwner: Int32?, me: Int32, myNics: borrowing CompiledNics,
    lastSubnet: inout (name: String, index: Int32), ownerName: (Int32) -> String
  ) throws(PlannerValidationError) -> CompiledNics {
    // Paths are built only when something is wrong: this runs for every VM of a full plan.
    var path: String { "instances[\(instance.name)]" }
    guard !instance.name.isEmpty else { throw fail("\(path).name", "must not be empty") }
    guard !instance.host.isEmpty else { throw fail("\(path).host", "must not be empty") }
    guard !instance.networkInterfaces.isEmpty else { throw fail("\(path).networkInterfaces", "an instance needs at least one network interface") }
    var nics: CompiledNics = []
    // Indices rather than enumerated(): the latter went through unspecialised value-witness
    // copies and destroys of each NetworkInterface, a tenth of a full plan's time.
    let interfaces = instance.networkInterfaces
    for n in interfaces.indices {
      let nic = interfaces[n]
      var nicPath: String { "\(path).networkInterfaces[\(n)]" }
      // VMs of a full plan mostly share a few subnets: skip the hash when it is the last one.
      let s: Int32
      if lastSubnet.index >= 0 && lastSubnet.name == nic.subnetwork {
        s = lastSubnet.index
      } else {
        guard let found = subnetIndex[nic.subnetwork] else { throw fail("\(nicPath).subnetwork", "unknown subnetwork '\(nic.subnetwork)'") }
        s = found
        lastSubnet = (nic.subnetwork, found)
      }
      // Scalars only: copying the whole subnet (names, arrays) costs retains on every VM.
      let network = subnets[Int(s)].network
      let primaryRange = subnets[Int(s)].primary
      let primaryGateway = subnets[Int(s)].primaryGateway
      if let other = nics.firstIndex(where: { $0.network == network }) {
        throw fail("\(nicPath).subnetwork", "network '\(intent.networks[Int(network)].name)' is already used by networkInterfaces[\(other)]; each NIC must be in a different network")
      }
      let ip = try parseAddress(nic.networkIP, field: "\(nicPath).networkIP")
      guard primaryRange.contains(PlannerIPv4Address(ip)) else {
        throw fail("\(nicPath).networkIP", "\(nic.networkIP) is outside the primary range \(primaryRange) of subnetwork '\(subnets[Int(s)].name)'")
      }
      let key = AddressIndex.key(network, ip)
      if let newOwner, let owner = addresses.primary.updateValue(newOwner, forKey: key) {
        throw fail("\(nicPath).networkIP", "\(nic.networkIP) is already the primary IP of instance '\(ownerName(owner))'")
      }
      if newOwner == nil, let owner = addresses.primary[key], owner != me {
        throw fail("\(nicPath).networkIP", "\(nic.networkIP) is already the primary IP of instance '\(ownerName(owner))'")
      }
      if let owner = addresses.aliasOwner(containing: ip, network: network), owner != me {
        throw fail("\(nicPath).networkIP", "\(nic.networkIP) is inside an alias IP range of instance '\(ownerName(owner))'")
      }
      if let external = nic.externalIP { _ = try parseAddress(external, field: "\(nicPath).externalIP") }

      var aliases: [CompiledAlias] = []
      for (a, alias) in nic.aliasIpRanges.enumerated() {
        var aliasPath: String { "\(nicPath).aliasIpRanges[\(a)]" }
        let cidr = try parseCIDR(alias.ipCidrRange, field: "\(aliasPath).ipCidrRange")
        var range: Int32 = -1
        var container = primaryRange
        var gateway = primaryGateway
        if let name = alias.subnetworkRangeName {
          guard let r = subnets[Int(s)].secondaryNames.firstIndex(of: name) else {
            throw fail("\(aliasPath).subnetworkRangeName", "subnetwork '\(subnets[Int(s)].name)' has no secondary range '\(name)'")
          }
          range = Int32(r)
          container = subnets[Int(s)].secondaries[r]
          gateway = subnets[Int(s)].secondaryGateways[r]
        }
        guard container.contains(cidr) else {
          throw fail("\(aliasPath).ipCidrRange", "\(cidr) is outside \(alias.subnetworkRangeName.map { "secondary range '\($0)'" } ?? "the primary range") \(container) of subnetwork '\(subnets[Int(s)].name)'")
        }
        if cidr.contains(PlannerIPv4Address(ip)) {
          throw fail("\(aliasPath).ipCidrRange", "\(cidr) contains the interface's own primary IP \(nic.networkIP)")
        }
        if let previous = aliases.firstIndex(where: { $0.cidr.overlaps(cidr) }) {
          throw fail("\(aliasPath).ipCidrRange", "\(cidr) overlaps aliasIpRanges[\(previous)] of the same interface")
        }
        // Existing aliases at or below `cidr`, minus this instance's own (it is being replaced).
        let key = AliasKey(network: network, base: cidr.first, length: UInt8(cidr.prefixLength))
        var below = addresses.aliasesBelow[key, default: 0]
        if below > 0 {
          for k in myNics.indices where myNics[k].network == network {
            for own in myNics[k].aliases where cidr.contains(own.cidr) { below -= 1 }
          }
        }
        if below > 0 { throw fail("\(aliasPath).ipCidrRange", "\(cidr) overlaps an alias IP range of another instance") }
        if let owner = addresses.aliasOwner(containing: cidr.first, network: network, shorterThan: cidr.prefixLength), owner != me {
          throw fail("\(aliasPath).ipCidrRange", "\(cidr) overlaps an alias IP range of instance '\(ownerName(owner))'")
        }
        if range < 0 {
          // Only aliases from the primary range can contain other NICs' primary IPs.
          if cidr.size <= 4096 {
            for address in cidr.first...cidr.last {
              if let owner = addresses.primary[AddressIndex.key(network, address)], owner != me {
                throw fail("\(aliasPath).ipCidrRange", "\(cidr) contains \(PlannerIPv4Address(address)), the primary IP of instance '\(ownerName(owner))'")
              }
            }
          } else {
            for (key, owner) in addresses.primary where owner != me && key >> 32 == UInt64(UInt32(bitPattern: network)) {
              if cidr.contains(PlannerIPv4Address(UInt32(truncatingIfNeeded: key))) {
                throw fail("\(aliasPath).ipCidrRange", "\(cidr) contains \(PlannerIPv4Address(UInt32(truncatingIfNeeded: key))), the primary IP of instance '\(ownerName(owner))'")
              }
            }
          }
        }
        aliases.append(CompiledAlias(cidr: cidr, range: range, rangeLength: UInt8((range < 0 ? primaryRange : container).prefixLength), gateway: gateway))
      }
      nics.append(
        CompiledNic(
          network: network, subnet: s, primaryIP: ip,
          primaryGateway: nic.externalIP == nil ? primaryGateway : -1, aliases: aliases))
    }
    if let newOwner, nics.contains(where: { !$0.aliases.isEmpty }) { addresses.insertAliases(nics, owner: newOwner) }
    return nics
  }
}

typealias CompiledNics = SmallArray<CompiledNic>
