import HostnatAddressing
internal import Glibc
public import HostnatPackets

/// The Geneve underlay between hostnat processes: every UDP datagram on 127.0.0.1 is an 8-byte
/// Geneve header (RFC 8926, protocol type 0x0800, no options when we send) followed by one inner
/// IPv4 packet.
public enum Underlay {
  /// Overlay side: a VM and its host agent.
  public static let overlayVNI: UInt32 = 1
  /// Internet side: a host agent and the edge.
  public static let internetVNI: UInt32 = 2
  /// VPC fabric: VM-to-VM packets between hosts (through the edge, which routes them by internal
  /// address). The low 20 bits carry the sending network's fabric tag, so networks whose ranges
  /// overlap stay apart.
  public static let vpcVNIBase: UInt32 = 0x10_0000
  /// Fabric tags are 1...maxFabricID.
  public static let maxFabricID: UInt32 = 0xF_FFFF

  @inlinable
  public static func vpcVNI(network id: UInt32) -> UInt32 { vpcVNIBase | (id & maxFabricID) }

  /// The fabric tag a VPC VNI carries, or nil when `vni` is not one.
  @inlinable
  public static func vpcNetwork(_ vni: UInt32) -> UInt32? {
    vni & ~maxFabricID == vpcVNIBase && vni & maxFabricID != 0 ? vni & maxFabricID : nil
  }

  /// Largest datagram a batch slot holds; the lab's inner MTU stays well below it.
  public static let maxDatagram = 2048

  /// Writes the 8-byte Geneve header for an IPv4 payload into `buffer` (at least 8 bytes).
  @inlinable
  public static func writeHeader(vni: UInt32, into buffer: UnsafeMutableRawBufferPointer) {
    buffer.storeBE32(UInt32(Geneve.protocolTypeIPv4), at: 0)  // version 0, no options, flags 0
    buffer.storeBE32((vni & 0xFF_FFFF) << 8, at: 4)
  }

  /// Header + `inner` as a new array (tests and tools, not the packet path).
  public static func encapsulate(_ inner: [UInt8], vni: UInt32) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: Geneve.baseHeaderLength + inner.count)
    out.withUnsafeMutableBytes { b in
      writeHeader(vni: vni, into: b)
      inner.withUnsafeBytes { UnsafeMutableRawBufferPointer(rebasing: b[8...]).copyMemory(from: $0) }
    }
    return out
  }

  /// Validates a datagram's Geneve header: the VNI and where the inner IPv4 packet starts, or nil
  /// when it is not Geneve carrying IPv4.
  @inlinable
  public static func parse(_ datagram: UnsafeMutableRawBufferPointer) -> (vni: UInt32, headerLength: Int)? {
    guard let g = try? GeneveHeaderView(validating: datagram), g.protocolType == Geneve.protocolTypeIPv4 else {
      return nil
    }
    return (g.vni, g.headerLength)
  }

  /// Rewrites the VNI of an already validated header in place.
  @inlinable
  public static func setVNI(_ vni: UInt32, in datagram: UnsafeMutableRawBufferPointer) {
    datagram.storeBE32((vni & 0xFF_FFFF) << 8 | UInt32(datagram[7]), at: 4)
  }
}

/// The data plane's clock, in nanoseconds.
///
/// CLOCK_REALTIME, not CLOCK_MONOTONIC: the flow table lives in a file (`FlowRegion`) that outlives
/// the process, and its expiry times must mean the same thing to the next process. CLOCK_MONOTONIC
/// and CLOCK_BOOTTIME restart near zero at every boot, so flows persisted before a reboot would look
/// alive for as long as the machine had been up; wall-clock time makes them expire as they should.
/// Wall-clock steps are the price: each loop clamps its own readings so time never runs backwards
/// inside a process (a backwards step only lengthens idle timeouts; a forward step expires flows
/// early, as a NAT gateway reboot would).
public enum DataplaneClock {
  public static func now() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
  }
}

/// Per-loop clamp over `DataplaneClock`: never returns less than it returned before.
struct MonotonicClamp {
  var last: UInt64 = 0
  mutating func now() -> UInt64 {
    let t = DataplaneClock.now()
    if t > last { last = t }
    return last
  }
}

/// Inner-packet fields the edge and VM loops route on. All offsets are checked.
enum InnerPacket {
  /// Inner IPv4 destination, or nil when the packet is shorter than an IPv4 header or not IPv4.
  @inline(__always)
  static func destination(_ p: UnsafeMutableRawBufferPointer) -> UInt32? {
    guard p.count >= 20, p[0] >> 4 == 4 else { return nil }
    return p.loadBE32(at: 16)
  }

  @inline(__always)
  static func source(_ p: UnsafeMutableRawBufferPointer) -> UInt32? {
    guard p.count >= 20, p[0] >> 4 == 4 else { return nil }
    return p.loadBE32(at: 12)
  }

  /// The "port" a reply is routed by: the destination port for TCP/UDP, the identifier for ICMP
  /// echo, the quoted datagram's source port (or echo identifier) for ICMP errors.
  static func routingPort(_ p: UnsafeMutableRawBufferPointer) -> UInt16? {
    guard let ip = try? IPv4PacketView(validating: p), !ip.isNonFirstFragment else { return nil }
    let l4 = ip.payload
    switch ip.protocolNumber {
    case IPProtocol.tcp, IPProtocol.udp:
      guard l4.count >= 4 else { return nil }
      return l4.loadBE16(at: 2)
    case IPProtocol.icmp:
      guard let icmp = try? ICMPMessageView(validating: l4) else { return nil }
      if ICMPType.isEcho(icmp.type) { return icmp.identifier }
      guard ICMPType.isError(icmp.type), let quote = try? QuotedDatagramView(validating: icmp.quoted) else { return nil }
      return quote.sourcePortOrIdentifier
    default:
      return nil
    }
  }
}
