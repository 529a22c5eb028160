import HostnatAddressing

// Block-level mechanics shared by every change: taking and returning blocks, filling and trimming
// a unit, the waiting queue, auto-allocated NAT IPs and quarantine.

extension NATPlanner {
  // MARK: Change bookkeeping

  mutating func beginChange() {
    epoch += 1
    changed.removeAll(keepingCapacity: true)
    newlyQuarantined.removeAll(keepingCapacity: true)
  }

  mutating func finishChange() -> PlannerChangeSummary {
    PlannerChangeSummary(
      epoch: epoch, changedInstances: changed,
      quarantined: newlyQuarantined.compactMap { id in quarantineEntries[id].map { publicBlock(id: id, $0) } })
  }

  @inline(__always)
  mutating func markChanged(record r: Int32) {
    let i = Int(r)
    if records[i].changedEpoch != epoch {
      records[i].changedEpoch = epoch
      changed.append(records[i].spec.name)
    }
  }

  // MARK: Slots

  mutating func makeSlot(address: UInt32) -> Int32 {
    let s: Int32
    if let reused = freeSlots.popLast() {
      s = reused
      slots[Int(s)] = NATIPSlot(address: address)
    } else {
      s = Int32(slots.count)
      slots.append(NATIPSlot(address: address))
    }
    slotByAddress[address] = s
    return s
  }

  /// Forgets an ownerless slot once nothing on it is owned or quarantined.
  mutating func dropSlotIfIdle(_ s: Int32) {
    let i = Int(s)
    guard slots[i].live, slots[i].pool == nil, slots[i].usedBlocks == 0, slots[i].quarantinedBlocks == 0 else { return }
    slotByAddress[slots[i].address] = nil
    slots[i].live = false
    slots[i].space = PortSpace()
    freeSlots.append(s)
  }

  mutating func appendToPool(_ p: PoolID, slot s: Int32) {
    slots[Int(s)].pool = p
    slots[Int(s)].position = Int32(pools[p].fillOrder.count)
    pools[p].fillOrder.append(s)
  }

  mutating func resetHints(_ p: PoolID) {
    for l in pools[p].hints.indices { pools[p].hints[l] = 0 }
  }

  // MARK: Blocks

  @inline(__always)
  func isActive(_ block: PortBlock) -> Bool { !slots[Int(block.slot)].drained }

  func activePorts(_ u: Int) -> Int {
    var total = 0
    for block in units[u].blocks where !slots[Int(block.slot)].drained { total += block.size }
    return total
  }

  func firstActiveSlot(_ u: Int) -> Int32? {
    for block in units[u].blocks where !slots[Int(block.slot)].drained { return block.slot }
    return nil
  }

  @inline(__always)
  mutating func take(slot s: Int32, level: Int) -> PortBlock? {
    guard let offset = slots[Int(s)].space.allocate(level: level) else { return nil }
    slots[Int(s)].usedBlocks += 1
    return PortBlock(slot: s, offset: UInt16(offset), level: UInt8(level))
  }

  mutating func firstSlotWithSpace(_ p: PoolID, level: Int) -> Int32? {
    let count = pools[p].fillOrder.count
    var i = Int(pools[p].hints[level])
    while i < count {
      let s = pools[p].fillOrder[i]
      if !slots[Int(s)].drained && slots[Int(s)].space.canAllocate(level: level) {
        pools[p].hints[level] = Int32(i)
        return s
      }
      i += 1
    }
    pools[p].hints[level] = Int32(count)
    return nil
  }

  /// The next address of the region's auto pool that no gateway holds, as a slot of `p`.
  mutating func takeAutoAddress(_ p: PoolID) -> Int32? {
    guard let pool = config.autoPools[pools[p].region] else { return nil }
    for address in pool {
      if let s = slotByAddress[address] {
        guard slots[Int(s)].pool == nil else { continue }
        slots[Int(s)].auto = true
        slots[Int(s)].drained = false
        appendToPool(p, slot: s)
        return s
      }
      let s = makeSlot(address: address)
      slots[Int(s)].auto = true
      appendToPool(p, slot: s)
      return s
    }
    return nil
  }

