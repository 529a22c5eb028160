import HostnatAddressing

/// ICMP message types this project understands (RFC 792).
public enum ICMPType {
  public static let echoReply: UInt8 = 0
  public static let destinationUnreachable: UInt8 = 3
  public static let sourceQuench: UInt8 = 4
  public static let redirect: UInt8 = 5
  public static let echoRequest: UInt8 = 8
  public static let timeExceeded: UInt8 = 11
  public static let parameterProblem: UInt8 = 12

  /// Error messages quote the offending datagram's IP header plus at least 8 bytes of it.
  @inlinable
  public static func isError(_ type: UInt8) -> Bool {
    type == destinationUnreachable || type == sourceQuench || type == redirect || type == timeExceeded
      || type == parameterProblem
  }

  @inlinable
  public static func isEcho(_ type: UInt8) -> Bool { type == echoRequest || type == echoReply }
}

/// In-place view of an ICMP message (the IP payload): the 8-byte header is guaranteed present.
/// For echo messages bytes 4–7 are identifier and sequence; for errors the quoted datagram starts
/// at byte 8.
@frozen
public struct ICMPMessageView {
  public let bytes: UnsafeMutableRawBufferPointer

  @inlinable
  public init(validating message: UnsafeMutableRawBufferPointer) throws(PacketError) {
    guard message.count >= 8 else { throw .truncated(.icmp, needed: 8, available: message.count) }
    bytes = message
  }

  @inlinable public var type: UInt8 { bytes[0] }
  @inlinable public var code: UInt8 { bytes[1] }
  @inlinable public var checksum: UInt16 {
    get { bytes.loadBE16(at: 2) }
    nonmutating set { bytes.storeBE16(newValue, at: 2) }
  }
  /// Echo identifier (the "port" of an ICMP query, RFC 5508).
  @inlinable public var identifier: UInt16 {
    get { bytes.loadBE16(at: 4) }
    nonmutating set { bytes.storeBE16(newValue, at: 4) }
  }
  @inlinable public var sequence: UInt16 { bytes.loadBE16(at: 6) }

  /// The quoted datagram of an error message (bytes after the 8-byte header).
  @inlinable public var quoted: UnsafeMutableRawBufferPointer {
    UnsafeMutableRawBufferPointer(rebasing: bytes[8...])
  }

  @inlinable
  public func computeChecksum() -> UInt16 {
    ~InternetChecksum.fold(InternetChecksum.sum(UnsafeRawBufferPointer(bytes)) &+ UInt64(~checksum))
  }

  @inlinable
  public var checksumIsValid: Bool { InternetChecksum.fold(InternetChecksum.sum(UnsafeRawBufferPointer(bytes))) == 0xFFFF }
}

/// The datagram quoted in an ICMP error: its IPv4 header and the first 8 bytes of its transport
/// header (RFC 792). The quote may be truncated by the sender, so its total length field is NOT
/// required to match; only the header and 8 transport bytes must be present.
@frozen
public struct QuotedDatagramView: IPv4HeaderFields {
  public let bytes: UnsafeMutableRawBufferPointer
  public let headerLength: Int

  @inlinable
  public init(validating quote: UnsafeMutableRawBufferPointer) throws(PacketError) {
    guard quote.count >= 20 else { throw .truncated(.embeddedIPv4, needed: 20, available: quote.count) }
    let vihl = quote[0]
    guard vihl >> 4 == 4 else { throw .badVersion(.embeddedIPv4, vihl >> 4) }
    let hl = Int(vihl & 0x0F) &* 4
    guard hl >= 20 else { throw .badHeaderLength(.embeddedIPv4, hl) }
    guard hl &+ 8 <= quote.count else { throw .truncated(.embeddedIPv4, needed: hl &+ 8, available: quote.count) }
    guard quote.loadBE16(at: 6) & 0x1FFF == 0 else { throw .nonFirstFragment(offset: Int(quote.loadBE16(at: 6) & 0x1FFF) &* 8) }
    bytes = quote
    headerLength = hl
  }

  /// Quoted transport bytes (at least 8).
  @inlinable public var transport: UnsafeMutableRawBufferPointer {
    UnsafeMutableRawBufferPointer(rebasing: bytes[headerLength...])
  }
  /// Source port (TCP/UDP) or echo identifier (ICMP echo) of the quoted datagram.
  @inlinable public var sourcePortOrIdentifier: UInt16 {
    protocolNumber == IPProtocol.icmp ? bytes.loadBE16(at: headerLength &+ 4) : bytes.loadBE16(at: headerLength)
  }
  @inlinable public var destinationPort: UInt16 {
    protocolNumber == IPProtocol.icmp ? 0 : bytes.loadBE16(at: headerLength &+ 2)
  }
  /// ICMP type of the quoted datagram (meaningful when `protocolNumber` is ICMP).
  @inlinable public var icmpType: UInt8 { bytes[headerLength] }
  @inlinable
  public var headerChecksumIsValid: Bool {
    InternetChecksum.fold(InternetChecksum.sum(UnsafeRawBufferPointer(rebasing: bytes[0..<headerLength]))) == 0xFFFF
  }
}
