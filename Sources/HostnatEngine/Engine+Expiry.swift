import HostnatAddressing
import HostnatPackets

extension NATEngine {
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
      if table.flows[cursor].flags.contains(.occupied), !isLive(cursor, now: now) { ended += 1 }
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
    if f.flags.contains(.hasMapping), table.releaseMapping(of: f) {
      config.releasePort(f.proto, natIP: f.natIP, port: f.natPort)
    }
    table.freeSlot(slot)
    table.flowCount &-= 1
  }

  @inline(__always)
  func flowTimeout(_ f: FlowSlot, _ vm: CompiledVM) -> UInt64 {
    switch f.proto {
    case IPProtocol.tcp: return f.tcpState.timeout(vm)
    case IPProtocol.udp: return vm.udpTimeout
    default: return vm.icmpTimeout
    }
  }
}
