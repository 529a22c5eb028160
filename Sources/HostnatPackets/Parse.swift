public import HostnatAddressing

/// Everything `PacketParser.parse` learned about a packet, as plain values (for tests, logs and
/// tools; the data plane uses the in-place views instead).
public struct ParsedPacket: Hashable, Sendable {
  public var source: IPv4Address
  public var destination: IPv4Address
  public var protocolNumber: UInt8
  public var ttl: UInt8
  public var identification: UInt16
  public var dontFragment: Bool
  public var moreFragments: Bool
  public var headerLength: Int
  public var totalLength: Int
  public var transport: Transport

  /// The transport layer of a parsed packet.
  public enum Transport: Hashable, Sendable {
    case tcp(sourcePort: UInt16, destinationPort: UInt16, flags: TCPFlags, sequence: UInt32, acknowledgment: UInt32)
    case udp(sourcePort: UInt16, destinationPort: UInt16, hasChecksum: Bool)
    case icmpEcho(type: UInt8, identifier: UInt16, sequence: UInt16)
    case icmpError(type: UInt8, code: UInt8, quoted: QuotedHeader)
  }

  /// The addresses and ports of the datagram quoted in an ICMP error.
  public struct QuotedHeader: Hashable, Sendable {
    public var source: IPv4Address
    public var destination: IPv4Address
    public var protocolNumber: UInt8
    /// Port for TCP/UDP, identifier for ICMP echo.
    public var sourcePort: UInt16
    public var destinationPort: UInt16

    public init(
      source: IPv4Address, destination: IPv4Address, protocolNumber: UInt8, sourcePort: UInt16, destinationPort: UInt16
    ) {
      self.source = source
      self.destination = destination
      self.protocolNumber = protocolNumber
      self.sourcePort = sourcePort
      self.destinationPort = destinationPort
    }
  }
}

/// Strict, non-trapping parser over any byte string.
public enum PacketParser {
  /// Parses an IPv4 packet with TCP, UDP, ICMP echo or an ICMP error.
  ///
  /// With `verifyChecksums`, the IP header checksum and (for unfragmented packets) the transport
  /// checksum must verify; a first fragment's transport checksum covers bytes that are not here, so
  /// it is not checked.
  public static func parse(_ buffer: UnsafeMutableRawBufferPointer, verifyChecksums: Bool = true) throws(PacketError)
    -> ParsedPacket
  {
    let ip = try IPv4PacketView(validating: buffer)
    if verifyChecksums, !ip.headerChecksumIsValid { throw .badChecksum(.ipv4) }
    if ip.isNonFirstFragment { throw .nonFirstFragment(offset: ip.fragmentOffset) }
    let checkL4 = verifyChecksums && !ip.moreFragments
    let transport: ParsedPacket.Transport
    switch ip.protocolNumber {
    case IPProtocol.tcp:
      let tcp = try TCPHeaderView(validating: ip.payload)
      if checkL4, !tcp.checksumIsValid(pseudoHeaderSum: ip.pseudoHeaderSum) { throw .badChecksum(.tcp) }
      transport = .tcp(
        sourcePort: tcp.sourcePort, destinationPort: tcp.destinationPort, flags: tcp.flags,
        sequence: tcp.sequenceNumber, acknowledgment: tcp.acknowledgmentNumber)
    case IPProtocol.udp:
      // A first fragment's UDP length covers the whole datagram, so only check it when unfragmented.
      let udp: UDPHeaderView
      if ip.moreFragments {
        guard ip.payload.count >= 8 else { throw .truncated(.udp, needed: 8, available: ip.payload.count) }
        udp = UDPHeaderView(unchecked: ip.payload)
      } else {
        udp = try UDPHeaderView(validating: ip.payload)
      }
      if checkL4, !udp.checksumIsValid(pseudoHeaderSum: ip.pseudoHeaderSum) { throw .badChecksum(.udp) }
      transport = .udp(sourcePort: udp.sourcePort, destinationPort: udp.destinationPort, hasChecksum: udp.checksum != 0)
    case IPProtocol.icmp:
      let icmp = try ICMPMessageView(validating: ip.payload)
      if checkL4, !icmp.checksumIsValid { throw .badChecksum(.icmp) }
      if ICMPType.isEcho(icmp.type) {
        transport = .icmpEcho(type: icmp.type, identifier: icmp.identifier, sequence: icmp.sequence)
      } else if ICMPType.isError(icmp.type) {
        let quote = try QuotedDatagramView(validating: icmp.quoted)
        transport = .icmpError(
          type: icmp.type, code: icmp.code,
          quoted: .init(
            source: quote.source, destination: quote.destination, protocolNumber: quote.protocolNumber,
            sourcePort: quote.sourcePortOrIdentifier, destinationPort: quote.destinationPort))
      } else {
        throw .unsupportedICMPType(icmp.type)
      }
    default:
      throw .unsupportedProtocol(ip.protocolNumber)
    }
    return ParsedPacket(
      source: ip.source, destination: ip.destination, protocolNumber: ip.protocolNumber, ttl: ip.ttl,
      identification: ip.identification, dontFragment: ip.dontFragment, moreFragments: ip.moreFragments,
      headerLength: ip.headerLength, totalLength: ip.totalLength, transport: transport)
  }

  /// Parses a copy of `bytes` (the input is never modified).
  public static func parse(_ bytes: [UInt8], verifyChecksums: Bool = true) throws(PacketError) -> ParsedPacket {
    var copy = bytes
    let result = copy.withUnsafeMutableBytes { buffer in
      Result { () throws(PacketError) -> ParsedPacket in try parse(buffer, verifyChecksums: verifyChecksums) }
    }
    return try result.get()
  }
}

extension UDPHeaderView {
  /// For a first fragment, whose UDP length field describes bytes not present here.
  @usableFromInline
  init(unchecked datagram: UnsafeMutableRawBufferPointer) { bytes = datagram }
}
