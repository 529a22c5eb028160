import HostnatAddressing

// Read side: what hosts get pushed and what the admin API shows.

extension NATPlanner {
  /// Every allocation of one instance, by NIC then gateway.
  public func allocations(instance name: String) -> [NICNATAllocation] {
    guard let r = recordIDs[name] else { return [] }
    // Rule units are reported inside their gateway's allocation.
    return records[Int(r)].units.filter { if case .gateway = units[Int($0)].pool.kind { true } else { false } }
      .sorted { (units[Int($0)].nic, units[Int($0)].pool) < (units[Int($1)].nic, units[Int($1)].pool) }
      .map { allocation(unit: Int($0)) }
  }

  public func allocation(_ nic: NICRef) -> NICNATAllocation? {
    unitIndex(nic).map { allocation(unit: $0) }
  }

  /// Every allocation of the instances on `host`, instances in arrival order. A scan: for the
  /// admin API and tests, not for the per-change push (use `PlannerChangeSummary.changedInstances`).
  public func allocations(host: String) -> [NICNATAllocation] {
    records.filter(\.live).filter { $0.spec.host == host }.sorted { $0.arrival < $1.arrival }
      .flatMap { allocations(instance: $0.spec.name) }
  }

  /// Every allocation, instances in arrival order.
  public var allAllocations: [NICNATAllocation] {
    records.filter(\.live).sorted { $0.arrival < $1.arrival }.flatMap { allocations(instance: $0.spec.name) }
  }

  /// gcloud's `get-nat-mapping-info` for one VM: each translated source of each NIC with the
  /// ports of its NIC (the primary IP and alias ranges share them).
  public func natMappingInfo(instance name: String) -> VMNATMappingInfo? {
    guard recordIDs[name] != nil else { return nil }
    var mappings: [InterfaceNATMapping] = []
    for allocation in allocations(instance: name) {
      func mapping(ip: String?, range: String?) -> InterfaceNATMapping {
        InterfaceNATMapping(
          nicIndex: allocation.nic.nicIndex, gateway: allocation.nic.gateway, sourceVirtualIp: ip, sourceAliasIpRange: range,
          natIpPortRanges: allocation.natIpPortRanges, drainNatIpPortRanges: allocation.drainNatIpPortRanges,
          numTotalNatPorts: allocation.numTotalNatPorts, numTotalDrainNatPorts: allocation.numTotalDrainNatPorts,
          ruleMappings: allocation.ruleAllocations)
      }
      if let ip = allocation.sourceVirtualIp { mappings.append(mapping(ip: ip, range: nil)) }
      for range in allocation.sourceAliasIpRanges { mappings.append(mapping(ip: nil, range: range)) }
    }
    return VMNATMappingInfo(instanceName: name, interfaceNatMappings: mappings)
  }

  /// A unit's blocks as sorted active and drain ranges.
  func ranges(unit u: Int) -> (active: [NATPortRange], drained: [NATPortRange]) {
    var active: [NATPortRange] = []
    var drained: [NATPortRange] = []
    for block in units[u].blocks {
      if isActive(block) { active.append(range(block)) } else { drained.append(range(block)) }
    }
    active.sort()
    drained.sort()
    return (active, drained)
  }

  /// The NIC's rule units on gateway `g`, by rule number.
  func ruleAllocations(record r: Int32, nic: Int32, gateway g: GatewayID) -> [RuleAllocation] {
    guard !config.ruleRanges[g.index].isEmpty else { return [] }
    var result: [RuleAllocation] = []
    for u in records[Int(r)].units where units[Int(u)].nic == nic {
      guard case .rule(let rule) = units[Int(u)].pool.kind, config[rule].gateway == g else { continue }
      let (active, drained) = ranges(unit: Int(u))
      result.append(
        RuleAllocation(
          ruleNumber: config[rule].ruleNumber, natIpPortRanges: active, drainNatIpPortRanges: drained,
          waitingForNatPorts: units[Int(u)].pendingSeq != nil))
    }
    return result.sorted { $0.ruleNumber < $1.ruleNumber }
  }

