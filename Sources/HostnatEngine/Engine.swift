public import HostnatPackets

/// A flow as seen from outside the engine (tests, admin tools). Not used on the packet path.
public struct FlowSnapshot: Sendable, Hashable {
  public var protocolNumber: UInt8
  public var insideIP: IPv4Address
  public var insidePort: UInt16
  public var remoteIP: IPv4Address
  public var remotePort: UInt16
  public var natIP: IPv4Address
  public var natPort: UInt16
  public var expiresAt: UInt64
  public var vmID: String?

  public init(
    protocolNumber: UInt8, insideIP: IPv4Address, insidePort: UInt16, remoteIP: IPv4Address, remotePort: UInt16,
    natIP: IPv4Address, natPort: UInt16, expiresAt: UInt64, vmID: String?
  ) {
    self.protocolNumber = protocolNumber
    self.insideIP = insideIP
    self.insidePort = insidePort
    self.remoteIP = remoteIP
    self.remotePort = remotePort
    self.natIP = natIP
    self.natPort = natPort
    self.expiresAt = expiresAt
    self.vmID = vmID
  }
}

/// The host data plane's NAT: translates IPv4 packets in place between VMs and the Internet,
/// Cloud NAT style (endpoint-independent mapping, address-and-port-dependent filtering, per-VM port
/// blocks, drained NAT IPs, 1:1 external IPs, NAT rules), inside the VPC around the VMs (firewall
/// rules, custom routes, Private Google Access: see Policy.swift) for VMs whose network has a policy.
///
/// Single-threaded by design: one engine per packet-processing thread, no locks. The packet path
/// allocates nothing and touches only the flat flow region and the compiled config. The clock is an
/// argument (`now`, nanoseconds of any monotonic clock that survives with the region).
///
/// Refresh policy: outbound packets refresh every flow; inbound packets refresh TCP flows only
/// (their timeout follows the state the packet leaves, so established downloads stay alive and
/// FIN/RST shorten it); inbound UDP/ICMP never extend a mapping (RFC 4787 REQ-6 allows either).
/// Hairpinning is not done here: a packet to another VM's NAT IP leaves like any Internet packet.
public final class NATEngine {
  var table: FlowTable
  var config: CompiledConfig
  let ownedRegion: UnsafeMutableRawBufferPointer?
  public private(set) var globalCounters = GlobalCounters()
  let fragmentTable = FragmentTable()
  /// Connection state of the stateless paths (1:1, Private Google Access) for stateful firewalling.
  let connTrack = ConnTrackTable()
  /// Where log records go; nil disables logging regardless of the gateway settings.
  public var logSink: LogRing?

  /// Bytes a region for `capacity` flows needs.
  public static func regionSize(capacity: Int) -> Int { FlowTable.regionSize(capacity: capacity) }

  /// Allocates and owns a region for `capacity` flows.
  public convenience init(capacity: Int, config: EngineConfig = .init(), seed: UInt64 = 0x5EED) throws(EngineError) {
    guard capacity > 0, capacity < Int(UInt32.max / 4) else { throw .invalidCapacity(capacity) }
    let region = UnsafeMutableRawBufferPointer.allocate(byteCount: FlowTable.regionSize(capacity: capacity), alignment: 64)
    do {
      try self.init(formatting: region, capacity: capacity, config: config, seed: seed, owned: true)
    } catch {
      region.deallocate()
      throw error
    }
  }

  /// Formats an externally owned region (e.g. a mapped file) for `capacity` flows. The region must
  /// outlive the engine and be 8-byte aligned.
  public convenience init(
    formatting region: UnsafeMutableRawBufferPointer, capacity: Int, config: EngineConfig = .init(), seed: UInt64 = 0x5EED
  ) throws(EngineError) {
    try self.init(formatting: region, capacity: capacity, config: config, seed: seed, owned: false)
  }

  private init(
    formatting region: UnsafeMutableRawBufferPointer, capacity: Int, config: EngineConfig, seed: UInt64, owned: Bool
  ) throws(EngineError) {
    let compiled = try CompiledConfig(config, previous: nil)
    table = try FlowTable.format(region, capacity: capacity, seed: seed)
    self.config = compiled
    ownedRegion = owned ? region : nil
    table.generation = 1
  }

  /// Re-attaches to a region formatted earlier (by this or a previous process) and keeps its flows.
  /// Pass the current config: flows are re-checked against it lazily (on lookup and in `sweep`).
  /// The EIM port-use counts (see `pickPort`) are recounted from the region's mappings.
  public init(attaching region: UnsafeMutableRawBufferPointer, config: EngineConfig) throws(EngineError) {
    let compiled = try CompiledConfig(config, previous: nil)
    table = try FlowTable.attach(region)
    self.config = compiled
    ownedRegion = nil
    table.generation &+= 1
    compiled.rebuildPortUse(from: table)
  }

  deinit { ownedRegion?.deallocate() }

  // MARK: - Introspection

  public var capacity: Int { table.capacity }
  public var flowCount: Int { Int(table.flowCount) }
  public var mappingCount: Int { Int(table.mappingCount) }
  /// Size of the flow region in bytes.
  public var regionBytes: Int { table.bytes }

  /// The id of the VM at `index` in the config in force (log records carry indexes).
  public func vmID(at index: Int) -> String? { index >= 0 && index < config.ids.count ? config.ids[index] : nil }

  public func counters(forVM id: String) -> VMCounters? {
    guard let i = config.ids.firstIndex(of: id) else { return nil }
    return config.counters[i]
  }

  /// All live flows (allocates; for tests and tools).
  public func flows() -> [FlowSnapshot] {
    var out: [FlowSnapshot] = []
    for slot in 0..<Int(table.highWater) {
      let f = table.flows[slot]
      guard f.flags & FlowSlot.occupied != 0 else { continue }
      out.append(
        FlowSnapshot(
          protocolNumber: f.proto, insideIP: IPv4Address(f.insideIP), insidePort: f.insidePort,
          remoteIP: IPv4Address(f.remoteIP), remotePort: f.remotePort, natIP: IPv4Address(f.natIP), natPort: f.natPort,
          expiresAt: f.expiresAt, vmID: f.generation == table.generation ? vmID(at: Int(f.vmIndex)) : nil))
    }
    return out
  }

  // MARK: - Config

  /// Swaps in a new configuration. Validation and compilation happen before the swap; on error the
  /// old config stays. Flows are not walked here: each flow is re-checked against the new config the
  /// next time a packet or `sweep` touches it (still owned by its VM, or on a drained IP → kept;
  /// otherwise ended). The mapping table is scanned once (linear in capacity) to recount the EIM
  /// port-use state for the new block layout.
  public func apply(_ newConfig: EngineConfig, now: UInt64) throws(EngineError) {
    let compiled = try CompiledConfig(newConfig, previous: config)
    compiled.rebuildPortUse(from: table)
    config = compiled
    table.generation &+= 1
    table.sweepCursor = 0
  }

