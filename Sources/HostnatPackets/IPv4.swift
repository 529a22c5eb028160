public import HostnatAddressing

/// IP protocol numbers this project handles.
public enum IPProtocol {
  public static let icmp: UInt8 = 1
  public static let tcp: UInt8 = 6
  public static let udp: UInt8 = 17
}

/// The IPv4 header fields a packet and the datagram quoted in an ICMP error share, read and
/// written in place. Views conform once their initializer has checked that 20 header bytes exist.
public protocol IPv4HeaderFields {
  /// The bytes from the start of the IPv4 header.
  var bytes: UnsafeMutableRawBufferPointer { get }
}

extension IPv4HeaderFields {
  @inlinable public var protocolNumber: UInt8 { bytes[9] }
  @inlinable public var headerChecksum: UInt16 {
    get { bytes.loadBE16(at: 10) }
    nonmutating set { bytes.storeBE16(newValue, at: 10) }
  }
  /// Raw source address; setting it does NOT fix any checksum (see `rewriteSource`).
  @inlinable public var source: IPv4Address {
    get { IPv4Address(bytes.loadBE32(at: 12)) }
    nonmutating set { bytes.storeBE32(newValue.value, at: 12) }
  }
  /// Raw destination address; setting it does NOT fix any checksum.
  @inlinable public var destination: IPv4Address {
    get { IPv4Address(bytes.loadBE32(at: 16)) }
    nonmutating set { bytes.storeBE32(newValue.value, at: 16) }
  }
}

/// An in-place view of an IPv4 packet in a caller-owned buffer: computed accessors read and write
/// the header fields directly, so translating a packet allocates nothing.
///
/// `init(validating:)` is the only way in and checks version, IHL and total length, so every
/// accessor below stays within `bytes`. `bytes` is trimmed to the total length (link-layer padding
/// after the datagram is ignored).
@frozen
public struct IPv4PacketView: IPv4HeaderFields {
  /// The datagram, exactly `totalLength` bytes.
  public let bytes: UnsafeMutableRawBufferPointer
  /// IHL × 4, at least 20.
  public let headerLength: Int

  @inlinable
  public init(validating buffer: UnsafeMutableRawBufferPointer) throws(PacketError) {
    let count = buffer.count
    guard count >= 20 else { throw .truncated(.ipv4, needed: 20, available: count) }
    let vihl = buffer[0]
    guard vihl >> 4 == 4 else { throw .badVersion(.ipv4, vihl >> 4) }
    let hl = Int(vihl & 0x0F) &* 4
    guard hl >= 20 else { throw .badHeaderLength(.ipv4, hl) }
    guard hl <= count else { throw .truncated(.ipv4, needed: hl, available: count) }
    let total = Int(buffer.loadBE16(at: 2))
    guard total >= hl, total <= count else { throw .totalLengthMismatch(declared: total, available: count) }
    self.bytes = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<total])
    self.headerLength = hl
  }

  @inlinable public var version: UInt8 { bytes[0] >> 4 }
  @inlinable public var dscpECN: UInt8 { bytes[1] }
  @inlinable public var totalLength: Int { bytes.count }
  @inlinable public var identification: UInt16 { bytes.loadBE16(at: 4) }
  @inlinable public var dontFragment: Bool { bytes[6] & 0x40 != 0 }
  @inlinable public var moreFragments: Bool { bytes[6] & 0x20 != 0 }
  /// Fragment offset in bytes.
  @inlinable public var fragmentOffset: Int { Int(bytes.loadBE16(at: 6) & 0x1FFF) &* 8 }
  /// True for any fragment but the first: such packets carry no transport header.
  @inlinable public var isNonFirstFragment: Bool { bytes.loadBE16(at: 6) & 0x1FFF != 0 }
  @inlinable public var ttl: UInt8 {
    get { bytes[8] }
    nonmutating set { bytes[8] = newValue }
  }

  /// The transport payload (after the header, up to the total length).
  @inlinable public var payload: UnsafeMutableRawBufferPointer {
    UnsafeMutableRawBufferPointer(rebasing: bytes[headerLength...])
  }

  /// Header checksum computed over the header as it is now (with the checksum field taken as 0).
  @inlinable
  public func computeHeaderChecksum() -> UInt16 {
    let header = UnsafeRawBufferPointer(rebasing: bytes[0..<headerLength])
    let total = InternetChecksum.sum(header)
    return ~InternetChecksum.fold(total &+ UInt64(~headerChecksum))
  }

  @inlinable
  public var headerChecksumIsValid: Bool {
    InternetChecksum.fold(InternetChecksum.sum(UnsafeRawBufferPointer(rebasing: bytes[0..<headerLength]))) == 0xFFFF
  }

  /// Sets the header checksum from scratch.
  @inlinable
  public func updateHeaderChecksum() { headerChecksum = computeHeaderChecksum() }

  /// Sum of the TCP/UDP pseudo-header for this packet's addresses and payload length.
  @inlinable
  public var pseudoHeaderSum: UInt64 {
    InternetChecksum.pseudoHeaderSum(
      source: source, destination: destination, protocol: protocolNumber, length: totalLength &- headerLength)
  }

  /// Replaces the source address, updating the header checksum incrementally (RFC 1624).
  /// The caller fixes the transport checksum (its pseudo-header contains the address).
  @inlinable
  public func rewriteSource(_ address: IPv4Address) {
    let old = bytes.loadBE32(at: 12)
    headerChecksum = InternetChecksum.update(headerChecksum, old: old, new: address.value)
    bytes.storeBE32(address.value, at: 12)
  }

  /// Replaces the destination address, updating the header checksum incrementally.
  @inlinable
  public func rewriteDestination(_ address: IPv4Address) {
    let old = bytes.loadBE32(at: 16)
    headerChecksum = InternetChecksum.update(headerChecksum, old: old, new: address.value)
    bytes.storeBE32(address.value, at: 16)
  }
}
