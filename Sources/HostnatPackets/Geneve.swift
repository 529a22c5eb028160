public import HostnatAddressing

/// Geneve encapsulation (RFC 8926): the 8-byte base header, variable options, then the payload.
/// hostnat carries inner IPv4 directly (protocol type 0x0800), without an Ethernet header.
public enum Geneve {
  /// IANA-assigned UDP destination port.
  public static let udpPort: UInt16 = 6081
  /// Protocol type (an EtherType) for an IPv4 payload.
  public static let protocolTypeIPv4: UInt16 = 0x0800
  public static let baseHeaderLength = 8
}

/// In-place view of a Geneve header (the outer UDP payload); options are walked once at validation
/// so a bad TLV is reported instead of being trusted later.
@frozen
public struct GeneveHeaderView {
  public let bytes: UnsafeMutableRawBufferPointer
  /// Base header plus options, in bytes.
  public let headerLength: Int

  @inlinable
  public init(validating message: UnsafeMutableRawBufferPointer) throws(PacketError) {
    let count = message.count
    guard count >= 8 else { throw .truncated(.geneve, needed: 8, available: count) }
    let version = message[0] >> 6
    guard version == 0 else { throw .badVersion(.geneve, version) }
    let hl = 8 &+ Int(message[0] & 0x3F) &* 4
    guard hl <= count else { throw .truncated(.geneve, needed: hl, available: count) }
    var offset = 8
    while offset < hl {
      // Option TLV: class (2), type (1), 3 reserved bits + length in 4-byte words (1), data.
      guard offset &+ 4 <= hl else { throw .malformedOptions }
      let optionLength = 4 &+ Int(message[offset &+ 3] & 0x1F) &* 4
      guard offset &+ optionLength <= hl else { throw .malformedOptions }
      offset &+= optionLength
    }
    bytes = message
    headerLength = hl
  }

  @inlinable public var version: UInt8 { bytes[0] >> 6 }
  /// Options length in bytes.
  @inlinable public var optionsLength: Int { headerLength &- 8 }
  @inlinable public var isOAM: Bool { bytes[1] & 0x80 != 0 }
  @inlinable public var hasCriticalOptions: Bool { bytes[1] & 0x40 != 0 }
  @inlinable public var protocolType: UInt16 { bytes.loadBE16(at: 2) }
  /// 24-bit Virtual Network Identifier.
  @inlinable public var vni: UInt32 {
    get { bytes.loadBE32(at: 4) >> 8 }
    nonmutating set { bytes.storeBE32((newValue & 0xFF_FFFF) << 8 | UInt32(bytes[7]), at: 4) }
  }
  @inlinable public var options: UnsafeMutableRawBufferPointer {
    UnsafeMutableRawBufferPointer(rebasing: bytes[8..<headerLength])
  }
  @inlinable public var payload: UnsafeMutableRawBufferPointer {
    UnsafeMutableRawBufferPointer(rebasing: bytes[headerLength...])
  }
}

extension Geneve {
  /// Result of `decapsulate`: the VNI and the byte range of the inner IPv4 packet in the outer buffer.
  public struct Decapsulated: Hashable, Sendable {
    public var vni: UInt32
    public var outerSource: IPv4Address
    public var outerDestination: IPv4Address
    public var innerRange: Range<Int>
  }

  /// Parses outer IPv4 + UDP (to `port`) + Geneve and locates the inner IPv4 packet without copying.
  public static func decapsulate(_ packet: UnsafeMutableRawBufferPointer, port: UInt16 = udpPort) throws(PacketError)
    -> Decapsulated
  {
    let ip = try IPv4PacketView(validating: packet)
    guard ip.protocolNumber == IPProtocol.udp else { throw .unsupportedProtocol(ip.protocolNumber) }
    guard !ip.isNonFirstFragment, !ip.moreFragments else { throw .nonFirstFragment(offset: ip.fragmentOffset) }
    let udp = try UDPHeaderView(validating: ip.payload)
    guard udp.destinationPort == port else { throw .unsupportedProtocol(IPProtocol.udp) }
    let geneve = try GeneveHeaderView(validating: UnsafeMutableRawBufferPointer(rebasing: udp.bytes[8...]))
    guard geneve.protocolType == protocolTypeIPv4 else { throw .unsupportedPayloadType(geneve.protocolType) }
    let start = ip.headerLength + 8 + geneve.headerLength
    return Decapsulated(
      vni: geneve.vni, outerSource: ip.source, outerDestination: ip.destination, innerRange: start..<ip.totalLength)
  }

  public static func decapsulate(_ packet: [UInt8], port: UInt16 = udpPort) throws(PacketError) -> Decapsulated {
    var copy = packet
    let result = copy.withUnsafeMutableBytes { buffer in
      Result { () throws(PacketError) -> Decapsulated in try decapsulate(buffer, port: port) }
    }
    return try result.get()
  }

  /// Builds outer IPv4 + UDP + Geneve around `inner` (an IPv4 packet). The outer UDP checksum is
  /// computed (RFC 8926 allows 0; a real checksum keeps fixtures self-verifying). `options` must be a
  /// multiple of 4 bytes, at most 252.
  public static func encapsulate(
    _ inner: [UInt8], vni: UInt32, outerSource: IPv4Address, outerDestination: IPv4Address,
    sourcePort: UInt16 = 49152, options: [UInt8] = []
  ) -> [UInt8] {
    precondition(options.count % 4 == 0 && options.count <= 252, "Geneve options must be whole 4-byte words")
    var geneve: [UInt8] = [
      UInt8(options.count / 4), 0, UInt8(protocolTypeIPv4 >> 8), UInt8(protocolTypeIPv4 & 0xFF),
      UInt8(truncatingIfNeeded: vni >> 16), UInt8(truncatingIfNeeded: vni >> 8), UInt8(truncatingIfNeeded: vni), 0,
    ]
    geneve += options
    geneve += inner
    return PacketBuilder.udp(
      source: outerSource, destination: outerDestination, sourcePort: sourcePort, destinationPort: udpPort,
      payload: geneve)
  }
}