  // MARK: - Expiry

  /// Scans at most `budget` slots from where the previous call stopped, ending expired flows and
  /// re-checking flows against a newer config. Returns how many flows it ended.
  @discardableResult
  public func sweep(now: UInt64, budget: Int) -> Int {
    let hw = Int(table.highWater)
    guard hw > 0 else { return 0 }
    var cursor = Int(table.sweepCursor)
    var ended = 0
    for _ in 0..<min(budget, hw) {
      if cursor >= hw { cursor = 0 }
      if table.flows[cursor].flags & FlowSlot.occupied != 0, !isLive(cursor, now: now) { ended += 1 }
      cursor += 1
    }
    table.sweepCursor = UInt32(cursor)
    return ended
  }

  /// True when the flow may be used; otherwise it is removed (expired or no longer configured).
  @inline(__always)
  func isLive(_ slot: Int, now: UInt64) -> Bool {
    let f = table.flows[slot]
    if f.expiresAt <= now {
      removeFlow(slot)
      globalCounters.flowsExpired &+= 1
      return false
    }
    if f.generation != table.generation { return recheck(slot) }
    return true
  }

  /// Re-checks a flow made under an older config: kept (and re-attributed) while its VM still owns
  /// its NAT IP:port, its destination still goes through NAT and still selects the NAT rule of its
  /// NAT IP; otherwise ended. Routes apply to
  /// every packet in a VPC, so a flow whose destination is now routed to another next hop (or now
  /// reached through Private Google Access) cannot continue through NAT.
  @inline(never)
  func recheck(_ slot: Int) -> Bool {
    let f = table.flows[slot]
    let vm = config.natVM(for: f.insideIP)
    if vm >= 0 {
      let v = config.vms[vm]
      // -1: the VM no longer owns the flow's NAT IP:port.
      let r = config.rule(vm: vm, natIP: f.natIP, natPort: f.natPort)
      let p = config.policies
      if r != -1,
        v.network < 0 || p.usesNAT(p.networks[v.network], pga: v.privateGoogleAccess, f.remoteIP),
        // NAT rules are chosen per connection by destination: a flow on one rule's IPs cannot
        // continue once its destination belongs to another rule (or to the default IPs).
        !v.hasRules || r == CompiledConfig.anyRule || r == config.natRule(vm: vm, destination: f.remoteIP)
      {
        table.flows[slot].generation = table.generation
        table.flows[slot].vmIndex = UInt16(truncatingIfNeeded: vm)
        return true
      }
    }
    removeFlow(slot)
    globalCounters.flowsEndedByConfig &+= 1
    return false
  }

  func removeFlow(_ slot: Int) {
    let f = table.flows[slot]
    table.indexRemove(table.inside, hash: table.insideHash(f), slot: slot)
    table.indexRemove(table.outside, hash: table.outsideHash(f), slot: slot)
    if f.flags & FlowSlot.hasMapping != 0, table.releaseMapping(of: f) {
      config.releasePort(f.proto, natIP: f.natIP, port: f.natPort)
    }
    table.freeSlot(slot)
    table.flowCount &-= 1
  }

  @inline(__always)
  func flowTimeout(_ f: FlowSlot, _ vm: CompiledVM) -> UInt64 {
    switch f.proto {
    case IPProtocol.tcp: return TCPState.timeout(f.tcpState, vm)
    case IPProtocol.udp: return vm.udpTimeout
    default: return vm.icmpTimeout
    }
  }

  // MARK: - Packet path

  /// Parsed 5-tuple of a packet, from the sender's point of view.
  struct Tuple {
    var proto: UInt8
    var kind: UInt8  // 0 TCP, 1 UDP, 2 ICMP echo, 3 ICMP error
    var tcpFlags: UInt8
    var l4: Int
    var src: UInt32
    var dst: UInt32
    var srcPort: UInt16
    var dstPort: UInt16
  }

  static let kindTCP: UInt8 = 0
  static let kindUDP: UInt8 = 1
  static let kindEcho: UInt8 = 2
  static let kindError: UInt8 = 3

  /// Validates the headers the NAT reads. Returns nil and sets `reason` on failure.
  @inline(__always)
  func classify(_ ip: IPv4PacketView, reason: inout DropReason) -> Tuple? {
    if ip.isNonFirstFragment {
      reason = .fragment
      return nil
    }
    let b = ip.bytes
    let l4 = ip.headerLength
    let l4Length = b.count &- l4
    var t = Tuple(
      proto: ip.protocolNumber, kind: 0, tcpFlags: 0, l4: l4, src: b.loadBE32(at: 12), dst: b.loadBE32(at: 16),
      srcPort: 0, dstPort: 0)
    switch t.proto {
    case IPProtocol.tcp:
      guard l4Length >= 20 else { break }
      let dataOffset = Int(b[l4 &+ 12] >> 4) &* 4
      guard dataOffset >= 20, dataOffset <= l4Length else { break }
      t.srcPort = b.loadBE16(at: l4)
      t.dstPort = b.loadBE16(at: l4 &+ 2)
      t.tcpFlags = b[l4 &+ 13]
      return t
    case IPProtocol.udp:
      guard l4Length >= 8 else { break }
      guard ip.moreFragments || Int(b.loadBE16(at: l4 &+ 4)) == l4Length else { break }
      t.kind = Self.kindUDP
      t.srcPort = b.loadBE16(at: l4)
      t.dstPort = b.loadBE16(at: l4 &+ 2)
      return t
    case IPProtocol.icmp:
      guard l4Length >= 8 else { break }
      let type = b[l4]
      if ICMPType.isEcho(type) {
        t.kind = Self.kindEcho
        t.tcpFlags = type
        t.srcPort = b.loadBE16(at: l4 &+ 4)
        return t
      }
      if ICMPType.isError(type) {
        t.kind = Self.kindError
        return t
      }
      reason = .unsupportedProtocol
      return nil
    default:
      reason = .unsupportedProtocol
      return nil
    }
    reason = .malformed
    return nil
  }

  @inline(__always)
  func count(_ reason: DropReason) {
    switch reason {
    case .malformed: globalCounters.malformed &+= 1
    case .unsupportedProtocol: globalCounters.unsupportedProtocol &+= 1
    case .fragment: globalCounters.fragments &+= 1
    case .noNATConfigured: globalCounters.noNATConfigured &+= 1
    case .filteredInbound: globalCounters.filteredInbound &+= 1
    case .unmatchedICMPError: globalCounters.unmatchedICMPError &+= 1
    // Counted per VM (and by direction) where they happen.
    case .endpointIndependenceConflict, .outOfResources, .flowTableFull, .firewallDenied, .routedToNextHop: break
    }
  }

