extension NATEngine {
  /// Which ports a pass of `scanPorts` admits (EIM port preference, see `pickPort`).
  enum PortScan {
    /// Any port (no EIM: ports are per destination).
    case any
    /// Ports no live mapping of this protocol uses.
    case unmapped
    /// Ports whose mapping count is not saturated (shared with other endpoints).
    case shared
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
      return scanPorts(g, from: r, cls: 0, mode: .any, budget: total, t, now: now, ip: &ip, port: &port, block: &block)
    }
    let cls = CompiledConfig.portClass(t.proto)
    let unmapped = total &- min(total, config.mappedPorts[groupIndex &* 3 &+ cls])
    if unmapped > 0,
      scanPorts(g, from: r, cls: cls, mode: .unmapped, budget: unmapped, t, now: now, ip: &ip, port: &port, block: &block)
    {
      return true
    }
    return scanPorts(g, from: r, cls: cls, mode: .shared, budget: total, t, now: now, ip: &ip, port: &port, block: &block)
  }

  /// Walks the port group's active ports from active-port index `r`, wrapping once, and takes the first one
  /// that the mode admits (any / count 0 / count not saturated) and whose outside 5-tuple towards
  /// the destination is free. `budget` bounds how many admitted ports are tried.
  @inline(__always)
  func scanPorts(
    _ g: CompiledGroup, from r: UInt32, cls: Int, mode: PortScan, budget: UInt32, _ t: Tuple, now: UInt64,
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
          switch mode {
          case .any: admitted = true
          case .unmapped: admitted = counts[Int(i)] == 0
          case .shared: admitted = counts[Int(i)] != .max
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
}
