/// In-place view of a UDP datagram (the IP payload). The UDP length must equal the IP payload
/// length: a mismatch is reported rather than guessed around.
@frozen
public struct UDPHeaderView {
  public let bytes: UnsafeMutableRawBufferPointer

  @inlinable
  public init(validating datagram: UnsafeMutableRawBufferPointer) throws(PacketError) {
    guard datagram.count >= 8 else { throw .truncated(.udp, needed: 8, available: datagram.count) }
    let length = Int(datagram.loadBE16(at: 4))
    guard length == datagram.count else { throw .lengthMismatch(.udp, declared: length, available: datagram.count) }
    bytes = datagram
  }

  @inlinable public var sourcePort: UInt16 {
    get { bytes.loadBE16(at: 0) }
    nonmutating set { bytes.storeBE16(newValue, at: 0) }
  }
  @inlinable public var destinationPort: UInt16 {
    get { bytes.loadBE16(at: 2) }
    nonmutating set { bytes.storeBE16(newValue, at: 2) }
  }
  @inlinable public var length: Int { Int(bytes.loadBE16(at: 4)) }
  /// 0 means the sender computed no checksum (RFC 768).
  @inlinable public var checksum: UInt16 {
    get { bytes.loadBE16(at: 6) }
    nonmutating set { bytes.storeBE16(newValue, at: 6) }
  }

  /// Checksum as it should be stored (0 mapped to 0xFFFF).
  @inlinable
  public func computeChecksum(pseudoHeaderSum: UInt64) -> UInt16 {
    let sum = InternetChecksum.sum(UnsafeRawBufferPointer(bytes), initial: pseudoHeaderSum) &+ UInt64(~checksum)
    return InternetChecksum.udpWire(~InternetChecksum.fold(sum))
  }

  /// True when the checksum verifies or is absent (0).
  @inlinable
  public func checksumIsValid(pseudoHeaderSum: UInt64) -> Bool {
    checksum == 0
      || InternetChecksum.fold(InternetChecksum.sum(UnsafeRawBufferPointer(bytes), initial: pseudoHeaderSum)) == 0xFFFF
  }
}