  func drop(_ reason: DropReason, _ t: Tuple?, now: UInt64) -> Verdict {
    count(reason)
    if config.logUnattributedDrops, let sink = logSink, let t {
      sink.append(
        LogRecord(
          timestamp: now, insideIP: IPv4Address(t.src), remoteIP: IPv4Address(t.dst), natIP: IPv4Address(0),
          insidePort: t.srcPort, remotePort: t.dstPort, natPort: 0, protocolNumber: t.proto, status: .dropped,
          reason: reason, vmIndex: nil))
    }
    return .drop(reason)
  }

  /// Rewrites the sender's address and port (outbound) with incremental checksum updates.
  @inline(__always)
  static func rewriteSource(_ b: UnsafeMutableRawBufferPointer, _ t: Tuple, ip newIP: UInt32, port newPort: UInt16) {
    let oldIP = t.src
    b.storeBE16(InternetChecksum.update(b.loadBE16(at: 10), old: oldIP, new: newIP), at: 10)
    b.storeBE32(newIP, at: 12)
    rewriteL4(b, t, portOffset: 0, oldIP: oldIP, newIP: newIP, oldPort: t.srcPort, newPort: newPort)
  }

  /// Rewrites the receiver's address and port (inbound).
  @inline(__always)
  static func rewriteDestination(_ b: UnsafeMutableRawBufferPointer, _ t: Tuple, ip newIP: UInt32, port newPort: UInt16) {
    let oldIP = t.dst
    b.storeBE16(InternetChecksum.update(b.loadBE16(at: 10), old: oldIP, new: newIP), at: 10)
    b.storeBE32(newIP, at: 16)
    rewriteL4(b, t, portOffset: 2, oldIP: oldIP, newIP: newIP, oldPort: t.dstPort, newPort: newPort)
  }

  @inline(__always)
  static func rewriteL4(
    _ b: UnsafeMutableRawBufferPointer, _ t: Tuple, portOffset: Int, oldIP: UInt32, newIP: UInt32, oldPort: UInt16,
    newPort: UInt16
  ) {
    let l4 = t.l4
    switch t.kind {
    case kindTCP:
      let c = b.loadBE16(at: l4 &+ 16)
      b.storeBE16(
        InternetChecksum.update(c, oldAddress: oldIP, newAddress: newIP, oldPort: oldPort, newPort: newPort), at: l4 &+ 16)
      b.storeBE16(newPort, at: l4 &+ portOffset)
    case kindUDP:
      let c = b.loadBE16(at: l4 &+ 6)
      if c != 0 {
        b.storeBE16(
          InternetChecksum.udpWire(
            InternetChecksum.update(c, oldAddress: oldIP, newAddress: newIP, oldPort: oldPort, newPort: newPort)),
          at: l4 &+ 6)
      }
      b.storeBE16(newPort, at: l4 &+ portOffset)
    default:
      // ICMP echo: the identifier is the "port"; the ICMP checksum has no pseudo-header.
      b.storeBE16(InternetChecksum.update(b.loadBE16(at: l4 &+ 2), old: oldPort, new: newPort), at: l4 &+ 2)
      b.storeBE16(newPort, at: l4 &+ 4)
    }
  }

  /// Translates one VM → Internet packet in place.
  public func translateOutbound(_ packet: UnsafeMutableRawBufferPointer, now: UInt64) -> Verdict {
    guard let ip = try? IPv4PacketView(validating: packet) else { return drop(.malformed, nil, now: now) }
    if ip.isNonFirstFragment { return laterFragment(ip, inbound: false, now: now) }
    var reason = DropReason.malformed
    guard let t = classify(ip, reason: &reason) else { return drop(reason, nil, now: now) }
    if t.kind == Self.kindError { return outboundICMPError(ip, t, now: now) }
    // A VM answers pings only from inside the VPC: an echo reply never creates a NAT flow.
    if t.kind == Self.kindEcho && t.tcpFlags != ICMPType.echoRequest { return outboundEchoReply(ip, t, now: now) }
    let b = ip.bytes

    var slot = table.findInside(proto: t.proto, insideIP: t.src, insidePort: t.srcPort, remoteIP: t.dst, remotePort: t.dstPort)
    if slot >= 0 && !isLive(slot, now: now) { slot = -1 }
    if slot < 0 {
      let oneToOne = config.primaryCount > 0 ? config.oneToOneVM(primary: t.src) : -1
      slot = createFlow(t, oneToOne: oneToOne, now: now, reason: &reason)
      if slot == -2 {
        let verdict = oneToOneOut(b, t, vm: oneToOne)
        if ip.moreFragments { firstFragment(ip, t, inbound: false, newIP: b.loadBE32(at: 12), now: now) }
        return verdict
      }
      if slot == -4 {
        if ip.moreFragments { firstFragment(ip, t, inbound: false, newIP: t.src, now: now) }
        return .forward
      }
      if slot == -5 {
        if ip.moreFragments { firstFragment(ip, t, inbound: false, newIP: t.src, inVPC: true, now: now) }
        return .forwardInVPC
      }
      if slot < 0 { return .drop(reason) }
    }
    let flows = table.flows
    var f = flows[slot]
    let vm = config.vms[Int(f.vmIndex)]
    if t.proto == IPProtocol.tcp { f.tcpState = TCPState.outbound(f.tcpState, flags: t.tcpFlags) }
    f.expiresAt = now &+ flowTimeout(f, vm)
    flows[slot].tcpState = f.tcpState
    flows[slot].expiresAt = f.expiresAt
    Self.rewriteSource(b, t, ip: f.natIP, port: f.natPort)
    if ip.moreFragments { firstFragment(ip, t, inbound: false, newIP: f.natIP, now: now) }
    let c = config.counters.baseAddress! + Int(f.vmIndex)
    c.pointee.packetsOut &+= 1
    c.pointee.bytesOut &+= UInt64(b.count)
    globalCounters.translatedOut &+= 1
    return .forward
  }

  @inline(never)
  func oneToOneOut(_ b: UnsafeMutableRawBufferPointer, _ t: Tuple, vm vmIndex: Int) -> Verdict {
    let vm = config.vms[vmIndex]
    Self.rewriteSource(b, t, ip: vm.externalIP, port: t.srcPort)
    globalCounters.oneToOneOut &+= 1
    return .forward
  }

