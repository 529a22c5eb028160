import HostnatAddressing
import HostnatPackets

/// Which NAT events a VM's gateway logs, from its `LoggingConfig`.
struct LogEvents: OptionSet {
  let rawValue: UInt8
  /// New translations (Cloud NAT's `OK` entries).
  static let translations = LogEvents(rawValue: 1 << 0)
  /// Drops that belong to the VM (Cloud NAT's `DROPPED` entries).
  static let drops = LogEvents(rawValue: 1 << 1)

  init(rawValue: UInt8) { self.rawValue = rawValue }

  init(_ logging: LoggingConfig) {
    guard logging.enabled else {
      self = []
      return
    }
    switch logging.filter {
    case .all: self = [.translations, .drops]
    case .errorsOnly: self = .drops
    case .translationsOnly: self = .translations
    }
  }
}

/// Per-VM settings flattened to plain data for the packet path.
struct CompiledVM {
  var primaryIP: UInt32
  var externalIP: UInt32
  var hasExternalIP: Bool
  var endpointIndependent: Bool
  var logEvents: LogEvents
  var blockStart: Int
  var blockCount: Int
  var drainedStart: Int
  var drainedCount: Int
  /// The VM's port groups (one per NAT rule number its blocks use, 0 = default IPs), by rule number.
  var groupStart: Int
  var groupCount: Int
  /// The gateway's NAT rules in `natRules`, by rule number.
  var ruleStart: Int
  var ruleCount: Int
  /// NAT rules or blocks on rule IPs exist, so a flow's rule must be re-checked on a config change.
  var hasRules: Bool
  var udpTimeout: UInt64
  var icmpTimeout: UInt64
  var tcpEstablished: UInt64
  var tcpTransitory: UInt64
  var tcpTimeWait: UInt64
  /// Index into `CompiledConfig.policies.networks`, or -1: no firewall, routes or PGA.
  var network: Int
  var privateGoogleAccess: Bool
  /// The VM's tags as bits of its network's target tags (`CompiledPolicies.tagMask`).
  var tags: UInt64
}

struct CompiledBlock {
  var natIP: UInt32
  var start: UInt32
  var count: UInt32
  var drained: Bool
  /// Index of the block's first port in each protocol class's slice of `portRefs`.
  var portBase: UInt32
  var vm: UInt32
  /// The block's port group (`CompiledConfig.groups`) and NAT rule number (0 = default IPs).
  var group: UInt32
  var rule: Int
}

/// The blocks of one VM on one NAT rule's IPs (or on the default IPs): the space a new connection
/// under that rule draws its NAT IP:port from. A VM's blocks are ordered by group.
struct CompiledGroup {
  var ruleNumber: Int
  var blockStart: Int
  var blockCount: Int
  /// Ports on non-drained blocks: the space new mappings are drawn from.
  var activePorts: UInt32
}

/// A NAT rule's match, its destination ranges a slice of `CompiledConfig.natRuleRanges`.
struct CompiledNATRule {
  var ruleNumber: Int
  var rangeStart: Int
  var rangeCount: Int
}

/// A validated configuration. Built off the packet path by `apply`, then swapped in with one
/// reference assignment, so a packet sees either the old or the new config, never a mix. Only the
/// counters and the EIM port-use state (`portRefs`, `mappedPorts`) change after the swap.
final class CompiledConfig {
  let ids: [String]
  let vms: UnsafeMutableBufferPointer<CompiledVM>
  let blocks: UnsafeMutableBufferPointer<CompiledBlock>
  let groups: UnsafeMutableBufferPointer<CompiledGroup>
  let natRules: UnsafeMutableBufferPointer<CompiledNATRule>
  let natRuleRanges: UnsafeMutableBufferPointer<(UInt32, UInt32)>
  let drained: UnsafeMutableBufferPointer<UInt32>
  /// NAT source ranges sorted by first address: (first, last, vm).
  let natRanges: UnsafeMutableBufferPointer<(UInt32, UInt32, Int)>
  /// 1:1 NAT: primary → vm and external → vm, sorted by address.
  let byPrimary: UnsafeMutableBufferPointer<(UInt32, Int)>
  let byExternal: UnsafeMutableBufferPointer<(UInt32, Int)>
  let counters: UnsafeMutableBufferPointer<VMCounters>
  let logUnattributedDrops: Bool
  /// Some VM's network has a policy: only then do new flows and inbound misses consult it.
  let hasPolicies: Bool
  let policies: PolicyTables
  /// Every VM's primary IP → vm, sorted: finds the VM of a source outside all NAT ranges (e.g. for
  /// Private Google Access without Cloud NAT for the primary range).
  let byAnyPrimary: UnsafeMutableBufferPointer<(UInt32, Int)>

