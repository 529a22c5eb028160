/// TCP header flag bits (RFC 9293).
public struct TCPFlags: OptionSet, Hashable, Sendable {
  public let rawValue: UInt8
  @inlinable public init(rawValue: UInt8) { self.rawValue = rawValue }
  public static let fin = TCPFlags(rawValue: 0x01)
  public static let syn = TCPFlags(rawValue: 0x02)
  public static let rst = TCPFlags(rawValue: 0x04)
  public static let psh = TCPFlags(rawValue: 0x08)
  public static let ack = TCPFlags(rawValue: 0x10)
  public static let urg = TCPFlags(rawValue: 0x20)
}

/// In-place view of a TCP header (the IP payload). Validated to hold the whole header (data
/// offset × 4 bytes, options included).
@frozen
public struct TCPHeaderView {
  public let bytes: UnsafeMutableRawBufferPointer
  public let headerLength: Int

  @inlinable
  public init(validating segment: UnsafeMutableRawBufferPointer) throws(PacketError) {
    guard segment.count >= 20 else { throw .truncated(.tcp, needed: 20, available: segment.count) }
    let hl = Int(segment[12] >> 4) &* 4
    guard hl >= 20 else { throw .badHeaderLength(.tcp, hl) }
    guard hl <= segment.count else { throw .truncated(.tcp, needed: hl, available: segment.count) }
    bytes = segment
    headerLength = hl
  }

  @inlinable public var sourcePort: UInt16 {
    get { bytes.loadBE16(at: 0) }
    nonmutating set { bytes.storeBE16(newValue, at: 0) }
  }
  @inlinable public var destinationPort: UInt16 {
    get { bytes.loadBE16(at: 2) }
    nonmutating set { bytes.storeBE16(newValue, at: 2) }
  }
  @inlinable public var sequenceNumber: UInt32 { bytes.loadBE32(at: 4) }
  @inlinable public var acknowledgmentNumber: UInt32 { bytes.loadBE32(at: 8) }
  @inlinable public var flags: TCPFlags { TCPFlags(rawValue: bytes[13] & 0x3F) }
  @inlinable public var window: UInt16 { bytes.loadBE16(at: 14) }
  @inlinable public var checksum: UInt16 {
    get { bytes.loadBE16(at: 16) }
    nonmutating set { bytes.storeBE16(newValue, at: 16) }
  }
  @inlinable public var urgentPointer: UInt16 { bytes.loadBE16(at: 18) }

  /// Checksum over pseudo-header + segment, as it should be stored.
  @inlinable
  public func computeChecksum(pseudoHeaderSum: UInt64) -> UInt16 {
    ~InternetChecksum.fold(InternetChecksum.sum(UnsafeRawBufferPointer(bytes), initial: pseudoHeaderSum) &+ UInt64(~checksum))
  }

  @inlinable
  public func checksumIsValid(pseudoHeaderSum: UInt64) -> Bool {
    InternetChecksum.fold(InternetChecksum.sum(UnsafeRawBufferPointer(bytes), initial: pseudoHeaderSum)) == 0xFFFF
  }
}