  /// New flow for an outbound packet that matched none. `oneToOne` is the VM whose primary IP with
  /// 1:1 NAT is the source, or -1. Returns the slot, -1 (drop, `reason` set, counted and logged), -2
  /// (the source is a primary IP with 1:1 NAT: translate statelessly), -4 (Private Google Access:
  /// forward unchanged) or -5 (inside the VPC: forward unchanged through the fabric).
  @inline(never)
  func createFlow(_ t: Tuple, oneToOne: Int, now: UInt64, reason: inout DropReason) -> Int {
    let vmIndex = config.natVM(for: t.src)
    if config.hasPolicies {
      let r = egressPolicy(t, oneToOne: oneToOne, natVM: vmIndex, now: now, reason: &reason)
      if r != 0 { return r }
    }
    if oneToOne >= 0 { return -2 }
    guard vmIndex >= 0 else {
      reason = .noNATConfigured
      _ = drop(.noNATConfigured, t, now: now)
      return -1
    }
    let vm = config.vms[vmIndex]
    var natIP: UInt32 = 0
    var natPort: UInt16 = 0
    var block = -1
    var mapping = -1
    // NAT rules choose the NAT IPs by destination; without rules everything is rule 0 (default IPs).
    let rule = vm.ruleCount > 0 ? config.natRule(vm: vmIndex, destination: t.dst) : 0
    if vm.endpointIndependent {
      // An endpoint has one mapping per NAT rule it uses (each rule has its own IPs), all under the
      // same key; the rule of each is that of its block in this config.
      var stale = -1
      var i = table.findMapping(proto: t.proto, insideIP: t.src, insidePort: t.srcPort)
      while i >= 0 {
        let m = table.mappings[i]
        let r = config.rule(vm: vmIndex, natIP: m.natIP, natPort: m.natPort)
        if r == rule || r == CompiledConfig.anyRule {
          mapping = i
          break
        }
        if r < 0 && stale < 0 { stale = i }
        i = table.findMapping(proto: t.proto, insideIP: t.src, insidePort: t.srcPort, after: i)
      }
      if mapping >= 0 {
        let m = table.mappings[mapping]
        // The mapping is fixed: this destination must be reachable through it.
        if config.isDrained(vm: vmIndex, natIP: m.natIP) || !outsideFree(t.proto, m.natIP, m.natPort, t, now: now) {
          return vmDrop(.endpointIndependenceConflict, vmIndex, t, natIP: m.natIP, natPort: m.natPort, now: now, reason: &reason)
        }
        natIP = m.natIP
        natPort = m.natPort
      } else if stale >= 0 {
        // Left over from a config that took the block away: its flows die lazily and no longer
        // count towards it (see releaseMapping), so the mapping is re-pointed below.
        mapping = -3 - stale
      }
    }
    let reuse = natPort != 0 || natIP != 0
    if !reuse {
      let group = config.group(vm: vmIndex, rule: rule)
      guard group >= 0, pickPort(vm, group, t, now: now, ip: &natIP, port: &natPort, block: &block) else {
        return vmDrop(.outOfResources, vmIndex, t, natIP: 0, natPort: 0, now: now, reason: &reason)
      }
    }
    guard let slot = table.allocateSlot() else {
      return vmDrop(.flowTableFull, vmIndex, t, natIP: natIP, natPort: natPort, now: now, reason: &reason)
    }
    var flags = FlowSlot.occupied
    if vm.endpointIndependent {
      flags |= FlowSlot.hasMapping
      if mapping >= 0 {
        table.mappings[mapping].refAndProto &+= 1
      } else if mapping <= -3 {
        let i = -3 - mapping
        config.releasePort(t.proto, natIP: table.mappings[i].natIP, port: table.mappings[i].natPort)
        table.mappings[i].natIP = natIP
        table.mappings[i].natPort = natPort
        table.mappings[i].refAndProto = UInt32(t.proto) << 24 | 1
        config.retainPort(CompiledConfig.portClass(t.proto), block: block, port: natPort)
      } else {
        table.insertMapping(proto: t.proto, insideIP: t.src, insidePort: t.srcPort, natIP: natIP, natPort: natPort)
        config.retainPort(CompiledConfig.portClass(t.proto), block: block, port: natPort)
      }
    }
    let f = FlowSlot(
      insideIP: t.src, remoteIP: t.dst, natIP: natIP, insidePort: t.srcPort, remotePort: t.dstPort, natPort: natPort,
      proto: t.proto, tcpState: 0, vmIndex: UInt16(truncatingIfNeeded: vmIndex), flags: flags, reserved: 0,
      generation: table.generation, nextFree: noSlot, expiresAt: 0)
    table.flows[slot] = f
    table.indexInsert(table.inside, hash: table.insideHash(f), slot: slot)
    table.indexInsert(table.outside, hash: table.outsideHash(f), slot: slot)
    table.flowCount &+= 1
    globalCounters.flowsCreated &+= 1
    config.counters[vmIndex].newFlows &+= 1
    if vm.logMask & 1 != 0, let sink = logSink {
      sink.append(
        LogRecord(
          timestamp: now, insideIP: IPv4Address(t.src), remoteIP: IPv4Address(t.dst), natIP: IPv4Address(natIP),
          insidePort: t.srcPort, remotePort: t.dstPort, natPort: natPort, protocolNumber: t.proto, status: .ok,
          reason: nil, vmIndex: UInt16(truncatingIfNeeded: vmIndex)))
    }
    return slot
  }

  func vmDrop(
    _ r: DropReason, _ vmIndex: Int, _ t: Tuple, natIP: UInt32, natPort: UInt16, now: UInt64, reason: inout DropReason
  ) -> Int {
    reason = r
    switch r {
    case .endpointIndependenceConflict: config.counters[vmIndex].droppedEndpointIndependenceConflict &+= 1
    case .outOfResources: config.counters[vmIndex].droppedOutOfResources &+= 1
    case .routedToNextHop:
      config.counters[vmIndex].routedToNextHop &+= 1
      globalCounters.routedToNextHop &+= 1
    default: config.counters[vmIndex].droppedFlowTableFull &+= 1
    }
    if config.vms[vmIndex].logMask & 2 != 0, let sink = logSink {
      sink.append(
        LogRecord(
          timestamp: now, insideIP: IPv4Address(t.src), remoteIP: IPv4Address(t.dst), natIP: IPv4Address(natIP),
          insidePort: t.srcPort, remotePort: t.dstPort, natPort: natPort, protocolNumber: t.proto, status: .dropped,
          reason: r, vmIndex: UInt16(truncatingIfNeeded: vmIndex)))
    }
    return -1
  }

  /// True when no live flow uses this outside 5-tuple (stale flows found on the way are ended).
  @inline(__always)
  func outsideFree(_ proto: UInt8, _ natIP: UInt32, _ natPort: UInt16, _ t: Tuple, now: UInt64) -> Bool {
    let s = table.findOutside(proto: proto, natIP: natIP, natPort: natPort, remoteIP: t.dst, remotePort: t.dstPort)
    return s < 0 || !isLive(s, now: now)
  }

