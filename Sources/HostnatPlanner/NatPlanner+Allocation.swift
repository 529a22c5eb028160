// Block-level mechanics shared by every change: taking and returning blocks, filling and trimming
// a unit, the waiting queue, auto-allocated NAT IPs and quarantine.

extension NatPlanner {
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
      slots[Int(s)] = NatIPSlot(address: address)
    } else {
      s = Int32(slots.count)
      slots.append(NatIPSlot(address: address))
    }
    slotByAddress[address] = s
    return s
  }

  /// Forgets an ownerless slot once nothing on it is owned or quarantined.
  mutating func dropSlotIfIdle(_ s: Int32) {
    let i = Int(s)
    guard slots[i].live, slots[i].owner < 0, slots[i].usedBlocks == 0, slots[i].quarantinedBlocks == 0 else { return }
    slotByAddress[slots[i].address] = nil
    slots[i].live = false
    slots[i].space = PortSpace()
    freeSlots.append(s)
  }

  mutating func appendToPool(_ g: Int, slot s: Int32) {
    slots[Int(s)].owner = Int32(g)
    slots[Int(s)].poolIndex = Int32(gateways[g].pool.count)
    gateways[g].pool.append(s)
  }

  mutating func resetHints(_ g: Int) {
    for l in gateways[g].hints.indices { gateways[g].hints[l] = 0 }
  }

  // MARK: Blocks

  @inline(__always)
  func isActive(_ block: PortBlock) -> Bool { !slots[Int(block.slot)].drained }

  func activePorts(_ u: Int) -> Int {
    var total = 0
    for block in units[u].blocks where !slots[Int(block.slot)].drained { total += block.size }
    return total
  }

  func firstActiveSlot(_ u: Int) -> Int32 {
    for block in units[u].blocks where !slots[Int(block.slot)].drained { return block.slot }
    return -1
  }

  @inline(__always)
  mutating func take(slot s: Int32, level: Int) -> PortBlock? {
    guard let offset = slots[Int(s)].space.allocate(level: level) else { return nil }
    slots[Int(s)].usedBlocks += 1
    return PortBlock(slot: s, offset: UInt16(offset), level: UInt8(level))
  }

  mutating func firstSlotWithSpace(_ g: Int, level: Int) -> Int32? {
    let count = gateways[g].pool.count
    var i = Int(gateways[g].hints[level])
    while i < count {
      let s = gateways[g].pool[i]
      if !slots[Int(s)].drained && slots[Int(s)].space.canAllocate(level: level) {
        gateways[g].hints[level] = Int32(i)
        return s
      }
      i += 1
    }
    gateways[g].hints[level] = Int32(count)
    return nil
  }

  /// The next address of the region's auto pool that no gateway holds, as a slot of `g`.
  mutating func takeAutoAddress(_ g: Int) -> Int32? {
    guard let pool = config.autoPools[gateways[g].region] else { return nil }
    for address in pool {
      if let s = slotByAddress[address] {
        guard slots[Int(s)].owner < 0 else { continue }
        slots[Int(s)].auto = true
        slots[Int(s)].drained = false
        appendToPool(g, slot: s)
        return s
      }
      let s = makeSlot(address: address)
      slots[Int(s)].auto = true
      appendToPool(g, slot: s)
      return s
    }
    return nil
  }

  /// A block of `level` for gateway `g`: on `prefer` if it has room, else the first NAT IP in
  /// pool order that does, else (AUTO_ONLY) a newly taken auto address.
  mutating func allocate(level: Int, gateway g: Int, prefer: Int32) -> PortBlock? {
    if prefer >= 0 {
      let p = Int(prefer)
      if slots[p].owner == Int32(g), !slots[p].drained, let block = take(slot: prefer, level: level) { return block }
    }
    if let s = firstSlotWithSpace(g, level: level), let block = take(slot: s, level: level) { return block }
    if gateways[g].auto {
      while let s = takeAutoAddress(g) {
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
    let g = Int(slots[s].owner)
    if g >= 0 {
      let position = slots[s].poolIndex
      for l in 1...merged where gateways[g].hints[l] > position { gateways[g].hints[l] = position }
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
      block: block, nic: NicRef(instance: record.spec.name, nicIndex: Int(unit.nic), gateway: gateways[Int(unit.gateway)].name),
      host: record.spec.host, epoch: epoch, reason: reason)
    newlyQuarantined.append(id)
  }

  // MARK: Units

  mutating func newUnit(record r: Int32, nic: Int32, gateway g: Int32, target: Int) -> Int32 {
    let unit = Unit(instance: r, nic: nic, gateway: g, target: Int32(target))
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
    if units[u].pendingSeq >= 0 { gateways[Int(units[u].gateway)].stalePending += 1 }
    units[u].pendingSeq = -1
    units[u].live = false
    markChanged(record: units[u].instance)
    let r = Int(units[u].instance)
    if let i = records[r].units.firstIndex(of: Int32(u)) { records[r].units.remove(at: i) }
    freeUnits.append(Int32(u))
  }

  /// Tops the unit up to its target with blocks, largest first, all or nothing. Returns 0 on
  /// success, else the block level that could not be found.
  mutating func fill(_ u: Int) -> Int {
    var deficit = Int(units[u].target) - activePorts(u)
    guard deficit > 0 else { return 0 }
    let g = Int(units[u].gateway)
    var prefer = firstActiveSlot(u)
    let before = units[u].blocks.count
    while deficit > 0 {
      let size = min(1 << (Int.bitWidth - 1 - deficit.leadingZeroBitCount), NatPorts.maxBlockSize)
      let level = size.trailingZeroBitCount
      guard let block = allocate(level: level, gateway: g, prefer: prefer) else {
        while units[u].blocks.count > before { freeBlock(units[u].blocks.removeLast(), quarantined: false) }
        return level
      }
      units[u].blocks.append(block)
      if prefer < 0 { prefer = block.slot }
      deficit -= size
    }
    markChanged(record: units[u].instance)
    return 0
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
    guard units[u].pendingSeq < 0, fill(u) != 0 else { return }
    let g = Int(units[u].gateway)
    units[u].pendingSeq = nextPendingSeq
    gateways[g].pending.append(PendingEntry(seq: nextPendingSeq, unit: Int32(u)))
    nextPendingSeq += 1
    markChanged(record: units[u].instance)
    if gateways[g].stalePending > 64 && gateways[g].stalePending * 2 > gateways[g].pending.count { compactPending(g) }
  }

  mutating func compactPending(_ g: Int) {
    gateways[g].pending.removeAll { entry in
      let unit = units[Int(entry.unit)]
      return !unit.live || unit.pendingSeq != entry.seq
    }
    gateways[g].stalePending = 0
  }

  /// Serves waiting units in arrival order. Once a block level cannot be found, units needing
  /// that level or more are not tried again in this pass.
  mutating func servePending(_ g: Int) {
    guard !gateways[g].pending.isEmpty else { return }
    let queue = gateways[g].pending
    gateways[g].pending = []
    gateways[g].stalePending = 0
    var remaining: [PendingEntry] = []
    var failedLevel = Int.max
    for entry in queue {
      let u = Int(entry.unit)
      guard units[u].live, units[u].pendingSeq == entry.seq, units[u].gateway == Int32(g) else { continue }
      let deficit = Int(units[u].target) - activePorts(u)
      if deficit <= 0 {
        units[u].pendingSeq = -1
        markChanged(record: units[u].instance)
        continue
      }
      let level = min(Int.bitWidth - 1 - deficit.leadingZeroBitCount, PortSpace.maxLevel)
      if level >= failedLevel {
        remaining.append(entry)
        continue
      }
      let failed = fill(u)
      if failed == 0 {
        units[u].pendingSeq = -1
      } else {
        failedLevel = min(failedLevel, failed)
        remaining.append(entry)
      }
    }
    gateways[g].pending = remaining
  }

  /// Gives auto-allocated NAT IPs that hold nothing back to the regional pool.
  @discardableResult
  mutating func releaseIdleAutoAddresses(_ g: Int) -> Bool {
    guard gateways[g].auto else { return false }
    var kept: [Int32] = []
    var released = false
    for s in gateways[g].pool {
      let i = Int(s)
      if slots[i].auto && slots[i].usedBlocks == 0 && slots[i].quarantinedBlocks == 0 {
        slots[i].owner = -1
        slots[i].poolIndex = -1
        dropSlotIfIdle(s)
        released = true
      } else {
        slots[i].poolIndex = Int32(kept.count)
        kept.append(s)
      }
    }
    if released {
      gateways[g].pool = kept
      resetHints(g)
    }
    return released
  }

  /// After ports came free: serve whoever waits, then hand back idle auto IPs (which may in turn
  /// let another auto gateway of the region serve its queue).
  mutating func settle() {
    for g in gateways.indices { servePending(g) }
    var regions: Set<String> = []
    for g in gateways.indices where releaseIdleAutoAddresses(g) { regions.insert(gateways[g].region) }
    if !regions.isEmpty {
      for g in gateways.indices where gateways[g].auto && regions.contains(gateways[g].region) { servePending(g) }
    }
  }

  func publicBlock(id: UInt64, _ entry: QuarantineEntry) -> QuarantinedBlock {
    QuarantinedBlock(id: id, range: range(entry.block), nic: entry.nic, host: entry.host, epoch: entry.epoch, reason: entry.reason)
  }

  func range(_ block: PortBlock) -> NatPortRange {
    NatPortRange(
      natIp: PlannerIPv4Address(slots[Int(block.slot)].address), firstPort: Int(block.offset),
      lastPort: Int(block.offset) + block.size - 1)
  }
}
