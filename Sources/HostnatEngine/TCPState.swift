/// TCP connection tracking from flags only (no sequence numbers), enough to pick a timeout.
/// The state is a bit set kept in the flow slot.
enum TCPState {
  static let outSyn: UInt8 = 0x01
  static let inSyn: UInt8 = 0x02
  static let outFin: UInt8 = 0x04
  static let inFin: UInt8 = 0x08
  static let rst: UInt8 = 0x10
  static let inSeen: UInt8 = 0x20

  enum Phase { case transitory, established, timeWait }

  /// RST or FIN both ways → TIME_WAIT; both directions seen and no FIN → established (this covers
  /// simultaneous open); anything else (SYN sent, half-closed) → transitory.
  @inline(__always)
  static func phase(_ s: UInt8) -> Phase {
    if s & rst != 0 || s & (outFin | inFin) == (outFin | inFin) { return .timeWait }
    if s & inSeen != 0 && s & (outFin | inFin) == 0 { return .established }
    return .transitory
  }

  @inline(__always)
  static func outbound(_ s: UInt8, flags: UInt8) -> UInt8 {
    var s = s
    // A fresh SYN on a connection in TIME_WAIT reopens it (same 5-tuple, RFC 1122 4.2.2.13).
    if flags & 0x12 == 0x02 && phase(s) == .timeWait { s = 0 }
    if flags & 0x02 != 0 { s |= outSyn }
    if flags & 0x01 != 0 { s |= outFin }
    if flags & 0x04 != 0 { s |= rst }
    return s
  }

  @inline(__always)
  static func inbound(_ s: UInt8, flags: UInt8) -> UInt8 {
    var s = s | inSeen
    if flags & 0x02 != 0 { s |= inSyn }
    if flags & 0x01 != 0 { s |= inFin }
    if flags & 0x04 != 0 { s |= rst }
    return s
  }

  @inline(__always)
  static func timeout(_ s: UInt8, _ vm: CompiledVM) -> UInt64 {
    switch phase(s) {
    case .established: return vm.tcpEstablished
    case .transitory: return vm.tcpTransitory
    case .timeWait: return vm.tcpTimeWait
    }
  }
}