  // EIM port preference (see `NATEngine.pickPort`).
  //
  // Why here and not in the region: this is derived state, a pure function of the region's
  // mapping table and the block layout of this config, so it is rebuilt (`rebuildPortUse`) when the
  // engine attaches to a region and on `apply`, and keeping it out of the region leaves the region
  // format (and bytes_per_flow) unchanged. It is indexed by the config's own block layout, which a
  // region could not be. Only mapping creation/deletion touches it (never the established path).
  //
  // Why a per-port count and not a bitmap: a port stays "mapped" until its *last* mapping goes, so
  // deletions need a count; UInt16 (6 bytes per configured port for TCP+UDP+ICMP) keeps a fully
  // allocated NAT IP at ~390 KB. A count never exceeds UInt16.max because new mappings skip ports
  // whose count is saturated; should a rebuild ever meet one, the count sticks at the maximum until
  // the next rebuild (the port is merely avoided, nothing breaks).

  /// Live EIM mappings per (protocol class, configured port): `portRefs[cls * totalPorts + portBase
  /// + (port - start)]`. Drained blocks are included (their mappings still count).
  let portRefs: UnsafeMutableBufferPointer<UInt16>
  let totalPorts: Int
  /// Per (port group, protocol class): how many ports of the group's *active* blocks have a non-zero
  /// count. When it reaches `activePorts`, no unmapped port is left and new mappings fall back to sharing.
  let mappedPorts: UnsafeMutableBufferPointer<UInt32>
  /// Block indexes sorted by (NAT IP, first port), to find the block of a mapping's NAT IP:port.
  let blocksByAddress: UnsafeMutableBufferPointer<Int>
  /// Blocks in the config: the buffers above hold at least one slot even when there are none
  /// (a fenced host has no block), so their capacity is not the count.
  let blockCount: Int

  static func ns(_ d: Duration) -> UInt64 {
    let (s, atto) = d.components
    guard s >= 0 else { return 0 }
    return UInt64(s) &* 1_000_000_000 &+ UInt64(atto / 1_000_000_000)
  }