  /// RFC 6056 "random start, then sequential": a random port in the VM's active blocks, then the
  /// following ones, until one is free for this destination. Bounded by the VM's port count.
  ///
  /// With EIM the port becomes the endpoint's NAT port for *every* destination, so a port already
  /// mapped by another endpoint is only a last resort: once both endpoints talk to the same
  /// destination (common: a VM's processes share a few servers) the second one is dropped with
  /// ENDPOINT_INDEPENDENCE_CONFLICT. A random port in 64 is shared by two of 10 endpoints about half
  /// the time, so the search first takes ports no live mapping uses (for this protocol), and shares
  /// a port (its outside 5-tuple still free) only when every active port is mapped. Both passes are
  /// random start, then sequential, from the same start.
  ///
  /// Why a per-port mapping count scanned linearly (`CompiledConfig.portRefs`), not a free list or
  /// bitmap of unmapped ports: a count is needed anyway (a port is unmapped only when its *last*
  /// mapping goes); a block's counts are contiguous, so the scan from the random start is a tight
  /// loop over 2-byte entries that usually stops at the first or second one (about 12 instructions
  /// per new flow in the benchmark, ~120 more per new flow in all, next to the several hundred cycles
  /// of cache misses a new flow costs anyway); `mappedPorts` says in O(1) whether any unmapped port
  /// is left, so a full VM goes straight to sharing; release is a decrement with nothing to keep
  /// ordered. Only mapping creation and deletion touch this state, never the established path.
  /// Without EIM ports are per destination and the counts are not consulted.
  ///
  /// All of this is per port group: the VM's blocks on the NAT IPs of the rule chosen for the
  /// destination (or on the default IPs).
  func pickPort(
    _ vm: CompiledVM, _ groupIndex: Int, _ t: Tuple, now: UInt64, ip: inout UInt32, port: inout UInt16, block: inout Int
  ) -> Bool {
    let g = config.groups[groupIndex]
    let total = g.activePorts
    guard total > 0 else { return false }
    let r = UInt32(truncatingIfNeeded: table.nextRandom() % UInt64(total))
    guard vm.endpointIndependent else {
      return scanPorts(g, from: r, cls: 0, mode: Self.scanAny, budget: total, t, now: now, ip: &ip, port: &port, block: &block)
    }
    let cls = CompiledConfig.portClass(t.proto)
    let unmapped = total &- min(total, config.mappedPorts[groupIndex &* 3 &+ cls])
    if unmapped > 0,
      scanPorts(g, from: r, cls: cls, mode: Self.scanUnmapped, budget: unmapped, t, now: now, ip: &ip, port: &port, block: &block)
    {
      return true
    }
    return scanPorts(g, from: r, cls: cls, mode: Self.scanShared, budget: total, t, now: now, ip: &ip, port: &port, block: &block)
  }

  static let scanAny = 0
  static let scanUnmapped = 1
  static let scanShared = 2

  /// Walks the port group's active ports from active-port index `r`, wrapping once, and takes the first one
  /// that the mode admits (any / count 0 / count not saturated) and whose outside 5-tuple towards
  /// the destination is free. `budget` bounds how many admitted ports are tried.
  @inline(__always)
  func scanPorts(
    _ g: CompiledGroup, from r: UInt32, cls: Int, mode: Int, budget: UInt32, _ t: Tuple, now: UInt64,
    ip: inout UInt32, port: inout UInt16, block: inout Int
  ) -> Bool {
    let blocks = config.blocks
    let refs = config.portRefs.baseAddress! + cls &* config.totalPorts
    let first = g.blockStart
    let end = g.blockStart &+ g.blockCount
    var b = first
    var k = r
    while true {
      let blk = blocks[b]
      if !blk.drained {
        if k < blk.count { break }
        k &-= blk.count
      }
      b &+= 1
    }
    var remaining = g.activePorts
    var tries = budget
    while remaining > 0 {
      let blk = blocks[b]
      if !blk.drained {
        let stop = min(blk.count, k &+ remaining)
        let counts = refs + Int(blk.portBase)
        var i = k
        while i < stop {
          let admitted: Bool
          if mode == Self.scanAny {
            admitted = true
          } else {
            let c = counts[Int(i)]
            admitted = mode == Self.scanUnmapped ? c == 0 : c != .max
          }
          if admitted {
            let p = UInt16(truncatingIfNeeded: blk.start &+ i)
            if outsideFree(t.proto, blk.natIP, p, t, now: now) {
              ip = blk.natIP
              port = p
              block = b
              return true
            }
            tries &-= 1
            if tries == 0 { return false }
          }
          i &+= 1
        }
        remaining &-= stop &- k
        k = 0
      }
      b &+= 1
      if b == end { b = first }
    }
    return false
  }

  /// Translates one Internet → VM packet in place (only if it answers a flow: address-and-port-
  /// dependent filtering; a filtered packet creates no state).
  public func translateInbound(_ packet: UnsafeMutableRawBufferPointer, now: UInt64) -> Verdict {
    guard let ip = try? IPv4PacketView(validating: packet) else { return drop(.malformed, nil, now: now) }
    if ip.isNonFirstFragment { return laterFragment(ip, inbound: true, now: now) }
    var reason = DropReason.malformed
    guard let t = classify(ip, reason: &reason) else { return drop(reason, nil, now: now) }
    if t.kind == Self.kindError { return inboundICMPError(ip, t, now: now) }
    let b = ip.bytes
    // An echo reply's identifier is the NAT's; requests to a NAT IP are not answered here.
    if t.kind == Self.kindEcho && t.tcpFlags != ICMPType.echoReply { return inboundMissFirstFragment(ip, t, now: now) }
    let localPort = t.kind == Self.kindEcho ? t.srcPort : t.dstPort
    let remotePort = t.kind == Self.kindEcho ? 0 : t.srcPort
    let slot = table.findOutside(proto: t.proto, natIP: t.dst, natPort: localPort, remoteIP: t.src, remotePort: remotePort)
    guard slot >= 0, isLive(slot, now: now) else { return inboundMissFirstFragment(ip, t, now: now) }
    let flows = table.flows
    let f = flows[slot]
    if t.proto == IPProtocol.tcp {
      let state = TCPState.inbound(f.tcpState, flags: t.tcpFlags)
      flows[slot].tcpState = state
      flows[slot].expiresAt = now &+ TCPState.timeout(state, config.vms[Int(f.vmIndex)])
    }
    if t.kind == Self.kindEcho {
      var echo = t
      echo.dstPort = t.srcPort  // rewriteL4 for echo always targets the identifier field
      Self.rewriteDestination(b, echo, ip: f.insideIP, port: f.insidePort)
    } else {
      Self.rewriteDestination(b, t, ip: f.insideIP, port: f.insidePort)
    }
    if ip.moreFragments { firstFragment(ip, t, inbound: true, newIP: f.insideIP, now: now) }
    let c = config.counters.baseAddress! + Int(f.vmIndex)
    c.pointee.packetsIn &+= 1
    c.pointee.bytesIn &+= UInt64(b.count)
    globalCounters.translatedIn &+= 1
    return .forward
  }

  /// An inbound packet matching no flow: 1:1 NAT or filtered; a first fragment that goes through
  /// leads its datagram's later fragments.
  @inline(never)
  func inboundMissFirstFragment(_ ip: IPv4PacketView, _ t: Tuple, now: UInt64) -> Verdict {
    let verdict = inboundMiss(ip.bytes, t, now: now)
    if ip.moreFragments, case .forward = verdict { firstFragment(ip, t, inbound: true, newIP: ip.bytes.loadBE32(at: 16), now: now) }
    return verdict
  }