  func allocation(unit u: Int) -> NICNATAllocation {
    let unit = units[u]
    let record = records[Int(unit.instance)]
    let nic = record.nics[Int(unit.nic)]
    let (active, drained) = ranges(unit: u)
    let g = config.gateway(of: unit.pool)
    let policy = config.policy(of: unit.pool)
    return NICNATAllocation(
      nic: ref(unit: u), host: record.spec.host,
      sourceVirtualIp: nic.primaryGateway == g ? record.spec.networkInterfaces[Int(unit.nic)].networkIP : nil,
      sourceAliasIpRanges: nic.aliases.filter { $0.gateway == g }.map(\.cidr.description),
      natIpPortRanges: active, drainNatIpPortRanges: drained,
      numTotalNatPorts: active.reduce(0) { $0 + $1.portCount }, numTotalDrainNatPorts: drained.reduce(0) { $0 + $1.portCount },
      waitingForNatPorts: unit.pendingSeq != nil,
      dynamic: policy.dynamic
        ? DynamicPortState(
          minPortsPerVm: policy.minPorts, maxPortsPerVm: policy.maxPorts, targetPorts: Int(unit.target),
          nextGrant: peekGrant(u), nextReclaim: peekReclaim(u))
        : nil,
      ruleAllocations: ruleAllocations(record: unit.instance, nic: unit.nic, gateway: g))
  }

  /// The admin API's view of a gateway (Cloud Router get-status), or nil for an unknown name.
  public func status(gateway name: String) -> NATGatewayStatus? {
    guard let g = config.gatewayIndex[name] else { return nil }
    let cg = config[g]
    // NICs holding active ports, on the default pool and on each rule's (by offset in the
    // gateway's rule range), in one pass.
    let ruleRange = config.ruleRanges[g.index]
    var mappedDefault = 0
    var mappedRules = [Int](repeating: 0, count: ruleRange.count)
    for u in units.indices where units[u].live {
      switch units[u].pool.kind {
      case .gateway(let other):
        if other == g && activePorts(u) > 0 { mappedDefault += 1 }
      case .rule(let r):
        if ruleRange.contains(r.index) && activePorts(u) > 0 { mappedRules[r.index - ruleRange.lowerBound] += 1 }
      }
    }
    let pool = poolStatus(.gateway(g))
    let rules = ruleRange.map { k in
      let id = RuleID(k)
      let rule = poolStatus(.rule(id))
      return NATRuleStatus(
        ruleNumber: config[id].ruleNumber, destinationRanges: config[id].destinations,
        activeNatIps: rule.user, drainNatIps: rule.drain, minExtraIpsNeeded: rule.extra,
        numVmEndpointsWithNatMappings: mappedRules[k - ruleRange.lowerBound])
    }
    return NATGatewayStatus(
      name: name, autoAllocatedNatIps: pool.auto, userAllocatedNatIps: pool.user, drainUserAllocatedNatIps: pool.drain,
      minExtraNatIpsNeeded: pool.extra, numVmEndpointsWithNatMappings: mappedDefault, vmNicsWithoutNat: pool.waiting,
      minPortsPerVm: cg.policy.minPorts, maxPortsPerVm: cg.policy.maxPorts, enableDynamicPortAllocation: cg.policy.dynamic,
      enableEndpointIndependentMapping: cg.endpointIndependentMapping, timeouts: cg.timeouts, logConfig: cg.spec.logConfig,
      ruleStatus: rules)
  }

  /// One pool's NAT IPs and what its waiting NICs lack. The NICs holding ports on it are counted
  /// by `status(gateway:)`, for all of a gateway's pools in one pass over the units.
  private func poolStatus(_ p: PoolID) -> (auto: [String], user: [String], drain: [String], extra: Int, waiting: [NICRef]) {
    var auto: [String] = []
    var user: [String] = []
    var drain: [String] = []
    var available = [Int](repeating: 0, count: 16)
    for s in pools[p].fillOrder {
      let slot = slots[Int(s)]
      let text = IPv4Address(slot.address).description
      if slot.auto { auto.append(text) } else if slot.drained { drain.append(text) } else { user.append(text) }
      if !slot.drained {
        for l in PortSpace.minLevel...PortSpace.maxLevel { available[l] += slot.space.freeCount(level: l) }
      }
    }
    var waiting: [NICRef] = []
    var needed = [Int](repeating: 0, count: 16)
    for entry in pools[p].pending {
      let u = Int(entry.unit)
      guard units[u].live, units[u].pendingSeq == entry.seq else { continue }
      let active = activePorts(u)
      if active == 0 { waiting.append(ref(unit: u)) }
      var deficit = Int(units[u].target) - active
      while deficit > 0 {
        let size = min(1 << (Int.bitWidth - 1 - deficit.leadingZeroBitCount), NATPorts.maxBlockSize)
        needed[size.trailingZeroBitCount] += 1
        deficit -= size
      }
    }
    return (auto, user, drain, Self.extraNatIpsNeeded(blocksNeeded: needed, blocksAvailable: available), waiting)
  }

  /// Every gateway's status, in intent order.
  public var gatewayStatuses: [NATGatewayStatus] {
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