  init(_ config: EngineConfig, previous: CompiledConfig?) throws(EngineError) {
    guard config.vms.count < Int(UInt16.max) else { throw .tooManyVMs(config.vms.count) }
    var seen: [String: Int] = [:]
    var vms: [CompiledVM] = []
    var blocks: [CompiledBlock] = []
    var drained: [UInt32] = []
    var ranges: [(UInt32, UInt32, Int)] = []
    var primaries: [(UInt32, Int)] = []
    var externals: [(UInt32, Int)] = []
    var allBlocks: [(ip: UInt32, start: Int, end: Int, vm: Int)] = []
    var totalPorts = 0
    var groups: [CompiledGroup] = []
    var natRules: [CompiledNATRule] = []
    var natRuleRanges: [(UInt32, UInt32)] = []
    var policies = CompiledPolicies()
    var anyPrimaries: [(UInt32, Int)] = []
    for (index, vm) in config.vms.enumerated() {
      let network = try policies.network(named: vm.network, in: config.networks)
      anyPrimaries.append((vm.primaryIP.value, index))
      guard seen.updateValue(index, forKey: vm.id) == nil else { throw .duplicateVM(id: vm.id) }
      let drainedSet = Set(vm.gateway.drainedNatIPs.map(\.value))
      let blockStart = blocks.count
      let groupStart = groups.count
      // Stable, so a VM without NAT rules keeps its blocks (and port choices) in config order.
      let ordered = vm.portBlocks.enumerated().sorted { ($0.element.ruleNumber, $0.offset) < ($1.element.ruleNumber, $1.offset) }
      for (_, block) in ordered {
        guard block.ports.lowerBound >= 1024, block.ports.upperBound <= 65536, !block.ports.isEmpty else {
          throw .portBlockOutOfRange(vm: vm.id, ports: block.ports)
        }
        if groups.count == groupStart || groups[groups.count - 1].ruleNumber != block.ruleNumber {
          groups.append(CompiledGroup(ruleNumber: block.ruleNumber, blockStart: blocks.count, blockCount: 0, activePorts: 0))
        }
        let isDrained = drainedSet.contains(block.natIP.value)
        blocks.append(
          CompiledBlock(
            natIP: block.natIP.value, start: UInt32(block.ports.lowerBound), count: UInt32(block.ports.count),
            drained: isDrained, portBase: UInt32(totalPorts), vm: UInt32(index), group: UInt32(groups.count - 1),
            rule: block.ruleNumber))
        groups[groups.count - 1].blockCount += 1
        if !isDrained { groups[groups.count - 1].activePorts += UInt32(block.ports.count) }
        totalPorts += block.ports.count
        allBlocks.append((block.natIP.value, block.ports.lowerBound, block.ports.upperBound, index))
      }
      let ruleStart = natRules.count
      var ruleNumbers = Set<Int>()
      for rule in vm.gateway.rules.sorted(by: { $0.ruleNumber < $1.ruleNumber }) {
        guard rule.ruleNumber >= 1, ruleNumbers.insert(rule.ruleNumber).inserted else {
          throw .invalidNatRule(vm: vm.id, ruleNumber: rule.ruleNumber)
        }
        natRules.append(CompiledNATRule(ruleNumber: rule.ruleNumber, rangeStart: natRuleRanges.count, rangeCount: rule.destinations.count))
        for d in rule.destinations { natRuleRanges.append((d.first.value, d.last.value)) }
      }
      let drainedStart = drained.count
      drained.append(contentsOf: drainedSet.sorted())
      for range in vm.natSourceRanges { ranges.append((range.first.value, range.last.value, index)) }
      if let external = vm.externalIP {
        primaries.append((vm.primaryIP.value, index))
        externals.append((external.value, index))
      }
      let t = vm.gateway.timeouts
      vms.append(
        CompiledVM(
          primaryIP: vm.primaryIP.value, externalIP: vm.externalIP?.value ?? 0, hasExternalIP: vm.externalIP != nil,
          endpointIndependent: vm.gateway.endpointIndependentMapping, logEvents: LogEvents(vm.gateway.logging), blockStart: blockStart,
          blockCount: blocks.count - blockStart, drainedStart: drainedStart, drainedCount: drained.count - drainedStart,
          groupStart: groupStart, groupCount: groups.count - groupStart, ruleStart: ruleStart,
          ruleCount: natRules.count - ruleStart,
          hasRules: natRules.count > ruleStart || groups[groupStart...].contains { $0.ruleNumber != 0 },
          udpTimeout: Self.ns(t.udp), icmpTimeout: Self.ns(t.icmp),
          tcpEstablished: Self.ns(t.tcpEstablished), tcpTransitory: Self.ns(t.tcpTransitory),
          tcpTimeWait: Self.ns(t.tcpTimeWait), network: network, privateGoogleAccess: vm.privateGoogleAccess,
          tags: policies.tagMask(vm.tags, network: network)))
    }
    allBlocks.sort { ($0.ip, $0.start) < ($1.ip, $1.start) }
    for (a, b) in zip(allBlocks, allBlocks.dropFirst()) where a.ip == b.ip && b.start < a.end {
      throw .overlappingPortBlocks(vm: config.vms[a.vm].id, other: config.vms[b.vm].id, natIP: IPv4Address(a.ip))
    }
    ranges.sort { $0.0 < $1.0 }
    for (a, b) in zip(ranges, ranges.dropFirst()) where b.0 <= a.1 {
      throw .overlappingSourceRanges(vm: config.vms[a.2].id, other: config.vms[b.2].id)
    }
    primaries.sort { $0.0 < $1.0 }
    externals.sort { $0.0 < $1.0 }
    for (a, b) in zip(externals, externals.dropFirst()) where a.0 == b.0 { throw .duplicateExternalIP(IPv4Address(a.0)) }
    for (a, b) in zip(primaries, primaries.dropFirst()) where a.0 == b.0 {
      throw .overlappingSourceRanges(vm: config.vms[a.1].id, other: config.vms[b.1].id)
    }

    ids = config.vms.map(\.id)
    self.vms = .allocate(capacity: max(vms.count, 1))
    _ = self.vms.initialize(from: vms)
    self.blocks = .allocate(capacity: max(blocks.count, 1))
    _ = self.blocks.initialize(from: blocks)
    self.groups = .allocate(capacity: max(groups.count, 1))
    _ = self.groups.initialize(from: groups)
    self.natRules = .allocate(capacity: max(natRules.count, 1))
    _ = self.natRules.initialize(from: natRules)
    self.natRuleRanges = .allocate(capacity: max(natRuleRanges.count, 1))
    _ = self.natRuleRanges.initialize(from: natRuleRanges)
    self.drained = .allocate(capacity: max(drained.count, 1))
    _ = self.drained.initialize(from: drained)
    natRanges = .allocate(capacity: max(ranges.count, 1))
    _ = natRanges.initialize(from: ranges)
    byPrimary = .allocate(capacity: max(primaries.count, 1))
    _ = byPrimary.initialize(from: primaries)
    byExternal = .allocate(capacity: max(externals.count, 1))
    _ = byExternal.initialize(from: externals)
    counters = .allocate(capacity: max(vms.count, 1))
    counters.initialize(repeating: VMCounters())
    self.totalPorts = totalPorts
    portRefs = .allocate(capacity: max(3 * totalPorts, 1))
    portRefs.initialize(repeating: 0)
    mappedPorts = .allocate(capacity: max(3 * groups.count, 1))
    mappedPorts.initialize(repeating: 0)
    blockCount = blocks.count
    blocksByAddress = .allocate(capacity: max(blocks.count, 1))
    _ = blocksByAddress.initialize(
      from: blocks.indices.sorted { (blocks[$0].natIP, blocks[$0].start) < (blocks[$1].natIP, blocks[$1].start) })
    // Counters follow the VM id across configs.
    if let previous {
      for (i, id) in previous.ids.enumerated() {
        if let j = seen[id] { counters[j] = previous.counters[i] }
      }
    }
    self.rangeCount = ranges.count
    self.primaryCount = primaries.count
    self.externalCount = externals.count
    logUnattributedDrops = config.logUnattributedDrops
    hasPolicies = !policies.networks.isEmpty
    self.policies = PolicyTables(policies)
    anyPrimaries.sort { $0.0 < $1.0 }
    byAnyPrimary = .allocate(capacity: max(anyPrimaries.count, 1))
    _ = byAnyPrimary.initialize(from: anyPrimaries)
  }