  /// A block of `level` from pool `p`: on `prefer` if it has room, else the first NAT IP in
  /// pool order that does, else (AUTO_ONLY) a newly taken auto address.
  mutating func allocate(level: Int, pool p: PoolID, prefer: Int32?) -> PortBlock? {
    if let prefer {
      let i = Int(prefer)
      if slots[i].pool == p, !slots[i].drained, let block = take(slot: prefer, level: level) { return block }
    }
    if let s = firstSlotWithSpace(p, level: level), let block = take(slot: s, level: level) { return block }
    if pools[p].auto {
      while let s = takeAutoAddress(p) {
        if let block = take(slot: s, level: level) { return block }
      }
    }
    return nil
  }

  /// Returns a block to its NAT IP's free space.
  mutating func freeBlock(_ block: PortBlock, quarantined: Bool) {
    let s = Int(block.slot)
    let merged = slots[s].space.free(offset: Int(block.offset), level: Int(block.level))
    if quarantined { slots[s].quarantinedBlocks -= 1 } else { slots[s].usedBlocks -= 1 }
    if let p = slots[s].pool {
      let position = slots[s].position
      for l in 1...merged where pools[p].hints[l] > position { pools[p].hints[l] = position }
    } else {
      dropSlotIfIdle(block.slot)
    }
  }

  /// Moves a block from a unit to quarantine. `split` means the unit keeps the lower half of the
  /// block it held and only this upper half leaves.
  mutating func moveToQuarantine(_ block: PortBlock, from u: Int, reason: QuarantinedBlock.Reason, split: Bool = false) {
    let s = Int(block.slot)
    if !split { slots[s].usedBlocks -= 1 }
    slots[s].quarantinedBlocks += 1
    let unit = units[u]
    let record = records[Int(unit.instance)]
    let id = nextQuarantineID
    nextQuarantineID += 1
    quarantineEntries[id] = QuarantineEntry(
      block: block, nic: NICRef(instance: record.spec.name, nicIndex: Int(unit.nic), gateway: pools[unit.pool].name),
      host: record.spec.host, epoch: epoch, reason: reason)
    newlyQuarantined.append(id)
  }

  // MARK: Units

  mutating func newUnit(record r: Int32, nic: Int32, pool: PoolID, target: Int) -> Int32 {
    let unit = Unit(instance: r, nic: nic, pool: pool, target: Int32(target))
    let u: Int32
    if let reused = freeUnits.popLast() {
      u = reused
      units[Int(u)] = unit
    } else {
      u = Int32(units.count)
      units.append(unit)
    }
    records[Int(r)].units.append(u)
    return u
  }

  /// Quarantines everything the unit holds (drain ranges included) and forgets it.
  mutating func removeUnit(_ u: Int, reason: QuarantinedBlock.Reason) {
    for block in units[u].blocks { moveToQuarantine(block, from: u, reason: reason) }
    units[u].blocks = []
    if units[u].pendingSeq != nil { pools[units[u].pool].stalePending += 1 }
    units[u].pendingSeq = nil
    units[u].live = false
    markChanged(record: units[u].instance)
    let r = Int(units[u].instance)
    if let i = records[r].units.firstIndex(of: Int32(u)) { records[r].units.remove(at: i) }
    freeUnits.append(Int32(u))
  }

  /// Tops the unit up to its target with blocks, largest first, all or nothing. Returns nil on
  /// success, else the block level that could not be found.
  mutating func fill(_ u: Int) -> Int? {
    var deficit = Int(units[u].target) - activePorts(u)
    guard deficit > 0 else { return nil }
    let p = units[u].pool
    var prefer = firstActiveSlot(u)
    let before = units[u].blocks.count
    while deficit > 0 {
      let size = min(1 << (Int.bitWidth - 1 - deficit.leadingZeroBitCount), NATPorts.maxBlockSize)
      let level = size.trailingZeroBitCount
      guard let block = allocate(level: level, pool: p, prefer: prefer) else {
        while units[u].blocks.count > before { freeBlock(units[u].blocks.removeLast(), quarantined: false) }
        return level
      }
      units[u].blocks.append(block)
      if prefer == nil { prefer = block.slot }
      deficit -= size
    }
    markChanged(record: units[u].instance)
    return nil
  }

