import HostnatAddressing
import HostnatPackets

extension NATEngine {
  /// What became of an outbound packet that matched no flow (`createFlow`).
  enum FlowCreation {
    /// A new NAT flow in this slot: translate through it.
    case created(slot: Int)
    /// Counted and logged already; the packet is dropped.
    case dropped(DropReason)
    /// The source is a primary IP with 1:1 NAT: translate statelessly.
    case oneToOne
    /// Private Google Access: forward unchanged.
    case privateGoogleAccess
    /// The destination is inside the VPC: forward unchanged through the fabric.
    case inVPC
  }

  /// The EIM mapping a new flow uses, as `createFlow` found it (indexes into `table.mappings`).
  enum MappingChoice {
    /// No mapping for this endpoint and rule: a new one is inserted (EIM) or none is kept.
    case none
    /// The endpoint's live mapping for this rule: the flow takes another reference on it.
    case existing(Int)
    /// A mapping whose block a newer config took away: re-pointed to the port picked now.
    case stale(Int)
  }

  /// New flow for an outbound packet that matched none. `oneToOne` is the VM whose primary IP with
  /// 1:1 NAT is the source, or -1.
  @inline(never)
  func createFlow(_ t: Tuple, oneToOne: Int, now: UInt64) -> FlowCreation {
    let vmIndex = config.natVM(for: t.src)
    if config.hasPolicies {
      switch egressPolicy(t, oneToOne: oneToOne, natVM: vmIndex, now: now) {
      case .proceed: break
      case .dropped(let reason): return .dropped(reason)
      case .privateGoogleAccess: return .privateGoogleAccess
      case .inVPC: return .inVPC
      }
    }
    if oneToOne >= 0 { return .oneToOne }
    guard vmIndex >= 0 else {
      _ = drop(.noNATConfigured, t, now: now)
      return .dropped(.noNATConfigured)
    }
    let vm = config.vms[vmIndex]
    var natIP: UInt32 = 0
    var natPort: UInt16 = 0
    var block = -1
    var mapping = MappingChoice.none
    // NAT rules choose the NAT IPs by destination; without rules everything is rule 0 (default IPs).
    let rule = vm.ruleCount > 0 ? config.natRule(vm: vmIndex, destination: t.dst) : 0
    if vm.endpointIndependent {
      // An endpoint has one mapping per NAT rule it uses (each rule has its own IPs), all under the
      // same key; the rule of each is that of its block in this config.
      var stale = -1
      var found = -1
      var i = table.findMapping(proto: t.proto, insideIP: t.src, insidePort: t.srcPort)
      while i >= 0 {
        let m = table.mappings[i]
        let r = config.rule(vm: vmIndex, natIP: m.natIP, natPort: m.natPort)
        if r == rule || r == CompiledConfig.anyRule {
          found = i
          break
        }
        if r < 0 && stale < 0 { stale = i }
        i = table.findMapping(proto: t.proto, insideIP: t.src, insidePort: t.srcPort, after: i)
      }
      if found >= 0 {
        let m = table.mappings[found]
        // The mapping is fixed: this destination must be reachable through it.
        if config.isDrained(vm: vmIndex, natIP: m.natIP) || !outsideFree(t.proto, m.natIP, m.natPort, t, now: now) {
          return .dropped(vmDrop(.endpointIndependenceConflict, vmIndex, t, natIP: m.natIP, natPort: m.natPort, now: now))
        }
        natIP = m.natIP
        natPort = m.natPort
        mapping = .existing(found)
      } else if stale >= 0 {
        // Left over from a config that took the block away: its flows die lazily and no longer
        // count towards it (see releaseMapping), so the mapping is re-pointed below.
        mapping = .stale(stale)
      }
    }
    let reuse = natPort != 0 || natIP != 0
    if !reuse {
      let group = config.group(vm: vmIndex, rule: rule)
      guard group >= 0, pickPort(vm, group, t, now: now, ip: &natIP, port: &natPort, block: &block) else {
        return .dropped(vmDrop(.outOfResources, vmIndex, t, natIP: 0, natPort: 0, now: now))
      }
    }
    guard let slot = table.allocateSlot() else {
      return .dropped(vmDrop(.flowTableFull, vmIndex, t, natIP: natIP, natPort: natPort, now: now))
    }
    var flags = FlowSlot.Flags.occupied
    if vm.endpointIndependent {
      flags.insert(.hasMapping)
      switch mapping {
      case .existing(let i):
        table.mappings[i].refAndProto &+= 1
      case .stale(let i):
        config.releasePort(t.proto, natIP: table.mappings[i].natIP, port: table.mappings[i].natPort)
        table.mappings[i].natIP = natIP
        table.mappings[i].natPort = natPort
        table.mappings[i].refAndProto = UInt32(t.proto) << 24 | 1
        config.retainPort(CompiledConfig.portClass(t.proto), block: block, port: natPort)
      case .none:
        table.insertMapping(proto: t.proto, insideIP: t.src, insidePort: t.srcPort, natIP: natIP, natPort: natPort)
        config.retainPort(CompiledConfig.portClass(t.proto), block: block, port: natPort)
      }
    }
    let f = FlowSlot(
      insideIP: t.src, remoteIP: t.dst, natIP: natIP, insidePort: t.srcPort, remotePort: t.dstPort, natPort: natPort,
      proto: t.proto, tcpState: [], vmIndex: UInt16(truncatingIfNeeded: vmIndex), flags: flags, reserved: 0,
      generation: table.generation, nextFree: noSlot, expiresAt: 0)
    table.flows[slot] = f
    table.indexInsert(table.inside, hash: table.insideHash(f), slot: slot)
    table.indexInsert(table.outside, hash: table.outsideHash(f), slot: slot)
    table.flowCount &+= 1
    globalCounters.flowsCreated &+= 1
    config.counters[vmIndex].newFlows &+= 1
    if vm.logEvents.contains(.translations), let sink = logSink {
      sink.append(
        LogRecord(
          timestamp: now, insideIP: IPv4Address(t.src), remoteIP: IPv4Address(t.dst), natIP: IPv4Address(natIP),
          insidePort: t.srcPort, remotePort: t.dstPort, natPort: natPort, protocolNumber: t.proto, status: .ok,
          reason: nil, vmIndex: UInt16(truncatingIfNeeded: vmIndex)))
    }
    return .created(slot: slot)
  }

