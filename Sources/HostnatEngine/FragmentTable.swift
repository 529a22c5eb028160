/// Where the later fragments of a datagram go. Only a datagram's first fragment carries ports, so
/// only it can be matched to a flow; the rest follow the address it was translated to (RFC 4787
/// REQ-14, without reassembly). One fixed array, direct-mapped by (source, destination, protocol,
/// identification, direction): nothing is allocated per packet, and a collision only costs the
/// older datagram its remaining fragments. Fragments that arrive before their first fragment are
/// dropped and counted (`DropReason.fragment`).
struct FragmentTable: ~Copyable {
  struct Entry {
    var src: UInt32 = 0
    var dst: UInt32 = 0
    var newIP: UInt32 = 0
    var id: UInt16 = 0
    var proto: UInt8 = 0
    var inbound: Bool = false
    /// The datagram goes through the VPC fabric, untranslated (`Verdict.forwardInVPC` outbound;
    /// accepted from the fabric inbound).
    var inVPC: Bool = false
    /// 0 = empty.
    var expiresAt: UInt64 = 0
  }

  /// A datagram's fragments arrive within moments of each other; Linux gives up reassembling
  /// after 30 s, so nothing legitimate comes later.
  static let lifetime: UInt64 = 30_000_000_000
  static let size = 4096

  private let entries: UnsafeMutableBufferPointer<Entry>

  init() {
    entries = .allocate(capacity: Self.size)
    entries.initialize(repeating: Entry())
  }

  deinit { entries.deallocate() }

  @inline(__always)
  static func index(src: UInt32, dst: UInt32, id: UInt16, proto: UInt8, inbound: Bool) -> Int {
    var h = UInt64(src) &* 0x9E37_79B9_7F4A_7C15
    h ^= UInt64(dst) &* 0xC2B2_AE3D_27D4_EB4F
    h ^= (UInt64(id) << 9 | UInt64(proto) << 1 | (inbound ? 1 : 0)) &* 0x1656_67B1_9E37_79F9
    return Int(truncatingIfNeeded: (h ^ (h >> 29))) & (size - 1)
  }

  /// Called for a translated first fragment (more-fragments set, offset 0).
  @inline(__always)
  func remember(src: UInt32, dst: UInt32, id: UInt16, proto: UInt8, inbound: Bool, newIP: UInt32, inVPC: Bool = false, now: UInt64) {
    let i = Self.index(src: src, dst: dst, id: id, proto: proto, inbound: inbound)
    entries[i] = Entry(
      src: src, dst: dst, newIP: newIP, id: id, proto: proto, inbound: inbound, inVPC: inVPC, expiresAt: now &+ Self.lifetime)
  }

  /// The address a later fragment's datagram was translated to, and whether it went through the
  /// VPC fabric; nil when its first fragment was not seen.
  @inline(__always)
  func lookup(src: UInt32, dst: UInt32, id: UInt16, proto: UInt8, inbound: Bool, now: UInt64) -> (newIP: UInt32, inVPC: Bool)? {
    let e = entries[Self.index(src: src, dst: dst, id: id, proto: proto, inbound: inbound)]
    guard e.expiresAt > now, e.src == src, e.dst == dst, e.id == id, e.proto == proto, e.inbound == inbound else { return nil }
    return (e.newIP, e.inVPC)
  }
}