  // MARK: - Fragments (RFC 4787 REQ-14, without reassembly)

  @inline(never)
  func firstFragment(_ ip: IPv4PacketView, _ t: Tuple, inbound: Bool, newIP: UInt32, inVPC: Bool = false, now: UInt64) {
    fragmentTable.remember(
      src: t.src, dst: t.dst, id: ip.identification, proto: t.proto, inbound: inbound, newIP: newIP, inVPC: inVPC, now: now)
  }

  /// A non-first fragment: it carries no ports, so it takes the address its first fragment was
  /// given (source outbound, destination inbound); without one it is dropped.
  /// `fromFabric`: the fragment came through the VPC fabric (`deliverInVPC`), so only a datagram
  /// whose first fragment came that way too may pass; from the Internet, only one that did not.
  @inline(never)
  func laterFragment(_ ip: IPv4PacketView, inbound: Bool, fromFabric: Bool = false, now: UInt64) -> Verdict {
    let b = ip.bytes
    let src = b.loadBE32(at: 12)
    let dst = b.loadBE32(at: 16)
    guard let (newIP, inVPC) = fragmentTable.lookup(src: src, dst: dst, id: ip.identification, proto: ip.protocolNumber, inbound: inbound, now: now),
      !inbound || inVPC == fromFabric
    else { return drop(.fragment, nil, now: now) }
    if inVPC {
      if inbound { globalCounters.vpcIn &+= 1 } else { globalCounters.vpcOut &+= 1 }
      return inbound ? .forward : .forwardInVPC
    }
    let offset = inbound ? 16 : 12
    b.storeBE16(InternetChecksum.update(b.loadBE16(at: 10), old: inbound ? dst : src, new: newIP), at: 10)
    b.storeBE32(newIP, at: offset)
    if inbound { globalCounters.translatedIn &+= 1 } else { globalCounters.translatedOut &+= 1 }
    return .forward
  }

  @inline(never)
  func inboundMiss(_ b: UnsafeMutableRawBufferPointer, _ t: Tuple, now: UInt64) -> Verdict {
    if config.externalCount > 0 {
      let vm = config.oneToOneVM(external: t.dst)
      if vm >= 0 {
        var tt = t
        if t.kind == Self.kindEcho { tt.dstPort = t.srcPort }
        let primary = config.vms[vm].primaryIP
        if config.vms[vm].network >= 0, !ingressAllowed(vm, t, insideIP: primary, natIP: t.dst, now: now) {
          return .drop(.firewallDenied)
        }
        Self.rewriteDestination(b, tt, ip: primary, port: tt.dstPort)
        globalCounters.oneToOneIn &+= 1
        return .forward
      }
    }
    if config.hasPolicies, let verdict = privateGoogleAccessIn(t, now: now) { return verdict }
    return drop(.filteredInbound, t, now: now)
  }

  // MARK: - VPC policy (firewall, routes, Private Google Access)

  /// How long the stateless paths' connection tracker remembers a connection: the gateway's idle
  /// timeouts (TCP as established: the tracker reads no flags).
  @inline(__always)
  func trackTimeout(_ vm: CompiledVM, _ proto: UInt8) -> UInt64 {
    proto == IPProtocol.tcp ? vm.tcpEstablished : proto == IPProtocol.udp ? vm.udpTimeout : vm.icmpTimeout
  }

  /// Egress firewall, routes and Private Google Access, in the order the VPC applies them, for an
  /// outbound packet with no NAT flow (a new connection, or any packet of the stateless 1:1 and PGA
  /// paths, whose firewall state lives in `connTrack`). Returns 0 to go on with 1:1 or NAT, -1 to
  /// drop (`reason` set, counted, logged), or -4 to forward the packet unchanged (PGA). `oneToOne`
  /// and `natVM` are the source's 1:1 VM and NAT-range VM (or -1), as `createFlow` found them.
  @inline(never)
  func egressPolicy(_ t: Tuple, oneToOne: Int, natVM: Int, now: UInt64, reason: inout DropReason) -> Int {
    let vmIndex = oneToOne >= 0 ? oneToOne : config.vm(internal: t.src, natVM: natVM)
    guard vmIndex >= 0 else { return 0 }
    let vm = config.vms[vmIndex]
    guard vm.network >= 0 else { return 0 }
    let p = config.policies
    let net = p.networks[vm.network]
    // Subnet routes are the most specific: a destination inside the VPC never uses NAT, 1:1 or PGA.
    let inVPC = p.isInternal(net, t.dst)
    // A primary IP with an external IP reaches Google through that IP, not through PGA.
    let pga = !inVPC && vm.privateGoogleAccess && oneToOne < 0 && p.isGoogleAPI(net, t.dst)
    let stateless = oneToOne >= 0 || pga || inVPC
    // Echo requests carry their identifier in srcPort and 0 in dstPort: the same key as the reply.
    var tracked = false
    var set = 0
    var expiry: UInt64 = 0
    if stateless {
      expiry = now &+ trackTimeout(vm, t.proto)
      set = connTrack.refresh(t.proto, t.src, t.srcPort, t.dst, t.dstPort, now: now, expiresAt: expiry)
      tracked = set == ConnTrackTable.hit
    }
    if !tracked {
      let rule = p.firewall(net, tags: vm.tags, ingress: false, remote: t.dst, proto: t.proto, port: t.dstPort)
      if rule >= 0 && !p.rules[rule].allow {
        reason = .firewallDenied
        globalCounters.firewallDeniedEgress &+= 1
        firewallDenied(
          vmIndex, rule: rule, insideIP: t.src, insidePort: t.srcPort, remoteIP: t.dst, remotePort: t.dstPort, natIP: 0,
          proto: t.proto, now: now)
        return -1
      }
    }
    if !inVPC && !p.routesToInternet(net, t.dst) {
      return vmDrop(.routedToNextHop, vmIndex, t, natIP: 0, natPort: 0, now: now, reason: &reason)
    }
    if stateless && !tracked {
      connTrack.insert(at: set, t.proto, t.src, t.srcPort, t.dst, t.dstPort, expiresAt: expiry)
    }
    if inVPC {
      config.counters[vmIndex].vpcPackets &+= 1
      globalCounters.vpcOut &+= 1
      return -5
    }
    guard pga else { return 0 }
    config.counters[vmIndex].privateGoogleAccessPackets &+= 1
    globalCounters.privateGoogleAccessOut &+= 1
    return -4
  }

