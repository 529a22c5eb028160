/// The protocol layer a ``PacketError`` refers to.
public enum PacketLayer: String, Sendable, Hashable {
  case ipv4, tcp, udp, icmp, geneve
  /// The IPv4 header quoted inside an ICMP error (RFC 792).
  case embeddedIPv4
}

/// Why a byte string is not a packet this module can handle. Parsing never traps: every
/// input-derived offset is checked and a failure is reported with one of these reasons.
public enum PacketError: Error, Hashable, Sendable {
  /// Fewer bytes than the layer's header (or its declared length) needs.
  case truncated(PacketLayer, needed: Int, available: Int)
  /// IP version nibble is not 4, or the Geneve version is not 0.
  case badVersion(PacketLayer, UInt8)
  /// IHL below 5 words (or beyond the buffer), or a TCP data offset below 5 words.
  case badHeaderLength(PacketLayer, Int)
  /// The IPv4 total length is smaller than the header or larger than the bytes received.
  case totalLengthMismatch(declared: Int, available: Int)
  /// The UDP length field disagrees with the IP payload length.
  case lengthMismatch(PacketLayer, declared: Int, available: Int)
  /// A checksum that was asked to be verified does not verify.
  case badChecksum(PacketLayer)
  /// A non-first fragment carries no transport header, so it has no ports to look at.
  case nonFirstFragment(offset: Int)
  /// An IP protocol other than TCP, UDP or ICMP.
  case unsupportedProtocol(UInt8)
  /// An ICMP type that is neither echo nor one of the RFC 792 error messages.
  case unsupportedICMPType(UInt8)
  /// Geneve payload is not IPv4 (protocol type other than 0x0800).
  case unsupportedPayloadType(UInt16)
  /// A Geneve option TLV runs past the declared options length.
  case malformedOptions
}