  /// Counts a drop that belongs to VM `vmIndex` and logs it when the VM's gateway logs drops.
  /// Returns `reason`, for the caller's result.
  func vmDrop(_ reason: DropReason, _ vmIndex: Int, _ t: Tuple, natIP: UInt32, natPort: UInt16, now: UInt64) -> DropReason {
    switch reason {
    case .endpointIndependenceConflict: config.counters[vmIndex].droppedEndpointIndependenceConflict &+= 1
    case .outOfResources: config.counters[vmIndex].droppedOutOfResources &+= 1
    case .routedToNextHop:
      config.counters[vmIndex].routedToNextHop &+= 1
      globalCounters.routedToNextHop &+= 1
    default: config.counters[vmIndex].droppedFlowTableFull &+= 1
    }
    if config.vms[vmIndex].logEvents.contains(.drops), let sink = logSink {
      sink.append(
        LogRecord(
          timestamp: now, insideIP: IPv4Address(t.src), remoteIP: IPv4Address(t.dst), natIP: IPv4Address(natIP),
          insidePort: t.srcPort, remotePort: t.dstPort, natPort: natPort, protocolNumber: t.proto, status: .dropped,
          reason: reason, vmIndex: UInt16(truncatingIfNeeded: vmIndex)))
    }
    return reason
  }

  /// True when no live flow uses this outside 5-tuple (stale flows found on the way are ended).
  @inline(__always)
  func outsideFree(_ proto: UInt8, _ natIP: UInt32, _ natPort: UInt16, _ t: Tuple, now: UInt64) -> Bool {
    let s = table.findOutside(proto: proto, natIP: natIP, natPort: natPort, remoteIP: t.dst, remotePort: t.dstPort)
    return s < 0 || !isLive(s, now: now)
  }
}
