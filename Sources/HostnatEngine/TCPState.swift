import HostnatAddressing
import HostnatPackets

/// TCP connection tracking from flags only (no sequence numbers), enough to pick a timeout.
/// One byte of the flow slot: the raw values are part of the region's layout.
struct TCPState: OptionSet {
  let rawValue: UInt8

  static let outSyn = TCPState(rawValue: 0x01)
  static let inSyn = TCPState(rawValue: 0x02)
  static let outFin = TCPState(rawValue: 0x04)
  static let inFin = TCPState(rawValue: 0x08)
  static let rst = TCPState(rawValue: 0x10)
  /// A packet came in (the remote end answered).
  static let inSeen = TCPState(rawValue: 0x20)

  enum Phase { case transitory, established, timeWait }

  /// The TCP flags read here. `TCPFlags.syn` and the rest are `static let`s of another module,
  /// which the optimizer cannot fold: each read would call their lazy initializer per packet.
  private enum Flag {
    static var fin: TCPFlags { TCPFlags(rawValue: 0x01) }
    static var syn: TCPFlags { TCPFlags(rawValue: 0x02) }
    static var rst: TCPFlags { TCPFlags(rawValue: 0x04) }
    static var ack: TCPFlags { TCPFlags(rawValue: 0x10) }
  }

  /// RST or FIN both ways → TIME_WAIT; both directions seen and no FIN → established (this covers
  /// simultaneous open); anything else (SYN sent, half-closed) → transitory.
  @inline(__always)
  var phase: Phase {
    if contains(.rst) || isSuperset(of: [.outFin, .inFin]) { return .timeWait }
    if contains(.inSeen) && isDisjoint(with: [.outFin, .inFin]) { return .established }
    return .transitory
  }

  @inline(__always)
  mutating func outbound(_ flags: TCPFlags) {
    // A fresh SYN on a connection in TIME_WAIT reopens it (same 5-tuple, RFC 1122 4.2.2.13).
    if flags.contains(Flag.syn) && !flags.contains(Flag.ack) && phase == .timeWait { self = [] }
    if flags.contains(Flag.syn) { insert(.outSyn) }
    if flags.contains(Flag.fin) { insert(.outFin) }
    if flags.contains(Flag.rst) { insert(.rst) }
  }

  @inline(__always)
  mutating func inbound(_ flags: TCPFlags) {
    insert(.inSeen)
    if flags.contains(Flag.syn) { insert(.inSyn) }
    if flags.contains(Flag.fin) { insert(.inFin) }
    if flags.contains(Flag.rst) { insert(.rst) }
  }

  @inline(__always)
  func timeout(_ vm: CompiledVM) -> UInt64 {
    switch phase {
    case .established: return vm.tcpEstablished
    case .transitory: return vm.tcpTransitory
    case .timeWait: return vm.tcpTimeWait
    }
  }
}