  /// Gives back active ports above the target (see `surplus(of:excess:)`).
  mutating func trim(_ u: Int, reason: QuarantinedBlock.Reason) {
    let excess = activePorts(u) - Int(units[u].target)
    guard excess > 0 else { return }
    let plan = surplus(of: units[u].blocks, excess: excess)
    units[u].blocks = plan.kept
    for (block, split) in plan.released { moveToQuarantine(block, from: u, reason: reason, split: split) }
    markChanged(record: units[u].instance)
  }

  /// Fills the unit or puts it at the back of its gateway's waiting queue.
  mutating func fillOrWait(_ u: Int) {
    guard units[u].pendingSeq == nil, fill(u) != nil else { return }
    let p = units[u].pool
    units[u].pendingSeq = nextPendingSeq
    pools[p].pending.append(PendingEntry(seq: nextPendingSeq, unit: Int32(u)))
    nextPendingSeq += 1
    markChanged(record: units[u].instance)
    if pools[p].stalePending > 64 && pools[p].stalePending * 2 > pools[p].pending.count { compactPending(p) }
  }

  mutating func compactPending(_ p: PoolID) {
    pools[p].pending.removeAll { entry in
      let unit = units[Int(entry.unit)]
      return !unit.live || unit.pendingSeq != entry.seq
    }
    pools[p].stalePending = 0
  }

  /// Serves waiting units in arrival order. Once a block level cannot be found, units needing
  /// that level or more are not tried again in this pass.
  mutating func servePending(_ p: PoolID) {
    guard !pools[p].pending.isEmpty else { return }
    let queue = pools[p].pending
    pools[p].pending = []
    pools[p].stalePending = 0
    var remaining: [PendingEntry] = []
    var failedLevel = Int.max
    for entry in queue {
      let u = Int(entry.unit)
      guard units[u].live, units[u].pendingSeq == entry.seq, units[u].pool == p else { continue }
      let deficit = Int(units[u].target) - activePorts(u)
      if deficit <= 0 {
        units[u].pendingSeq = nil
        markChanged(record: units[u].instance)
        continue
      }
      let level = min(Int.bitWidth - 1 - deficit.leadingZeroBitCount, PortSpace.maxLevel)
      if level >= failedLevel {
        remaining.append(entry)
        continue
      }
      if let failed = fill(u) {
        failedLevel = min(failedLevel, failed)
        remaining.append(entry)
      } else {
        units[u].pendingSeq = nil
      }
    }
    pools[p].pending = remaining
  }

  /// Gives auto-allocated NAT IPs that hold nothing back to the regional pool.
  @discardableResult
  mutating func releaseIdleAutoAddresses(_ p: PoolID) -> Bool {
    guard pools[p].auto else { return false }
    var kept: [Int32] = []
    var released = false
    for s in pools[p].fillOrder {
      let i = Int(s)
      if slots[i].auto && slots[i].usedBlocks == 0 && slots[i].quarantinedBlocks == 0 {
        slots[i].pool = nil
        slots[i].position = -1
        dropSlotIfIdle(s)
        released = true
      } else {
        slots[i].position = Int32(kept.count)
        kept.append(s)
      }
    }
    if released {
      pools[p].fillOrder = kept
      resetHints(p)
    }
    return released
  }

  /// After ports came free: serve whoever waits, then hand back idle auto IPs (which may in turn
  /// let another auto gateway of the region serve its queue).
  mutating func settle() {
    let ids = pools.ids
    for p in ids { servePending(p) }
    var regions: Set<String> = []
    for p in ids where releaseIdleAutoAddresses(p) { regions.insert(pools[p].region) }
    if !regions.isEmpty {
      for p in ids where pools[p].auto && regions.contains(pools[p].region) { servePending(p) }
    }
  }

  func publicBlock(id: UInt64, _ entry: QuarantineEntry) -> QuarantinedBlock {
    QuarantinedBlock(id: id, range: range(entry.block), nic: entry.nic, host: entry.host, epoch: entry.epoch, reason: entry.reason)
  }

  func range(_ block: PortBlock) -> NATPortRange {
    NATPortRange(
      natIp: IPv4Address(slots[Int(block.slot)].address), firstPort: Int(block.offset),
      lastPort: Int(block.offset) + block.size - 1)
  }
}
