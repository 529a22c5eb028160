import HostnatAddressing

/// The planner's allocations, serialisable, so that a controller can restart (or a standby take
/// over) and plan again without moving anyone's ports: `NATPlanner(intent:restoring:)`.
///
/// Order is meaningful: NAT IPs are listed in each gateway's fill order, a NIC's blocks in the
/// order it received them (the last ones are given back first), `waitingOrder` is the queue
/// position of a NIC left without ports.
public struct NATPlannerSnapshot: Hashable, Sendable, Codable {
  public var epoch: UInt64
  public var nextQuarantineID: UInt64
  public var natIps: [NATIP]
  public var allocations: [Allocation]
  public var quarantine: [Quarantined]

  /// A NAT IP the planner knows and which gateway holds it.
  public struct NATIP: Hashable, Sendable, Codable {
    public var address: String
    /// nil while only quarantined blocks keep the address known.
    public var gateway: String?
    public var auto: Bool
    public var drained: Bool
    /// The NAT rule of `gateway` the address belongs to; nil for the gateway's default NAT IPs
    /// (and in snapshots written before NAT rules existed).
    public var ruleNumber: Int? = nil
  }

  /// An aligned port block: `size` ports from `firstPort`.
  public struct Block: Hashable, Sendable, Codable {
    public var natIp: String
    public var firstPort: Int
    public var size: Int
  }

  /// One NIC's blocks on one gateway.
  public struct Allocation: Hashable, Sendable, Codable {
    public var instance: String
    public var host: String
    public var nicIndex: Int
    public var gateway: String
    public var targetPorts: Int
    public var waitingOrder: Int64?
    public var blocks: [Block]
    /// The NIC's ports on this NAT rule's IPs; nil for the gateway's default NAT IPs (and in
    /// snapshots written before NAT rules existed).
    public var ruleNumber: Int? = nil
  }

  /// A block waiting for `releaseQuarantined`.
  public struct Quarantined: Hashable, Sendable, Codable {
    public var id: UInt64
    public var block: Block
    public var instance: String
    public var nicIndex: Int
    public var gateway: String
    public var host: String
    public var epoch: UInt64
    public var reason: QuarantinedBlock.Reason
  }
}

extension NATPlanner {
  /// The current allocations; see `NATPlannerSnapshot`.
  public func snapshot() -> NATPlannerSnapshot {
    func block(_ b: PortBlock) -> NATPlannerSnapshot.Block {
      NATPlannerSnapshot.Block(natIp: IPv4Address(slots[Int(b.slot)].address).description, firstPort: Int(b.offset), size: b.size)
    }
    var natIps: [NATPlannerSnapshot.NATIP] = []
    for p in pools.ids {
      let pool = pools[p]
      for s in pool.fillOrder {
        let slot = slots[Int(s)]
        natIps.append(
          .init(
            address: IPv4Address(slot.address).description, gateway: pool.name, auto: slot.auto, drained: slot.drained,
            ruleNumber: pool.ruleNumber.map(Int.init)))
      }
    }
    for slot in slots.filter({ $0.live && $0.pool == nil }).sorted(by: { $0.address < $1.address }) {
      natIps.append(.init(address: IPv4Address(slot.address).description, gateway: nil, auto: false, drained: false))
    }
    var allocations: [NATPlannerSnapshot.Allocation] = []
    for record in records.filter(\.live).sorted(by: { $0.arrival < $1.arrival }) {
      for u in record.units.sorted(by: { (units[Int($0)].nic, units[Int($0)].pool) < (units[Int($1)].nic, units[Int($1)].pool) }) {
        let unit = units[Int(u)]
        allocations.append(
          .init(
            instance: record.spec.name, host: record.spec.host, nicIndex: Int(unit.nic), gateway: pools[unit.pool].name,
            targetPorts: Int(unit.target), waitingOrder: unit.pendingSeq, blocks: unit.blocks.map(block),
            ruleNumber: pools[unit.pool].ruleNumber.map(Int.init)))
      }
    }
    let quarantine = quarantineEntries.sorted { $0.key < $1.key }.map { id, entry in
      NATPlannerSnapshot.Quarantined(
        id: id, block: block(entry.block), instance: entry.nic.instance, nicIndex: entry.nic.nicIndex, gateway: entry.nic.gateway,
        host: entry.host, epoch: entry.epoch, reason: entry.reason)
    }
    return NATPlannerSnapshot(epoch: epoch, nextQuarantineID: nextQuarantineID, natIps: natIps, allocations: allocations, quarantine: quarantine)
  }

