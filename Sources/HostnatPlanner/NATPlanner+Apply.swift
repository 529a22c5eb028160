public import HostnatAddressing

// Changes: the whole intent at once (diffed against what the planner holds), or one instance at
// a time on the fast path. Both validate everything before touching any state.

extension NATPlanner {
  /// Applies one change. Instance changes take the incremental path; topology and gateway changes
  /// re-plan the whole intent (keeping every allocation the new intent still allows).
  @discardableResult
  public mutating func apply(_ change: NATChange) throws(PlannerValidationError) -> PlannerChangeSummary {
    func upsert<T>(_ list: inout [T], _ item: T, name: (T) -> String) {
      if let i = list.firstIndex(where: { name($0) == name(item) }) { list[i] = item } else { list.append(item) }
    }
    func remove<T>(_ list: inout [T], _ target: String, field: String, name: (T) -> String) throws(PlannerValidationError) {
      guard let i = list.firstIndex(where: { name($0) == target }) else { throw fail("\(field)[\(target)]", "no such object") }
      list.remove(at: i)
    }
    switch change {
    case .upsertInstance(let instance): return try upsertInstance(instance)
    case .removeInstance(let name): return try removeInstance(name)
    default: break
    }
    var next = intent
    switch change {
    case .upsertInstance, .removeInstance: break
    case .upsertNetwork(let item): upsert(&next.networks, item, name: \.name)
    case .removeNetwork(let name): try remove(&next.networks, name, field: "networks", name: \.name)
    case .upsertSubnetwork(let item): upsert(&next.subnetworks, item, name: \.name)
    case .removeSubnetwork(let name): try remove(&next.subnetworks, name, field: "subnetworks", name: \.name)
    case .upsertRouter(let item): upsert(&next.routers, item, name: \.name)
    case .removeRouter(let name): try remove(&next.routers, name, field: "routers", name: \.name)
    case .upsertNatGateway(let item): upsert(&next.natGateways, item, name: \.name)
    case .removeNatGateway(let name): try remove(&next.natGateways, name, field: "natGateways", name: \.name)
    case .setAutoNatIpPool(let pool): upsert(&next.autoNatIpPools, pool, name: \.region)
    }
    return try apply(next)
  }

  /// Makes the planner hold `intent`: instances that disappeared are removed, new ones get ports
  /// in the intent's order, and every surviving allocation is kept unless the intent forbids it
  /// (its NAT IP left the pool, its ports went down, its range is no longer translated).
  @discardableResult
  public mutating func apply(_ intent: NATIntent) throws(PlannerValidationError) -> PlannerChangeSummary {
    let newConfig = try CompiledIntent.compile(intent)
    try checkDrainedAddresses(newConfig)

    // The ids instances will have: existing ones keep theirs, new ones take freed ids (last
    // freed first) and then fresh ones, exactly as `commit` will hand them out.
    var ids: [Int32] = []
    ids.reserveCapacity(intent.instances.count)
    var freeCursor = freeRecords.count
    var nextNew = Int32(records.count)
    var newRecordIDs: [String: Int32] = [:]
    newRecordIDs.reserveCapacity(intent.instances.count)
    var newAddresses = AddressIndex()
    newAddresses.primary.reserveCapacity(intent.instances.count)
    var compiled: [IntentNICs] = []
    compiled.reserveCapacity(intent.instances.count)
    var lastSubnet = SubnetCache()
    // Captured by the error-message closure instead of `intent`, which would be copied (six
    // retains) every time the closure is formed.
    let instances = intent.instances
    for i in instances.indices {
      let name = instances[i].name
      let id: Int32
      if !recordIDs.isEmpty, let existing = recordIDs[name] {
        id = existing
      } else if freeCursor > 0 {
        freeCursor -= 1
        id = freeRecords[freeCursor]
      } else {
        id = nextNew
        nextNew += 1
      }
      if newRecordIDs.updateValue(id, forKey: name) != nil {
        let earlier = instances.firstIndex { $0.name == name }!
        throw fail("instances[\(i)].name", "duplicate instance name '\(name)' (also instances[\(earlier)])")
      }
      ids.append(id)
      let nics = try newConfig.compileInstance(
        instances[i], addresses: &newAddresses, insertAs: id, me: nil, myNics: [], lastSubnet: &lastSubnet,
        ownerName: { owner in ids.firstIndex(of: owner).map { instances[$0].name } ?? "?" })
      compiled.append(nics)
    }

    beginChange()
    commit(newConfig, intent, ids: ids, recordIDs: newRecordIDs, compiled: compiled, addresses: newAddresses, freeCursor: freeCursor, nextNew: nextNew)
    return finishChange()
  }