  /// An echo reply from a VM. NAT never lets echo requests in, so only two pings can have asked
  /// for it: one from inside the VPC (the reply goes back through the fabric) and one to the VM's
  /// 1:1 external IP (the reply leaves from that IP), each as the egress rules allow.
  @inline(never)
  func outboundEchoReply(_ ip: IPv4PacketView, _ t: Tuple, now: UInt64) -> Verdict {
    guard t.tcpFlags == ICMPType.echoReply else { return drop(.unsupportedProtocol, t, now: now) }
    let oneToOne = config.primaryCount > 0 ? config.oneToOneVM(primary: t.src) : -1
    if config.hasPolicies {
      let natVM = config.natVM(for: t.src)
      let vmIndex = oneToOne >= 0 ? oneToOne : config.vm(internal: t.src, natVM: natVM)
      let network = vmIndex >= 0 ? config.vms[vmIndex].network : -1
      if oneToOne >= 0 || (network >= 0 && config.policies.isInternal(config.policies.networks[network], t.dst)) {
        var reason = DropReason.unsupportedProtocol
        switch egressPolicy(t, oneToOne: oneToOne, natVM: natVM, now: now, reason: &reason) {
        case -5:
          if ip.moreFragments { firstFragment(ip, t, inbound: false, newIP: t.src, inVPC: true, now: now) }
          return .forwardInVPC
        case -1: return .drop(reason)
        default: break
        }
      }
    }
    guard oneToOne >= 0 else { return drop(.unsupportedProtocol, t, now: now) }
    let verdict = oneToOneOut(ip.bytes, t, vm: oneToOne)
    if ip.moreFragments { firstFragment(ip, t, inbound: false, newIP: ip.bytes.loadBE32(at: 12), now: now) }
    return verdict
  }

  /// A packet another host sent through the VPC fabric to one of this host's VMs: untranslated,
  /// accepted when its source is inside the destination VM's network (its subnets or its peers')
  /// and the VM's ingress rules allow it (stateful: replies to the VM's own connections pass).
  /// Anything else is counted and dropped; the packet is never rewritten.
  public func deliverInVPC(_ packet: UnsafeMutableRawBufferPointer, now: UInt64) -> Verdict {
    guard let ip = try? IPv4PacketView(validating: packet) else { return drop(.malformed, nil, now: now) }
    if ip.isNonFirstFragment { return laterFragment(ip, inbound: true, fromFabric: true, now: now) }
    var reason = DropReason.malformed
    guard let t = classify(ip, reason: &reason) else { return drop(reason, nil, now: now) }
    guard config.hasPolicies else { return drop(.filteredInbound, t, now: now) }
    let vmIndex = config.vm(internal: t.dst)
    guard vmIndex >= 0, config.vms[vmIndex].network >= 0,
      config.policies.isInternal(config.policies.networks[config.vms[vmIndex].network], t.src)
    else { return drop(.filteredInbound, t, now: now) }
    // ICMP errors about VPC traffic carry no flow of their own: the VM's network accepted the
    // source, and the VM's stack matches the quote itself.
    if t.kind != Self.kindError {
      // A reply's identifier sits in srcPort (classify), the tracker's inside-port for echo.
      guard ingressAllowed(vmIndex, t, insideIP: t.dst, natIP: 0, now: now) else { return .drop(.firewallDenied) }
    }
    if ip.moreFragments { firstFragment(ip, t, inbound: true, newIP: t.dst, inVPC: true, now: now) }
    config.counters[vmIndex].vpcPackets &+= 1
    globalCounters.vpcIn &+= 1
    return .forward
  }

  /// Stateful ingress check of an inbound packet on a stateless path, once its destination is known
  /// to be VM `vmIndex`'s `insideIP`: a tracked connection passes, otherwise the ingress rules decide
  /// (implied: deny) and an allowed packet starts tracking its connection.
  func ingressAllowed(_ vmIndex: Int, _ t: Tuple, insideIP: UInt32, natIP: UInt32, now: UInt64) -> Bool {
    let vm = config.vms[vmIndex]
    let p = config.policies
    let echo = t.kind == Self.kindEcho
    let insidePort = echo ? t.srcPort : t.dstPort
    let remotePort = echo ? 0 : t.srcPort
    let expiry = now &+ trackTimeout(vm, t.proto)
    let set = connTrack.refresh(t.proto, insideIP, insidePort, t.src, remotePort, now: now, expiresAt: expiry)
    if set == ConnTrackTable.hit { return true }
    let rule = p.firewall(p.networks[vm.network], tags: vm.tags, ingress: true, remote: t.src, proto: t.proto, port: t.dstPort)
    if rule >= 0 && p.rules[rule].allow {
      connTrack.insert(at: set, t.proto, insideIP, insidePort, t.src, remotePort, expiresAt: expiry)
      return true
    }
    globalCounters.firewallDeniedIngress &+= 1
    firewallDenied(
      vmIndex, rule: rule, insideIP: insideIP, insidePort: insidePort, remoteIP: t.src, remotePort: remotePort, natIP: natIP,
      proto: t.proto, now: now)
    return false
  }

  /// Counts a firewall drop for the VM and logs it when the denying rule logs (implied rules never do).
  func firewallDenied(
    _ vmIndex: Int, rule: Int, insideIP: UInt32, insidePort: UInt16, remoteIP: UInt32, remotePort: UInt16, natIP: UInt32,
    proto: UInt8, now: UInt64
  ) {
    config.counters[vmIndex].droppedFirewall &+= 1
    if rule >= 0, config.policies.rules[rule].logging, let sink = logSink {
      sink.append(
        LogRecord(
          timestamp: now, insideIP: IPv4Address(insideIP), remoteIP: IPv4Address(remoteIP), natIP: IPv4Address(natIP),
          insidePort: insidePort, remotePort: remotePort, natPort: natIP == 0 ? 0 : insidePort, protocolNumber: proto,
          status: .dropped, reason: .firewallDenied, vmIndex: UInt16(truncatingIfNeeded: vmIndex)))
    }
  }

  /// An inbound packet from the Google APIs ranges to the internal IP of a VM using Private Google
  /// Access: forwarded unchanged when the ingress side allows it; nil when PGA does not apply.
  @inline(never)
  func privateGoogleAccessIn(_ t: Tuple, now: UInt64) -> Verdict? {
    let vmIndex = config.vm(internal: t.dst)
    guard vmIndex >= 0 else { return nil }
    let vm = config.vms[vmIndex]
    guard vm.network >= 0, vm.privateGoogleAccess, !(vm.hasExternalIP && t.dst == vm.primaryIP),
      config.policies.isGoogleAPI(config.policies.networks[vm.network], t.src)
    else { return nil }
    guard ingressAllowed(vmIndex, t, insideIP: t.dst, natIP: 0, now: now) else { return .drop(.firewallDenied) }
    config.counters[vmIndex].privateGoogleAccessPackets &+= 1
    globalCounters.privateGoogleAccessIn &+= 1
    return .forward
  }

  // MARK: - ICMP errors (RFC 5508 REQ-3..6)