  /// A planner holding only a snapshot's allocations, with placeholder instances and gateways
  /// that the next `apply(_ intent:)` fills in (or removes).
  init(snapshot: NATPlannerSnapshot) throws(PlannerValidationError) {
    self.init()
    epoch = snapshot.epoch
    nextQuarantineID = snapshot.nextQuarantineID
    var poolByKey: [PoolKey: PoolID] = [:]
    /// The pool of `name` and `rule` (nil: the default pool), made on first use. `field` names
    /// the rule number for an error.
    func pool(_ name: String, rule: Int?, auto: Bool, field: @autoclosure () -> String) throws(PlannerValidationError) -> PoolID {
      if let rule, !NATRule.validNumbers.contains(rule) {
        throw fail(field(), "must be between \(NATRule.validNumbers.lowerBound) and \(NATRule.validNumbers.upperBound) (got \(rule))")
      }
      let key = PoolKey(gateway: name, rule: rule.map(Int32.init))
      if let p = poolByKey[key] { return p }
      let p = pools.append(PoolState(name: name, ruleNumber: key.rule, auto: auto, region: "", policy: nil), rule: rule != nil)
      poolByKey[key] = p
      return p
    }
    func parseBlock(_ b: NATPlannerSnapshot.Block, field: String) throws(PlannerValidationError) -> (slot: Int32, offset: Int, level: Int) {
      guard let address = IPv4Address(b.natIp), let s = slotByAddress[address.value] else {
        throw fail("\(field).natIp", "'\(b.natIp)' is not one of the snapshot's NAT IPs")
      }
      guard b.size.nonzeroBitCount == 1, (NATPorts.minBlockSize...NATPorts.maxBlockSize).contains(b.size) else {
        throw fail("\(field).size", "must be a power of two between 2 and 32768 (got \(b.size))")
      }
      return (s, b.firstPort, b.size.trailingZeroBitCount)
    }

    for (i, ip) in snapshot.natIps.enumerated() {
      guard let address = IPv4Address(ip.address) else { throw fail("snapshot.natIps[\(i)].address", "'\(ip.address)' is not an IPv4 address") }
      guard slotByAddress[address.value] == nil else { throw fail("snapshot.natIps[\(i)].address", "\(ip.address) is listed twice") }
      let s = makeSlot(address: address.value)
      if let name = ip.gateway {
        slots[Int(s)].auto = ip.auto
        slots[Int(s)].drained = ip.drained
        let p = try pool(name, rule: ip.ruleNumber, auto: ip.auto, field: "snapshot.natIps[\(i)].ruleNumber")
        appendToPool(p, slot: s)
      }
    }

    for (i, allocation) in snapshot.allocations.enumerated() {
      let field = "snapshot.allocations[\(i)]"
      let r: Int32
      if let existing = recordIDs[allocation.instance] {
        r = existing
      } else {
        r = Int32(records.count)
        records.append(InstanceRecord(spec: Instance(name: allocation.instance, host: allocation.host, networkInterfaces: []), arrival: nextArrival, nics: []))
        nextArrival += 1
        recordIDs[allocation.instance] = r
      }
      let p = try pool(allocation.gateway, rule: allocation.ruleNumber, auto: false, field: "\(field).ruleNumber")
      if records[Int(r)].units.contains(where: { units[Int($0)].nic == Int32(allocation.nicIndex) && units[Int($0)].pool == p }) {
        throw fail(
          field,
          "a second allocation for \(allocation.instance) nic\(allocation.nicIndex) on gateway \(allocation.gateway)\(allocation.ruleNumber.map { " rule \($0)" } ?? "")")
      }
      guard allocation.nicIndex >= 0 else { throw fail("\(field).nicIndex", "must not be negative") }
      guard allocation.targetPorts.nonzeroBitCount == 1, (2...65536).contains(allocation.targetPorts) else {
        throw fail("\(field).targetPorts", "must be a power of two between 2 and 65536")
      }
      let u = Int(newUnit(record: r, nic: Int32(allocation.nicIndex), pool: p, target: allocation.targetPorts))
      for (j, b) in allocation.blocks.enumerated() {
        let blockField = "\(field).blocks[\(j)]"
        let (s, offset, level) = try parseBlock(b, field: blockField)
        guard slots[Int(s)].pool == p else {
          throw fail("\(blockField).natIp", "\(b.natIp) is not a NAT IP of gateway \(allocation.gateway)\(allocation.ruleNumber.map { " rule \($0)" } ?? "")")
        }
        guard slots[Int(s)].space.allocate(offset: offset, level: level) else {
          throw fail(blockField, "\(b.natIp):\(offset)-\(offset + b.size - 1) is misaligned, outside 1024-65535 or overlaps another block")
        }
        slots[Int(s)].usedBlocks += 1
        units[u].blocks.append(PortBlock(slot: s, offset: UInt16(offset), level: UInt8(level)))
      }
      if let order = allocation.waitingOrder {
        units[u].pendingSeq = order
        pools[p].pending.append(PendingEntry(seq: order, unit: Int32(u)))
        nextPendingSeq = max(nextPendingSeq, order + 1)
      }
    }
    for p in pools.ids { pools[p].pending.sort { $0.seq < $1.seq } }

    for (i, entry) in snapshot.quarantine.enumerated() {
      let field = "snapshot.quarantine[\(i)]"
      guard quarantineEntries[entry.id] == nil else { throw fail("\(field).id", "id \(entry.id) is used twice") }
      let (s, offset, level) = try parseBlock(entry.block, field: "\(field).block")
      guard slots[Int(s)].space.allocate(offset: offset, level: level) else {
        throw fail("\(field).block", "\(entry.block.natIp):\(offset) is misaligned, outside 1024-65535 or overlaps another block")
      }
      slots[Int(s)].quarantinedBlocks += 1
      quarantineEntries[entry.id] = QuarantineEntry(
        block: PortBlock(slot: s, offset: UInt16(offset), level: UInt8(level)),
        nic: NICRef(instance: entry.instance, nicIndex: entry.nicIndex, gateway: entry.gateway), host: entry.host, epoch: entry.epoch,
        reason: entry.reason)
      nextQuarantineID = max(nextQuarantineID, entry.id + 1)
    }
    for s in slots.indices { dropSlotIfIdle(Int32(s)) }
  }