  let rangeCount: Int
  let primaryCount: Int
  let externalCount: Int

  deinit {
    vms.deallocate()
    blocks.deallocate()
    groups.deallocate()
    natRules.deallocate()
    natRuleRanges.deallocate()
    drained.deallocate()
    natRanges.deallocate()
    byPrimary.deallocate()
    byExternal.deallocate()
    counters.deallocate()
    portRefs.deallocate()
    mappedPorts.deallocate()
    blocksByAddress.deallocate()
    byAnyPrimary.deallocate()
    policies.deallocate()
  }

  // MARK: EIM port use

  /// Protocol class of the port-use state: TCP, UDP, ICMP echo (separate port spaces).
  @inline(__always)
  static func portClass(_ proto: UInt8) -> Int { proto == IPProtocol.tcp ? 0 : proto == IPProtocol.udp ? 1 : 2 }

  /// Index of the block (any VM, drained or not) holding natIP:port, or -1.
  func block(natIP: UInt32, port natPort: UInt16) -> Int {
    let port = UInt32(natPort)
    var lo = 0
    var hi = blockCount
    while lo < hi {
      let mid = (lo &+ hi) >> 1
      let b = blocks[blocksByAddress[mid]]
      if b.natIP < natIP || (b.natIP == natIP && b.start <= port) { lo = mid &+ 1 } else { hi = mid }
    }
    guard lo > 0 else { return -1 }
    let i = blocksByAddress[lo &- 1]
    let b = blocks[i]
    return b.natIP == natIP && port &- b.start < b.count ? i : -1
  }

  /// A mapping now uses port `port` of block `b`.
  @inline(__always)
  func retainPort(_ cls: Int, block b: Int, port: UInt16) {
    let blk = blocks[b]
    let i = cls &* totalPorts &+ Int(blk.portBase &+ (UInt32(port) &- blk.start))
    let c = portRefs[i]
    guard c != .max else { return }
    portRefs[i] = c &+ 1
    if c == 0 && !blk.drained { mappedPorts[Int(blk.group) &* 3 &+ cls] &+= 1 }
  }

  /// A mapping on natIP:port was deleted or moved away.
  func releasePort(_ proto: UInt8, natIP: UInt32, port: UInt16) {
    let b = block(natIP: natIP, port: port)
    guard b >= 0 else { return }  // the block is not in this config: nothing was counted
    let cls = Self.portClass(proto)
    let blk = blocks[b]
    let i = cls &* totalPorts &+ Int(blk.portBase &+ (UInt32(port) &- blk.start))
    let c = portRefs[i]
    guard c != .max, c != 0 else { return }
    portRefs[i] = c &- 1
    if c == 1 && !blk.drained { mappedPorts[Int(blk.group) &* 3 &+ cls] &-= 1 }
  }

