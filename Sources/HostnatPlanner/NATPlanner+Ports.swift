import HostnatAddressing

// Dynamic port allocation and quarantine: the calls the controller makes between intent changes.

extension NATPlanner {
  func unitIndex(_ ref: NICRef) -> Int? {
    guard let r = recordIDs[ref.instance], let g = config.gatewayIndex[ref.gateway] else { return nil }
    for u in records[Int(r)].units where units[Int(u)].nic == Int32(ref.nicIndex) && units[Int(u)].pool == .gateway(g) { return Int(u) }
    return nil
  }

  func ref(unit u: Int) -> NICRef {
    NICRef(instance: records[Int(units[u].instance)].spec.name, nicIndex: Int(units[u].nic), gateway: pools[units[u].pool].name)
  }

  /// Dynamic port allocation: doubles the NIC's ports with one more block, on the NAT IP it
  /// already uses when that IP has room, else on the first one in pool order that does (so a NIC
  /// may hold blocks on several NAT IPs, as in Cloud NAT). The host asks when it runs short.
  public mutating func grant(_ nic: NICRef) -> GrantOutcome {
    guard let u = unitIndex(nic) else { return .unknownNic }
    let p = units[u].pool
    let policy = config.policy(of: p)
    guard policy.dynamic else { return .notDynamic }
    guard units[u].pendingSeq == nil else { return .waitingForNatPorts }
    let target = Int(units[u].target)
    guard target * 2 <= policy.maxPorts else { return .atMaximum }
    beginChange()
    guard let block = allocate(level: target.trailingZeroBitCount, pool: p, prefer: firstActiveSlot(u)) else {
      releaseIdleAutoAddresses(p)
      return .noFreePorts
    }
    units[u].blocks.append(block)
    units[u].target = Int32(target * 2)
    markChanged(record: units[u].instance)
    return .granted(range(block))
  }

  /// The target after shrinking: halve while the NIC would still be at most half full afterwards
  /// (`portsInUse` ≤ a quarter of the current total), never below the minimum. The gap between
  /// "grow when nearly full" and "shrink when a quarter full" keeps a NIC from flapping.
  static func reclaimTarget(current: Int, minimum: Int, portsInUse: Int) -> Int {
    var target = current
    while target > minimum && portsInUse <= target / 4 { target /= 2 }
    return target
  }

  /// Dynamic port allocation: shrinks the NIC when usage fell (see `reclaimTarget`), most
  /// recently granted blocks first. The returned blocks are quarantined, not free.
  @discardableResult
  public mutating func reclaim(_ nic: NICRef, portsInUse: Int) -> [NATPortRange] {
    guard let u = unitIndex(nic) else { return [] }
    let policy = config.policy(of: units[u].pool)
    guard policy.dynamic else { return [] }
    let target = Self.reclaimTarget(current: Int(units[u].target), minimum: policy.minPorts, portsInUse: portsInUse)
    guard target < Int(units[u].target) else { return [] }
    beginChange()
    units[u].target = Int32(target)
    trim(u, reason: .reclaimed)
    if units[u].pendingSeq != nil && activePorts(u) >= target {
      units[u].pendingSeq = nil
      pools[units[u].pool].stalePending += 1
      markChanged(record: units[u].instance)
    }
    return newlyQuarantined.map { range(quarantineEntries[$0]!.block) }
  }

  /// Blocks waiting for the controller's go-ahead, oldest first.
  public var quarantinedBlocks: [QuarantinedBlock] {
    quarantineEntries.map { publicBlock(id: $0.key, $0.value) }.sorted { $0.id < $1.id }
  }

  /// Frees quarantined blocks for reuse; NICs waiting for ports are then served in arrival order
  /// and auto-allocated NAT IPs left empty are released. Unknown ids are ignored.
  @discardableResult
  public mutating func releaseQuarantined(_ ids: some Sequence<UInt64>) -> PlannerChangeSummary {
    beginChange()
    for id in ids {
      guard let entry = quarantineEntries.removeValue(forKey: id) else { continue }
      freeBlock(entry.block, quarantined: true)
    }
    settle()
    return finishChange()
  }

  /// Frees the quarantined blocks `predicate` selects, e.g. all of one host's once it acknowledged.
  @discardableResult
  public mutating func releaseQuarantined(where predicate: (QuarantinedBlock) -> Bool) -> PlannerChangeSummary {
    let ids = quarantinedBlocks.filter(predicate).map(\.id)
    return releaseQuarantined(ids)
  }

  /// Plans how `trim` would bring `blocks` down by `excess` active ports: most recent first, and
  /// a block larger than what is left over is halved (the unit keeps the aligned lower half).
  func surplus(of blocks: SmallArray<PortBlock>, excess: Int) -> (kept: SmallArray<PortBlock>, released: [(block: PortBlock, split: Bool)]) {
    var kept = blocks
    var released: [(block: PortBlock, split: Bool)] = []
    var excess = excess
    while excess > 0 {
      var i = kept.count - 1
      while !isActive(kept[i]) { i -= 1 }
      let block = kept[i]
      if block.size <= excess {
        kept.remove(at: i)
        released.append((block, false))
        excess -= block.size
      } else {
        let half = block.size / 2
        kept[i].level -= 1
        released.append((PortBlock(slot: block.slot, offset: block.offset + UInt16(half), level: block.level - 1), true))
        excess -= half
      }
    }
    return (kept, released)
  }

  func peekGrant(_ u: Int) -> NATPortRange? {
    let p = units[u].pool
    let policy = config.policy(of: p)
    let target = Int(units[u].target)
    guard policy.dynamic, units[u].pendingSeq == nil, target * 2 <= policy.maxPorts else { return nil }
    let level = target.trailingZeroBitCount
    func at(_ s: Int32, _ offset: Int) -> NATPortRange {
      NATPortRange(natIp: IPv4Address(slots[Int(s)].address), firstPort: offset, lastPort: offset + target - 1)
    }
    if let prefer = firstActiveSlot(u), let offset = slots[Int(prefer)].space.peek(level: level) { return at(prefer, offset) }
    for s in pools[p].fillOrder[Int(pools[p].hints[level])...] where !slots[Int(s)].drained {
      if let offset = slots[Int(s)].space.peek(level: level) { return at(s, offset) }
    }
    guard pools[p].auto else { return nil }
    for address in config.autoPools[pools[p].region] ?? [] {
      if let s = slotByAddress[address] {
        if slots[Int(s)].pool == nil, let offset = slots[Int(s)].space.peek(level: level) { return at(s, offset) }
      } else {
        let offset = level <= 10 ? NATPorts.firstPort : 1 << level
        return NATPortRange(natIp: IPv4Address(address), firstPort: offset, lastPort: offset + target - 1)
      }
    }
    return nil
  }

  func peekReclaim(_ u: Int) -> [NATPortRange] {
    let policy = config.policy(of: units[u].pool)
    let target = Int(units[u].target)
    guard policy.dynamic, target / 2 >= policy.minPorts else { return [] }
    let excess = activePorts(u) - target / 2
    guard excess > 0 else { return [] }
    return surplus(of: units[u].blocks, excess: excess).released.map { range($0.block) }
  }
}