  /// Internal consistency, for tests: every NAT IP's free space and owned blocks (held or
  /// quarantined) partition ports 1024–65535 exactly, and the bookkeeping agrees.
  func consistencyViolations() -> [String] {
    var problems: [String] = []
    var owned = [[PortBlock]](repeating: [], count: slots.count)
    var used = [Int32](repeating: 0, count: slots.count)
    for (u, unit) in units.enumerated() where unit.live {
      for block in unit.blocks {
        owned[Int(block.slot)].append(block)
        used[Int(block.slot)] += 1
        if slots[Int(block.slot)].pool != unit.pool { problems.append("unit \(u) holds a block on a NAT IP of another gateway") }
      }
      if unit.pendingSeq == nil && activePorts(u) != Int(unit.target) { problems.append("unit \(u) is not waiting but has \(activePorts(u)) of \(unit.target) ports") }
    }
    var quarantined = [Int32](repeating: 0, count: slots.count)
    for entry in quarantineEntries.values {
      owned[Int(entry.block.slot)].append(entry.block)
      quarantined[Int(entry.block.slot)] += 1
    }
    for (s, slot) in slots.enumerated() where slot.live {
      let blocks = owned[s].sorted { $0.offset < $1.offset }
      var end = NATPorts.firstPort
      var total = 0
      for block in blocks {
        if Int(block.offset) < end { problems.append("\(IPv4Address(slot.address)): block at \(block.offset) overlaps") }
        if slot.space.isFree(offset: Int(block.offset), level: Int(block.level)) { problems.append("\(IPv4Address(slot.address)): owned block \(block.offset) is marked free") }
        end = Int(block.offset) + block.size
        total += block.size
      }
      if total + slot.space.freePorts != NATPorts.usablePortsPerIp {
        problems.append("\(IPv4Address(slot.address)): \(total) owned + \(slot.space.freePorts) free != 64512")
      }
      if used[s] != slot.usedBlocks || quarantined[s] != slot.quarantinedBlocks {
        problems.append("\(IPv4Address(slot.address)): block counts \(slot.usedBlocks)/\(slot.quarantinedBlocks), actual \(used[s])/\(quarantined[s])")
      }
      if let p = slot.pool, pools[p].fillOrder[Int(slot.position)] != Int32(s) { problems.append("\(IPv4Address(slot.address)): pool index is stale") }
    }
    return problems
  }
}