  /// Adds an instance or replaces its definition. NICs and gateways it keeps keep their ports,
  /// also when the instance moves to another host (live migration): the controller must then
  /// withdraw the mapping from the old host itself.
  @discardableResult
  public mutating func upsertInstance(_ instance: Instance) throws(PlannerValidationError) -> PlannerChangeSummary {
    let existing = recordIDs[instance.name]
    var lastSubnet = SubnetCache()
    let names = records
    let nics = try config.compileInstance(
      instance, addresses: &addresses, insertAs: nil, me: existing, myNics: existing.map { records[Int($0)].nics } ?? [],
      lastSubnet: &lastSubnet, ownerName: { names[Int($0)].spec.name })

    beginChange()
    let id: Int32
    if let r = existing {
      id = r
      addresses.remove(records[Int(r)].nics)
      for u in records[Int(r)].units
      where !Self.serves(nics, nic: units[Int(u)].nic, gateway: config.gateway(of: units[Int(u)].pool)) {
        removeUnit(Int(u), reason: .noLongerTranslated)
      }
      if records[Int(r)].spec != instance {
        records[Int(r)].spec = instance
        markChanged(record: r)
      }
      records[Int(r)].nics = nics
    } else {
      if let reused = freeRecords.popLast() {
        id = reused
      } else {
        id = Int32(records.count)
        records.append(.dead)
      }
      records[Int(id)] = InstanceRecord(spec: instance, arrival: nextArrival, nics: nics)
      nextArrival += 1
      recordIDs[instance.name] = id
      markChanged(record: id)
    }
    addresses.insert(nics, owner: id)
    let first = records[Int(id)].units.count
    addMissingUnits(record: id, nics: nics)
    let all = records[Int(id)].units
    for u in all[first...] {
      fillOrWait(Int(u))
      if units[Int(u)].pendingSeq != nil { releaseIdleAutoAddresses(units[Int(u)].pool) }
    }
    return finishChange()
  }

  /// Removes an instance; its blocks go to quarantine.
  @discardableResult
  public mutating func removeInstance(_ name: String) throws(PlannerValidationError) -> PlannerChangeSummary {
    guard let r = recordIDs[name] else { throw fail("instances[\(name)]", "no such instance") }
    beginChange()
    addresses.remove(records[Int(r)].nics)
    removeRecord(r, reason: .instanceRemoved)
    return finishChange()
  }

  // MARK: - Helpers

  static func serves(_ nics: IntentNICs, nic: Int32, gateway g: GatewayID) -> Bool {
    guard Int(nic) < nics.count else { return false }
    let compiled = nics[Int(nic)]
    return compiled.primaryGateway == g || compiled.aliases.contains { $0.gateway == g }
  }

  mutating func addMissingUnits(record id: Int32, nics: IntentNICs) {
    for (n, nic) in nics.enumerated() {
      if let g = nic.primaryGateway { addUnitsIfMissing(record: id, nic: Int32(n), gateway: g) }
      for alias in nic.aliases { if let g = alias.gateway { addUnitsIfMissing(record: id, nic: Int32(n), gateway: g) } }
    }
  }

  /// The NIC's unit on the gateway's default pool and one on each of its rules' pools.
  private mutating func addUnitsIfMissing(record id: Int32, nic: Int32, gateway g: GatewayID) {
    addUnitIfMissing(record: id, nic: nic, pool: .gateway(g))
    for p in config.rulePools(of: g) { addUnitIfMissing(record: id, nic: nic, pool: p) }
  }

  private mutating func addUnitIfMissing(record id: Int32, nic: Int32, pool p: PoolID) {
    for u in records[Int(id)].units where units[Int(u)].nic == nic && units[Int(u)].pool == p { return }
    _ = newUnit(record: id, nic: nic, pool: p, target: config.policy(of: p).minPorts)
  }

  mutating func removeRecord(_ r: Int32, reason: QuarantinedBlock.Reason) {
    markChanged(record: r)
    for u in records[Int(r)].units { removeUnit(Int(u), reason: reason) }
    recordIDs[records[Int(r)].spec.name] = nil
    records[Int(r)] = .dead
    freeRecords.append(r)
  }