  /// Inbound error about a packet we sent: the quote's source is NAT IP:port. Translate the outer
  /// destination and the quote's source back; never refresh or end the flow.
  @inline(never)
  func inboundICMPError(_ ip: IPv4PacketView, _ t: Tuple, now: UInt64) -> Verdict {
    let b = ip.bytes
    guard let icmp = try? ICMPMessageView(validating: ip.payload),
      let quote = try? QuotedDatagramView(validating: icmp.quoted)
    else { return drop(.malformed, t, now: now) }
    let qb = quote.bytes
    let ql4 = quote.headerLength
    let proto = quote.protocolNumber
    let natIP = qb.loadBE32(at: 12)
    let remoteIP = qb.loadBE32(at: 16)
    let natPort: UInt16
    let remotePort: UInt16
    switch proto {
    case IPProtocol.tcp, IPProtocol.udp:
      natPort = qb.loadBE16(at: ql4)
      remotePort = qb.loadBE16(at: ql4 &+ 2)
    case IPProtocol.icmp where qb[ql4] == ICMPType.echoRequest:
      natPort = qb.loadBE16(at: ql4 &+ 4)
      remotePort = 0
    default:
      return drop(.unmatchedICMPError, t, now: now)
    }
    guard natIP == t.dst else { return drop(.unmatchedICMPError, t, now: now) }
    let slot = table.findOutside(proto: proto, natIP: natIP, natPort: natPort, remoteIP: remoteIP, remotePort: remotePort)
    guard slot >= 0, table.flows[slot].expiresAt > now else { return drop(.unmatchedICMPError, t, now: now) }
    let f = table.flows[slot]
    ip.rewriteDestination(IPv4Address(f.insideIP))
    Self.rewriteQuoted(quote, addressOffset: 12, newIP: f.insideIP, newPort: f.insidePort, sourceSide: true)
    icmp.checksum = icmp.computeChecksum()
    globalCounters.icmpErrorsTranslated &+= 1
    let c = config.counters.baseAddress! + Int(f.vmIndex)
    if f.generation == table.generation {
      c.pointee.packetsIn &+= 1
      c.pointee.bytesIn &+= UInt64(b.count)
    }
    return .forward
  }

  /// Outbound error from a VM about a packet it received through a flow: the quote's destination is
  /// the VM's endpoint and becomes NAT IP:port.
  @inline(never)
  func outboundICMPError(_ ip: IPv4PacketView, _ t: Tuple, now: UInt64) -> Verdict {
    let b = ip.bytes
    guard let icmp = try? ICMPMessageView(validating: ip.payload),
      let quote = try? QuotedDatagramView(validating: icmp.quoted)
    else { return drop(.malformed, t, now: now) }
    let qb = quote.bytes
    let ql4 = quote.headerLength
    let proto = quote.protocolNumber
    let remoteIP = qb.loadBE32(at: 12)
    let insideIP = qb.loadBE32(at: 16)
    let insidePort: UInt16
    let remotePort: UInt16
    switch proto {
    case IPProtocol.tcp, IPProtocol.udp:
      remotePort = qb.loadBE16(at: ql4)
      insidePort = qb.loadBE16(at: ql4 &+ 2)
    case IPProtocol.icmp where qb[ql4] == ICMPType.echoReply:
      insidePort = qb.loadBE16(at: ql4 &+ 4)
      remotePort = 0
    default:
      return drop(.unmatchedICMPError, t, now: now)
    }
    guard insideIP == t.src else { return drop(.unmatchedICMPError, t, now: now) }
    let slot = table.findInside(proto: proto, insideIP: insideIP, insidePort: insidePort, remoteIP: remoteIP, remotePort: remotePort)
    guard slot >= 0, table.flows[slot].expiresAt > now else { return drop(.unmatchedICMPError, t, now: now) }
    let f = table.flows[slot]
    ip.rewriteSource(IPv4Address(f.natIP))
    Self.rewriteQuoted(quote, addressOffset: 16, newIP: f.natIP, newPort: f.natPort, sourceSide: false)
    icmp.checksum = icmp.computeChecksum()
    globalCounters.icmpErrorsTranslated &+= 1
    let c = config.counters.baseAddress! + Int(f.vmIndex)
    if f.generation == table.generation {
      c.pointee.packetsOut &+= 1
      c.pointee.bytesOut &+= UInt64(b.count)
    }
    return .forward
  }

  /// Rewrites one endpoint of a quoted datagram, keeping its IP header checksum and (when the quote
  /// holds it) its transport checksum consistent, so the VM/remote can match the error.
  static func rewriteQuoted(_ q: QuotedDatagramView, addressOffset: Int, newIP: UInt32, newPort: UInt16, sourceSide: Bool) {
    let qb = q.bytes
    let l4 = q.headerLength
    let oldIP = qb.loadBE32(at: addressOffset)
    qb.storeBE16(InternetChecksum.update(qb.loadBE16(at: 10), old: oldIP, new: newIP), at: 10)
    qb.storeBE32(newIP, at: addressOffset)
    let available = qb.count &- l4
    switch q.protocolNumber {
    case IPProtocol.tcp, IPProtocol.udp:
      let portOffset = l4 &+ (sourceSide ? 0 : 2)
      let oldPort = qb.loadBE16(at: portOffset)
      qb.storeBE16(newPort, at: portOffset)
      let checksumOffset = q.protocolNumber == IPProtocol.tcp ? 16 : 6
      guard available >= checksumOffset &+ 2 else { return }
      let c = qb.loadBE16(at: l4 &+ checksumOffset)
      if q.protocolNumber == IPProtocol.udp && c == 0 { return }
      var updated = InternetChecksum.update(c, oldAddress: oldIP, newAddress: newIP, oldPort: oldPort, newPort: newPort)
      if q.protocolNumber == IPProtocol.udp { updated = InternetChecksum.udpWire(updated) }
      qb.storeBE16(updated, at: l4 &+ checksumOffset)
    default:
      let oldID = qb.loadBE16(at: l4 &+ 4)
      qb.storeBE16(newPort, at: l4 &+ 4)
      qb.storeBE16(InternetChecksum.update(qb.loadBE16(at: l4 &+ 2), old: oldID, new: newPort), at: l4 &+ 2)
    }
  }

  // MARK: - Batches

  /// Translates a batch of outbound packets; `verdicts[i]` gets packet i's verdict.
  public func translateOutbound(
    _ packets: UnsafeBufferPointer<UnsafeMutableRawBufferPointer>, verdicts: UnsafeMutableBufferPointer<Verdict>, now: UInt64
  ) {
    precondition(verdicts.count >= packets.count, "verdict buffer smaller than batch")
    for i in 0..<packets.count { verdicts[i] = translateOutbound(packets[i], now: now) }
  }

  /// Translates a batch of inbound packets.
  public func translateInbound(
    _ packets: UnsafeBufferPointer<UnsafeMutableRawBufferPointer>, verdicts: UnsafeMutableBufferPointer<Verdict>, now: UInt64
  ) {
    precondition(verdicts.count >= packets.count, "verdict buffer smaller than batch")
    for i in 0..<packets.count { verdicts[i] = translateInbound(packets[i], now: now) }
  }
}
