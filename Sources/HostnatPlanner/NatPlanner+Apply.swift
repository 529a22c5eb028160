// Changes: the whole intent at once (diffed against what the planner holds), or one instance at
// a time on the fast path. Both validate everything before touching any state.

private func fail(_ field: String, _ reason: String) -> PlannerValidationError {
  PlannerValidationError(field: field, reason: reason)
}

extension NatPlanner {
  /// Applies one change. Instance changes take the incremental path; topology and gateway changes
  /// re-plan the whole intent (keeping every allocation the new intent still allows).
  @discardableResult
  public mutating func apply(_ change: NatChange) throws(PlannerValidationError) -> PlannerChangeSummary {
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
  public mutating func apply(_ intent: NatIntent) throws(PlannerValidationError) -> PlannerChangeSummary {
    let newConfig = try CompiledConfig.compile(intent)
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
    var compiled: [CompiledNics] = []
    compiled.reserveCapacity(intent.instances.count)
    var lastSubnet = (name: "", index: Int32(-1))
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
        instances[i], addresses: &newAddresses, insertAs: id, me: -1, myNics: [], lastSubnet: &lastSubnet,
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
    var lastSubnet = (name: "", index: Int32(-1))
    let names = records
    let nics = try config.compileInstance(
      instance, addresses: &addresses, insertAs: nil, me: existing ?? -1, myNics: existing.map { records[Int($0)].nics } ?? [],
      lastSubnet: &lastSubnet, ownerName: { names[Int($0)].spec.name })

    beginChange()
    let id: Int32
    if let r = existing {
      id = r
      addresses.remove(records[Int(r)].nics)
      for u in records[Int(r)].units
      where !Self.serves(nics, nic: units[Int(u)].nic, gateway: Int32(config.gateway(ofPool: Int(units[Int(u)].gateway)))) {
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
      if units[Int(u)].pendingSeq >= 0 { releaseIdleAutoAddresses(Int(units[Int(u)].gateway)) }
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

  static func serves(_ nics: CompiledNics, nic: Int32, gateway g: Int32) -> Bool {
    guard Int(nic) < nics.count else { return false }
    let compiled = nics[Int(nic)]
    return compiled.primaryGateway == g || compiled.aliases.contains { $0.gateway == g }
  }

  mutating func addMissingUnits(record id: Int32, nics: CompiledNics) {
    for (n, nic) in nics.enumerated() {
      if nic.primaryGateway >= 0 { addUnitsIfMissing(record: id, nic: Int32(n), gateway: nic.primaryGateway) }
      for alias in nic.aliases where alias.gateway >= 0 { addUnitsIfMissing(record: id, nic: Int32(n), gateway: alias.gateway) }
    }
  }

  /// The NIC's unit on the gateway's default pool and one on each of its rules' pools.
  private mutating func addUnitsIfMissing(record id: Int32, nic: Int32, gateway g: Int32) {
    addUnitIfMissing(record: id, nic: nic, pool: g)
    for p in config.rulePools(ofGateway: Int(g)) { addUnitIfMissing(record: id, nic: nic, pool: Int32(p)) }
  }

  private mutating func addUnitIfMissing(record id: Int32, nic: Int32, pool p: Int32) {
    for u in records[Int(id)].units where units[Int(u)].nic == nic && units[Int(u)].gateway == p { return }
    _ = newUnit(record: id, nic: nic, gateway: p, target: config.policy(ofPool: Int(p)).minPorts)
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
  private func checkDrainedAddresses(_ newConfig: CompiledConfig) throws(PlannerValidationError) {
    func known(_ address: UInt32, in key: PoolKey) -> Bool {
      guard let s = slotByAddress[address].map(Int.init) else { return false }
      return slots[s].owner >= 0 && !slots[s].auto && gateways[Int(slots[s].owner)].key == key
    }
    // In pool order: every gateway's default IPs, then the rules.
    for p in 0..<newConfig.poolCount {
      let key = newConfig.key(ofPool: p)
      for (j, address) in newConfig.drained(ofPool: p).enumerated() where !known(address, in: key) {
        if key.rule < 0 {
          throw fail(
            "natGateways[\(key.gateway)].drainNatIps[\(j)]",
            "\(PlannerIPv4Address(address)) is not one of this gateway's NAT IPs: only existing, manually configured NAT IPs can be drained")
        }
        throw fail(
          "natGateways[\(key.gateway)].rules[\(key.rule)].sourceNatDrainIps[\(j)]",
          "\(PlannerIPv4Address(address)) is not one of this rule's NAT IPs: only IPs already active in the rule can be drained")
      }
    }
  }

  /// Phase two of `apply(_ intent:)`: cannot fail.
  private mutating func commit(
    _ newConfig: CompiledConfig, _ intent: NatIntent, ids: [Int32], recordIDs newRecordIDs: [String: Int32], compiled: [CompiledNics],
    addresses newAddresses: AddressIndex,
    freeCursor: Int, nextNew: Int32
  ) {
    freeRecords.removeSubrange(freeCursor...)
    records.reserveCapacity(Int(nextNew))

    // A. Removals, still in the old pool numbering.
    var newPoolIndex: [PoolKey: Int32] = [:]
    for p in 0..<newConfig.poolCount { newPoolIndex[newConfig.key(ofPool: p)] = Int32(p) }
    let gatewayMap: [Int32] = gateways.map { newPoolIndex[$0.key] ?? -1 }
    // Per old pool: its gateway is not in the new intent (for the removal reason).
    let gatewayGone: [Bool] = gateways.map { newConfig.gatewayIndex[$0.name] == nil }
    if !recordIDs.isEmpty {
      var kept = [Bool](repeating: false, count: max(records.count, Int(nextNew)))
      for id in ids { kept[Int(id)] = true }
      for r in records.indices where records[r].live && !kept[r] { removeRecord(Int32(r), reason: .instanceRemoved) }
      for (i, id) in ids.enumerated() where Int(id) < records.count && records[Int(id)].live {
        for u in records[Int(id)].units {
          let newGateway = gatewayMap[Int(units[Int(u)].gateway)]
          if newGateway < 0 {
            // A deleted rule takes its NAT IPs away from the NIC; a deleted gateway everything.
            removeUnit(Int(u), reason: gatewayGone[Int(units[Int(u)].gateway)] ? .gatewayRemoved : .natIpRemoved)
          } else if !Self.serves(compiled[i], nic: units[Int(u)].nic, gateway: Int32(newConfig.gateway(ofPool: Int(newGateway)))) {
            removeUnit(Int(u), reason: .noLongerTranslated)
          }
        }
      }
    }
    // NAT IPs leaving their gateway: the blocks on them are quarantined.
    var detached: [Int32] = []
    for g in gateways.indices {
      let ng = Int(gatewayMap[g])
      var wanted: Set<UInt32> = []
      if ng >= 0 {
        if newConfig.isAuto(ofPool: ng) {
          let region = newConfig.gateways[ng].region
          for s in gateways[g].pool where slots[Int(s)].auto && newConfig.autoPoolRegion[slots[Int(s)].address] == region {
            wanted.insert(slots[Int(s)].address)
          }
        } else {
          wanted = Set(newConfig.active(ofPool: ng) + newConfig.drained(ofPool: ng))
        }
      }
      for s in gateways[g].pool where !wanted.contains(slots[Int(s)].address) { detached.append(s) }
    }
    if !detached.isEmpty {
      var leaving = [Bool](repeating: false, count: slots.count)
      for s in detached { leaving[Int(s)] = true }
      for u in units.indices where units[u].live && units[u].blocks.contains(where: { leaving[Int($0.slot)] }) {
        let blocks = units[u].blocks
        units[u].blocks.removeAll { leaving[Int($0.slot)] }
        for block in blocks where leaving[Int(block.slot)] { moveToQuarantine(block, from: u, reason: .natIpRemoved) }
        markChanged(record: units[u].instance)
      }
    }

    // B. Renumber pools to the new intent's order: default pools of the gateways, then rules.
    var oldIndex: [PoolKey: Int] = [:]
    for (g, state) in gateways.enumerated() { oldIndex[state.key] = g }
    var newStates: [GatewayState] = []
    var oldPolicies: [PortPolicy?] = []
    for p in 0..<newConfig.poolCount {
      let key = newConfig.key(ofPool: p)
      let cg = newConfig.gateways[newConfig.gateway(ofPool: p)]
      let auto = newConfig.isAuto(ofPool: p)
      let policy = newConfig.policy(ofPool: p)
      if let g = oldIndex[key] {
        var state = gateways[g]
        state.pool.removeAll { slots[Int($0)].owner != Int32(g) || detached.contains($0) }
        oldPolicies.append(state.policy)
        state.auto = auto
        state.region = cg.region
        state.policy = policy
        newStates.append(state)
      } else {
        oldPolicies.append(nil)
        newStates.append(GatewayState(name: key.gateway, ruleNumber: key.rule, auto: auto, region: cg.region, policy: policy))
      }
    }
    for s in detached {
      slots[Int(s)].owner = -1
      slots[Int(s)].poolIndex = -1
      slots[Int(s)].drained = false
      slots[Int(s)].auto = false
    }
    for s in slots.indices where slots[s].live && slots[s].owner >= 0 { slots[s].owner = gatewayMap[Int(slots[s].owner)] }
    for u in units.indices where units[u].live { units[u].gateway = gatewayMap[Int(units[u].gateway)] }
    gateways = newStates
    for s in detached { dropSlotIfIdle(s) }

    // C. Pools: manual ones in the intent's order (active, then drained), auto ones as taken.
    for g in 0..<newConfig.poolCount {
      var pool: [Int32] = []
      let auto = newConfig.isAuto(ofPool: g)
      if auto {
        pool = gateways[g].pool
      } else {
        for address in newConfig.active(ofPool: g) {
          let s = slotByAddress[address] ?? makeSlot(address: address)
          slots[Int(s)].drained = false
          pool.append(s)
        }
        for address in newConfig.drained(ofPool: g) {
          let s = slotByAddress[address]!
          slots[Int(s)].drained = true
          pool.append(s)
        }
      }
      for (position, s) in pool.enumerated() {
        slots[Int(s)].owner = Int32(g)
        slots[Int(s)].poolIndex = Int32(position)
        slots[Int(s)].auto = auto
      }
      gateways[g].pool = pool
      resetHints(g)
    }

    // D. Port targets follow the gateway's port settings.
    for u in units.indices where units[u].live {
      let g = Int(units[u].gateway)
      let policy = newConfig.policy(ofPool: g)
      // No old policy: a gateway restored from a snapshot, whose targets are kept within bounds.
      let old = oldPolicies[g]
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
    for g in gateways.indices { servePending(g) }
    for id in ids {
      for u in records[Int(id)].units { fillOrWait(Int(u)) }
    }
    settle()
  }
}