  /// Cloud NAT drains only existing, manually configured NAT IPs of the same gateway, and for a
  /// rule, of the same rule: draining moves an IP from the active list to the drain list.
  private func checkDrainedAddresses(_ newConfig: CompiledIntent) throws(PlannerValidationError) {
    func known(_ address: UInt32, in key: PoolKey) -> Bool {
      guard let s = slotByAddress[address].map(Int.init), let p = slots[s].pool else { return false }
      return !slots[s].auto && pools[p].key == key
    }
    // In pool order: every gateway's default IPs, then the rules.
    for p in newConfig.poolIDs {
      let key = newConfig.key(of: p)
      for (j, address) in newConfig.drained(of: p).enumerated() where !known(address, in: key) {
        guard let rule = key.rule else {
          throw fail(
            "natGateways[\(key.gateway)].drainNatIps[\(j)]",
            "\(IPv4Address(address)) is not one of this gateway's NAT IPs: only existing, manually configured NAT IPs can be drained")
        }
        throw fail(
          "natGateways[\(key.gateway)].rules[\(rule)].sourceNatDrainIps[\(j)]",
          "\(IPv4Address(address)) is not one of this rule's NAT IPs: only IPs already active in the rule can be drained")
      }
    }
  }

  /// Phase two of `apply(_ intent:)`: cannot fail.
  private mutating func commit(
    _ newConfig: CompiledIntent, _ intent: NATIntent, ids: [Int32], recordIDs newRecordIDs: [String: Int32], compiled: [IntentNICs],
    addresses newAddresses: AddressIndex,
    freeCursor: Int, nextNew: Int32
  ) {
    freeRecords.removeSubrange(freeCursor...)
    records.reserveCapacity(Int(nextNew))

    // A. Removals, still in the old pool numbering.
    var newPoolIDs: [PoolKey: PoolID] = [:]
    for p in newConfig.poolIDs { newPoolIDs[newConfig.key(of: p)] = p }
    let poolMap: PoolTable<PoolID?> = pools.map { newPoolIDs[$0.key] }
    if !recordIDs.isEmpty { removeUnitsLeaving(newConfig, poolMap: poolMap, ids: ids, nextNew: nextNew, compiled: compiled) }
    let detached = detachNatIps(newConfig, poolMap: poolMap)

    // B. Renumber pools to the new intent's order: default pools of the gateways, then rules.
    let oldPolicies = renumberPools(newConfig, poolMap: poolMap, detached: detached)

    // C. Pools: manual ones in the intent's order (active, then drained), auto ones as taken.
    for p in newConfig.poolIDs { refillPool(p, newConfig) }

    // D. Port targets follow the gateway's port settings.
    for u in units.indices where units[u].live {
      let p = units[u].pool
      let policy = newConfig.policy(of: p)
      // No old policy: a gateway restored from a snapshot, whose targets are kept within bounds.
      let old = oldPolicies[p]
      if old == policy { continue }
      let switched = old.map { $0.dynamic != policy.dynamic } ?? false
      units[u].target = Int32(switched ? policy.minPorts : policy.clamp(Int(units[u].target)))
    }

    // E. Instance records and the units new NICs need.
    config = newConfig
    addresses = newAddresses
    recordIDs = newRecordIDs
    for (i, instance) in intent.instances.enumerated() {
      let id = ids[i]
      // Fresh ids come in increasing order, so a new one is always the next to append.
      if Int(id) == records.count {
        records.append(InstanceRecord(spec: instance, arrival: nextArrival, nics: compiled[i]))
        nextArrival += 1
        markChanged(record: id)
      } else if !records[Int(id)].live {
        records[Int(id)] = InstanceRecord(spec: instance, arrival: nextArrival, nics: compiled[i])
        nextArrival += 1
        markChanged(record: id)
      } else {
        if records[Int(id)].spec != instance {
          records[Int(id)].spec = instance
          markChanged(record: id)
        }
        records[Int(id)].nics = compiled[i]
      }
      addMissingUnits(record: id, nics: compiled[i])
    }

    // F. Reconcile: give back surplus, serve those already waiting, then everyone else in
    // intent order.
    for u in units.indices where units[u].live { trim(u, reason: .portsReduced) }
    for p in pools.ids { servePending(p) }
    for id in ids {
      for u in records[Int(id)].units { fillOrWait(Int(u)) }
    }
    settle()
  }

  /// Removes instances the intent dropped, and units whose pool is gone or no longer serves the NIC.
  private mutating func removeUnitsLeaving(_ newConfig: CompiledIntent, poolMap: PoolTable<PoolID?>, ids: [Int32], nextNew: Int32, compiled: [IntentNICs]) {
    var kept = [Bool](repeating: false, count: max(records.count, Int(nextNew)))
    for id in ids { kept[Int(id)] = true }
    for r in records.indices where records[r].live && !kept[r] { removeRecord(Int32(r), reason: .instanceRemoved) }
    for (i, id) in ids.enumerated() where Int(id) < records.count && records[Int(id)].live {
      for u in records[Int(id)].units {
        let old = units[Int(u)].pool
        if let new = poolMap[old] {
          if !Self.serves(compiled[i], nic: units[Int(u)].nic, gateway: newConfig.gateway(of: new)) {
            removeUnit(Int(u), reason: .noLongerTranslated)
          }
        } else {
          // A deleted rule takes its NAT IPs away from the NIC; a deleted gateway everything.
          removeUnit(Int(u), reason: newConfig.gatewayIndex[pools[old].name] == nil ? .gatewayRemoved : .natIpRemoved)
        }
      }
    }
  }