  /// Recounts the port-use state from the region's mapping table (attach and `apply`; off the packet
  /// path, linear in the mapping table).
  func rebuildPortUse(from table: FlowTable) {
    portRefs.update(repeating: 0)
    mappedPorts.update(repeating: 0)
    guard totalPorts > 0 else { return }
    for i in 0...table.indexMask {
      let m = table.mappings[i]
      guard m.refAndProto != 0 else { continue }
      let b = block(natIP: m.natIP, port: m.natPort)
      if b >= 0 { retainPort(Self.portClass(UInt8(truncatingIfNeeded: m.refAndProto >> 24)), block: b, port: m.natPort) }
    }
  }

  /// VM whose NAT source ranges contain `address`, or -1.
  @inline(__always)
  func natVM(for address: UInt32) -> Int {
    var lo = 0
    var hi = rangeCount
    while lo < hi {
      let mid = (lo &+ hi) >> 1
      if natRanges[mid].0 <= address { lo = mid &+ 1 } else { hi = mid }
    }
    guard lo > 0 else { return -1 }
    let r = natRanges[lo &- 1]
    return address <= r.1 ? r.2 : -1
  }

  @inline(__always)
  static func find(_ table: UnsafeMutableBufferPointer<(UInt32, Int)>, count: Int, _ address: UInt32) -> Int {
    var lo = 0
    var hi = count
    while lo < hi {
      let mid = (lo &+ hi) >> 1
      if table[mid].0 < address { lo = mid &+ 1 } else { hi = mid }
    }
    return lo < count && table[lo].0 == address ? table[lo].1 : -1
  }

  func oneToOneVM(primary address: UInt32) -> Int { Self.find(byPrimary, count: primaryCount, address) }
  func oneToOneVM(external address: UInt32) -> Int { Self.find(byExternal, count: externalCount, address) }

  /// VM an internal address belongs to: its NAT source ranges, else its primary IP; or -1.
  func vm(internal address: UInt32) -> Int { vm(internal: address, natVM: natVM(for: address)) }

  /// `vm(internal:)` given `natVM(for: address)`.
  @inline(__always)
  func vm(internal address: UInt32, natVM v: Int) -> Int { v >= 0 ? v : Self.find(byAnyPrimary, count: ids.count, address) }

  /// Rule number of the NAT rule VM `vm` uses towards `destination`: the lowest-numbered rule whose
  /// destinations contain it, else 0 (the default NAT IPs).
  func natRule(vm: Int, destination: UInt32) -> Int {
    let v = vms[vm]
    for r in v.ruleStart..<(v.ruleStart &+ v.ruleCount) {
      let rule = natRules[r]
      if PolicyTables.inRanges(natRuleRanges, rule.rangeStart, rule.rangeCount, destination) { return rule.ruleNumber }
    }
    return 0
  }

  /// The VM's port group for rule number `rule`, or -1 (no blocks on that rule's IPs).
  func group(vm: Int, rule: Int) -> Int {
    let v = vms[vm]
    for g in v.groupStart..<(v.groupStart &+ v.groupCount) where groups[g].ruleNumber == rule { return g }
    return -1
  }

  static let anyRule = -2

  /// The rule a mapping or flow on natIP:port of VM `vm` belongs to: its block's rule; for a drained
  /// NAT IP whose block was dropped, the rule of the VM's other blocks on that IP, or `anyRule` when
  /// none is left to tell; -1 when the VM does not own natIP:port. The VM owns it (and may keep a flow
  /// on it) when the port is in one of its blocks (active or drained), or the NAT IP is drained for it
  /// (drained flows continue even if the block was dropped).
  func rule(vm: Int, natIP: UInt32, natPort: UInt16) -> Int {
    let v = vms[vm]
    let port = UInt32(natPort)
    var sameIP = -1
    for b in v.blockStart..<(v.blockStart + v.blockCount) {
      let block = blocks[b]
      guard block.natIP == natIP else { continue }
      if port >= block.start && port < block.start + block.count { return block.rule }
      sameIP = block.rule
    }
    guard isDrained(vm: vm, natIP: natIP) else { return -1 }
    return sameIP >= 0 ? sameIP : Self.anyRule
  }

  func isDrained(vm: Int, natIP: UInt32) -> Bool {
    let v = vms[vm]
    for d in v.drainedStart..<(v.drainedStart + v.drainedCount) where drained[d] == natIP { return true }
    return false
  }
}
