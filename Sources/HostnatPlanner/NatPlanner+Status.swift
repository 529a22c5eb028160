// Read side: what hosts get pushed and what the admin API shows.

extension NatPlanner {
  /// Every allocation of one instance, by NIC then gateway.
  public func allocations(instance name: String) -> [NicNatAllocation] {
    guard let r = recordIDs[name] else { return [] }
    let gatewayCount = Int32(config.gateways.count)
    // Rule units are reported inside their gateway's allocation.
    return records[Int(r)].units.filter { units[Int($0)].gateway < gatewayCount }
      .sorted { (units[Int($0)].nic, units[Int($0)].gateway) < (units[Int($1)].nic, units[Int($1)].gateway) }
      .map { allocation(unit: Int($0)) }
  }

  public func allocation(_ nic: NicRef) -> NicNatAllocation? {
    unitIndex(nic).map { allocation(unit: $0) }
  }

  /// Every allocation of the instances on `host`, instances in arrival order. A scan: for the
  /// admin API and tests, not for the per-change push (use `PlannerChangeSummary.changedInstances`).
  public func allocations(host: String) -> [NicNatAllocation] {
    records.filter(\.live).filter { $0.spec.host == host }.sorted { $0.arrival < $1.arrival }
      .flatMap { allocations(instance: $0.spec.name) }
  }

  /// Every allocation, instances in arrival order.
  public var allAllocations: [NicNatAllocation] {
    records.filter(\.live).sorted { $0.arrival < $1.arrival }.flatMap { allocations(instance: $0.spec.name) }
  }

  /// gcloud's `get-nat-mapping-info` for one VM: each translated source of each NIC with the
  /// ports of its NIC (the primary IP and alias ranges share them).
  public func natMappingInfo(instance name: String) -> VmNatMappingInfo? {
    guard recordIDs[name] != nil else { return nil }
    var mappings: [InterfaceNatMapping] = []
    for allocation in allocations(instance: name) {
      func mapping(ip: String?, range: String?) -> InterfaceNatMapping {
        InterfaceNatMapping(
          nicIndex: allocation.nic.nicIndex, gateway: allocation.nic.gateway, sourceVirtualIp: ip, sourceAliasIpRange: range,
          natIpPortRanges: allocation.natIpPortRanges, drainNatIpPortRanges: allocation.drainNatIpPortRanges,
          numTotalNatPorts: allocation.numTotalNatPorts, numTotalDrainNatPorts: allocation.numTotalDrainNatPorts,
          ruleMappings: allocation.ruleAllocations)
      }
      if let ip = allocation.sourceVirtualIp { mappings.append(mapping(ip: ip, range: nil)) }
      for range in allocation.sourceAliasIpRanges { mappings.append(mapping(ip: nil, range: range)) }
    }
    return VmNatMappingInfo(instanceName: name, interfaceNatMappings: mappings)
  }

  /// A unit's blocks as sorted active and drain ranges.
  func ranges(unit u: Int) -> (active: [NatPortRange], drained: [NatPortRange]) {
    var active: [NatPortRange] = []
    var drained: [NatPortRange] = []
    for block in units[u].blocks {
      if isActive(block) { active.append(range(block)) } else { drained.append(range(block)) }
    }
    active.sort()
    drained.sort()
    return (active, drained)
  }

  /// The NIC's rule units on gateway `g`, by rule number.
  func ruleAllocations(record r: Int32, nic: Int32, gateway g: Int) -> [RuleAllocation] {
    guard !config.ruleRanges[g].isEmpty else { return [] }
    var result: [RuleAllocation] = []
    for u in records[Int(r)].units where units[Int(u)].nic == nic {
      let p = Int(units[Int(u)].gateway)
      guard p >= config.gateways.count, config.gateway(ofPool: p) == g else { continue }
      let (active, drained) = ranges(unit: Int(u))
      result.append(
        RuleAllocation(
          ruleNumber: Int(gateways[p].ruleNumber), natIpPortRanges: active, drainNatIpPortRanges: drained,
          waitingForNatPorts: units[Int(u)].pendingSeq >= 0))
    }
    return result.sorted { $0.ruleNumber < $1.ruleNumber }
  }

  func allocation(unit u: Int) -> NicNatAllocation {
    let unit = units[u]
    let record = records[Int(unit.instance)]
    let nic = record.nics[Int(unit.nic)]
    let (active, drained) = ranges(unit: u)
    let policy = config.gateways[Int(unit.gateway)].policy
    return NicNatAllocation(
      nic: ref(unit: u), host: record.spec.host,
      sourceVirtualIp: nic.primaryGateway == unit.gateway ? record.spec.networkInterfaces[Int(unit.nic)].networkIP : nil,
      sourceAliasIpRanges: nic.aliases.filter { $0.gateway == unit.gateway }.map(\.cidr.description),
      natIpPortRanges: active, drainNatIpPortRanges: drained,
      numTotalNatPorts: active.reduce(0) { $0 + $1.portCount }, numTotalDrainNatPorts: drained.reduce(0) { $0 + $1.portCount },
      waitingForNatPorts: unit.pendingSeq >= 0,
      dynamic: policy.dynamic
        ? DynamicPortState(
          minPortsPerVm: policy.minPorts, maxPortsPerVm: policy.maxPorts, targetPorts: Int(unit.target),
          nextGrant: peekGrant(u), nextReclaim: peekReclaim(u))
        : nil,
      ruleAllocations: ruleAllocations(record: unit.instance, nic: unit.nic, gateway: Int(unit.gateway)))
  }