  /// NAT IPs leaving their pool: the blocks on them are quarantined. Returns their slots.
  private mutating func detachNatIps(_ newConfig: CompiledIntent, poolMap: PoolTable<PoolID?>) -> [Int32] {
    var detached: [Int32] = []
    for old in pools.ids {
      var wanted: Set<UInt32> = []
      if let new = poolMap[old] {
        if newConfig.isAuto(new) {
          let region = newConfig[newConfig.gateway(of: new)].region
          for s in pools[old].fillOrder where slots[Int(s)].auto && newConfig.autoPoolRegion[slots[Int(s)].address] == region {
            wanted.insert(slots[Int(s)].address)
          }
        } else {
          wanted = Set(newConfig.active(of: new) + newConfig.drained(of: new))
        }
      }
      for s in pools[old].fillOrder where !wanted.contains(slots[Int(s)].address) { detached.append(s) }
    }
    guard !detached.isEmpty else { return detached }
    var leaving = [Bool](repeating: false, count: slots.count)
    for s in detached { leaving[Int(s)] = true }
    for u in units.indices where units[u].live && units[u].blocks.contains(where: { leaving[Int($0.slot)] }) {
      let blocks = units[u].blocks
      units[u].blocks.removeAll { leaving[Int($0.slot)] }
      for block in blocks where leaving[Int(block.slot)] { moveToQuarantine(block, from: u, reason: .natIpRemoved) }
      markChanged(record: units[u].instance)
    }
    return detached
  }

  /// Gives every pool of the new intent its state (kept by key, or new), moves slots and units to
  /// the new ids, and returns each new pool's previous port policy.
  private mutating func renumberPools(_ newConfig: CompiledIntent, poolMap: PoolTable<PoolID?>, detached: [Int32]) -> PoolTable<PortPolicy?> {
    var oldIDs: [PoolKey: PoolID] = [:]
    for p in pools.ids { oldIDs[pools[p].key] = p }
    var newPools = PoolTable<PoolState>()
    var oldPolicies = PoolTable<PortPolicy?>()
    for p in newConfig.poolIDs {
      let key = newConfig.key(of: p)
      let region = newConfig[newConfig.gateway(of: p)].region
      let auto = newConfig.isAuto(p)
      let policy = newConfig.policy(of: p)
      let isRule = key.rule != nil
      if let old = oldIDs[key] {
        var state = pools[old]
        state.fillOrder.removeAll { slots[Int($0)].pool != old || detached.contains($0) }
        oldPolicies.append(state.policy, rule: isRule)
        state.auto = auto
        state.region = region
        state.policy = policy
        newPools.append(state, rule: isRule)
      } else {
        oldPolicies.append(nil, rule: isRule)
        newPools.append(PoolState(name: key.gateway, ruleNumber: key.rule, auto: auto, region: region, policy: policy), rule: isRule)
      }
    }
    for s in detached {
      slots[Int(s)].pool = nil
      slots[Int(s)].position = -1
      slots[Int(s)].drained = false
      slots[Int(s)].auto = false
    }
    for s in slots.indices where slots[s].live {
      if let p = slots[s].pool { slots[s].pool = poolMap[p] }
    }
    // Units on a pool that is gone were removed in phase A.
    for u in units.indices where units[u].live { units[u].pool = poolMap[units[u].pool]! }
    pools = newPools
    for s in detached { dropSlotIfIdle(s) }
    return oldPolicies
  }

  /// Lays out a pool's NAT IPs in fill order.
  private mutating func refillPool(_ p: PoolID, _ newConfig: CompiledIntent) {
    var fillOrder: [Int32] = []
    let auto = newConfig.isAuto(p)
    if auto {
      fillOrder = pools[p].fillOrder
    } else {
      for address in newConfig.active(of: p) {
        let s = slotByAddress[address] ?? makeSlot(address: address)
        slots[Int(s)].drained = false
        fillOrder.append(s)
      }
      for address in newConfig.drained(of: p) {
        let s = slotByAddress[address]!
        slots[Int(s)].drained = true
        fillOrder.append(s)
      }
    }
    for (position, s) in fillOrder.enumerated() {
      slots[Int(s)].pool = p
      slots[Int(s)].position = Int32(position)
      slots[Int(s)].auto = auto
    }
    pools[p].fillOrder = fillOrder
    resetHints(p)
  }
}