  /// The admin API's view of a gateway (Cloud Router get-status), or nil for an unknown name.
  public func status(gateway name: String) -> NatGatewayStatus? {
    guard let g32 = config.gatewayIndex[name] else { return nil }
    let g = Int(g32)
    let cg = config.gateways[g]
    let rulePools = config.rulePools(ofGateway: g)
    // NICs holding active ports, per pool of this gateway (default pool first), in one pass.
    var mapped = [Int](repeating: 0, count: 1 + rulePools.count)
    for u in units.indices where units[u].live {
      let p = Int(units[u].gateway)
      let i = p == g ? 0 : rulePools.contains(p) ? 1 + p - rulePools.lowerBound : -1
      if i >= 0 && activePorts(u) > 0 { mapped[i] += 1 }
    }
    let pool = poolStatus(g)
    let rules = rulePools.map { p in
      let rule = poolStatus(p)
      return NatRuleStatus(
        ruleNumber: Int(gateways[p].ruleNumber), destinationRanges: config.rules[p - config.gateways.count].destinations,
        activeNatIps: rule.user, drainNatIps: rule.drain, minExtraIpsNeeded: rule.extra,
        numVmEndpointsWithNatMappings: mapped[1 + p - rulePools.lowerBound])
    }
    return NatGatewayStatus(
      name: name, autoAllocatedNatIps: pool.auto, userAllocatedNatIps: pool.user, drainUserAllocatedNatIps: pool.drain,
      minExtraNatIpsNeeded: pool.extra, numVmEndpointsWithNatMappings: mapped[0], vmNicsWithoutNat: pool.waiting,
      minPortsPerVm: cg.policy.minPorts, maxPortsPerVm: cg.policy.maxPorts, enableDynamicPortAllocation: cg.policy.dynamic,
      enableEndpointIndependentMapping: cg.endpointIndependentMapping, timeouts: cg.timeouts, logConfig: cg.spec.logConfig,
      ruleStatus: rules)
  }

  /// One pool's NAT IPs and what its waiting NICs lack. The NICs holding ports on it are counted
  /// by `status(gateway:)`, for all of a gateway's pools in one pass over the units.
  private func poolStatus(_ g: Int) -> (auto: [String], user: [String], drain: [String], extra: Int, waiting: [NicRef]) {
    var auto: [String] = []
    var user: [String] = []
    var drain: [String] = []
    var available = [Int](repeating: 0, count: 16)
    for s in gateways[g].pool {
      let slot = slots[Int(s)]
      let text = PlannerIPv4Address(slot.address).description
      if slot.auto { auto.append(text) } else if slot.drained { drain.append(text) } else { user.append(text) }
      if !slot.drained {
        for l in PortSpace.minLevel...PortSpace.maxLevel { available[l] += slot.space.freeCount(level: l) }
      }
    }
    var waiting: [NicRef] = []
    var needed = [Int](repeating: 0, count: 16)
    for entry in gateways[g].pending {
      let u = Int(entry.unit)
      guard units[u].live, units[u].pendingSeq == entry.seq else { continue }
      let active = activePorts(u)
      if active == 0 { waiting.append(ref(unit: u)) }
      var deficit = Int(units[u].target) - active
      while deficit > 0 {
        let size = min(1 << (Int.bitWidth - 1 - deficit.leadingZeroBitCount), NatPorts.maxBlockSize)
        needed[size.trailingZeroBitCount] += 1
        deficit -= size
      }
    }
    return (auto, user, drain, Self.extraNatIpsNeeded(blocksNeeded: needed, blocksAvailable: available), waiting)
  }

  /// Every gateway's status, in intent order.
  public var gatewayStatuses: [NatGatewayStatus] {
    config.gateways.compactMap { status(gateway: $0.spec.name) }
  }

  /// The fewest fresh NAT IPs that, with the free blocks already there, hold `blocksNeeded`
  /// (counts per level). Placing the largest blocks first into power-of-two free blocks wastes
  /// nothing, so a count of level-l blocks carried down (each splits into two of level l-1)
  /// decides exactly whether they fit. A fresh IP brings one free block at each of levels 10…15.
  static func extraNatIpsNeeded(blocksNeeded: [Int], blocksAvailable: [Int]) -> Int {
    func fits(_ extra: Int) -> Bool {
      var carry = 0
      for l in stride(from: PortSpace.maxLevel, through: PortSpace.minLevel, by: -1) {
        carry = carry * 2 + blocksAvailable[l] + (l >= 10 ? extra : 0)
        guard carry >= blocksNeeded[l] else { return false }
        carry -= blocksNeeded[l]
        // Beyond this, more carry cannot matter; cap it so doubling cannot overflow.
        carry = min(carry, 1 << 40)
      }
      return true
    }
    var low = 0
    var high = blocksNeeded.reduce(0, +)
    guard !fits(0) else { return 0 }
    while low < high {
      let mid = (low + high) / 2
      if fits(mid) { high = mid } else { low = mid + 1 }
    }
    return low
  }
}
