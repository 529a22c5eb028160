public import HostnatAddressing

/// Builders that produce complete, checksummed packets as `[UInt8]` for tests, fixtures and
/// benchmark workloads (not for the data plane, which rewrites in place).
public enum PacketBuilder {
  /// IPv4 header (no options) + `payload`. The header checksum is computed; `fixL4` lets callers
  /// fill the transport checksum once the addresses are in place.
  public static func ipv4(
    source: IPv4Address, destination: IPv4Address, protocol proto: UInt8, payload: [UInt8],
    ttl: UInt8 = 64, identification: UInt16 = 0, dontFragment: Bool = true
  ) -> [UInt8] {
    let total = 20 + payload.count
    precondition(total <= 65_535, "IPv4 datagram too large")
    var bytes: [UInt8] = [
      0x45, 0, UInt8(total >> 8), UInt8(total & 0xFF),
      UInt8(identification >> 8), UInt8(identification & 0xFF), dontFragment ? 0x40 : 0, 0,
      ttl, proto, 0, 0,
    ]
    bytes += be32(source.value)
    bytes += be32(destination.value)
    let checksum = InternetChecksum.checksum(bytes)
    bytes[10] = UInt8(checksum >> 8)
    bytes[11] = UInt8(checksum & 0xFF)
    return bytes + payload
  }

  public static func tcp(
    source: IPv4Address, destination: IPv4Address, sourcePort: UInt16, destinationPort: UInt16,
    flags: TCPFlags, sequence: UInt32 = 0, acknowledgment: UInt32 = 0, window: UInt16 = 65_535,
    payload: [UInt8] = [], ttl: UInt8 = 64, identification: UInt16 = 0
  ) -> [UInt8] {
    var segment = be16(sourcePort) + be16(destinationPort) + be32(sequence) + be32(acknowledgment)
    segment += [0x50, flags.rawValue] + be16(window) + [0, 0, 0, 0]
    segment += payload
    let sum = InternetChecksum.pseudoHeaderSum(
      source: source, destination: destination, protocol: IPProtocol.tcp, length: segment.count)
    let checksum = segment.withUnsafeBytes { InternetChecksum.checksum($0, initial: sum) }
    segment[16] = UInt8(checksum >> 8)
    segment[17] = UInt8(checksum & 0xFF)
    return ipv4(
      source: source, destination: destination, protocol: IPProtocol.tcp, payload: segment, ttl: ttl,
      identification: identification)
  }

  /// UDP datagram; with `checksum: false` the checksum field is 0 ("none", RFC 768).
  public static func udp(
    source: IPv4Address, destination: IPv4Address, sourcePort: UInt16, destinationPort: UInt16,
    payload: [UInt8] = [], checksum: Bool = true, ttl: UInt8 = 64, identification: UInt16 = 0
  ) -> [UInt8] {
    let length = 8 + payload.count
    var datagram = be16(sourcePort) + be16(destinationPort) + be16(UInt16(length)) + [0, 0] + payload
    if checksum {
      let sum = InternetChecksum.pseudoHeaderSum(
        source: source, destination: destination, protocol: IPProtocol.udp, length: length)
      let value = InternetChecksum.udpWire(datagram.withUnsafeBytes { InternetChecksum.checksum($0, initial: sum) })
      datagram[6] = UInt8(value >> 8)
      datagram[7] = UInt8(value & 0xFF)
    }
    return ipv4(
      source: source, destination: destination, protocol: IPProtocol.udp, payload: datagram, ttl: ttl,
      identification: identification)
  }

  /// ICMP echo request (type 8) or reply (type 0).
  public static func icmpEcho(
    source: IPv4Address, destination: IPv4Address, type: UInt8 = ICMPType.echoRequest, identifier: UInt16,
    sequence: UInt16, payload: [UInt8] = [], ttl: UInt8 = 64, identification: UInt16 = 0
  ) -> [UInt8] {
    var message = [type, 0, 0, 0] + be16(identifier) + be16(sequence) + payload
    let checksum = InternetChecksum.checksum(message)
    message[2] = UInt8(checksum >> 8)
    message[3] = UInt8(checksum & 0xFF)
    return ipv4(
      source: source, destination: destination, protocol: IPProtocol.icmp, payload: message, ttl: ttl,
      identification: identification)
  }

  /// ICMP error quoting `original` (a whole IPv4 packet). By default it quotes the IP header plus 8
  /// bytes (RFC 792's minimum); `quotedBytes` quotes more (RFC 1812 allows up to 576 total).
  public static func icmpError(
    source: IPv4Address, destination: IPv4Address, type: UInt8, code: UInt8, quoting original: [UInt8],
    quotedBytes: Int? = nil, ttl: UInt8 = 64
  ) -> [UInt8] {
    let headerLength = original.isEmpty ? 20 : Int(original[0] & 0x0F) * 4
    let length = min(original.count, quotedBytes ?? (headerLength + 8))
    var message = [type, code, 0, 0, 0, 0, 0, 0] + original[0..<length]
    let checksum = InternetChecksum.checksum(message)
    message[2] = UInt8(checksum >> 8)
    message[3] = UInt8(checksum & 0xFF)
    return ipv4(source: source, destination: destination, protocol: IPProtocol.icmp, payload: message, ttl: ttl)
  }

  @inlinable
  static func be16(_ v: UInt16) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 0xFF)] }

  @inlinable
  static func be32(_ v: UInt32) -> [UInt8] {
    [UInt8(v >> 24), UInt8(v >> 16 & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)]
  }
}

/// Hex text <-> bytes, for fixtures and debugging output.
public enum Hex {
  /// Decodes hex digits, ignoring whitespace and `#` comments to end of line. Nil on odd length or
  /// a non-hex character.
  public static func decode(_ text: String) -> [UInt8]? {
    var out: [UInt8] = []
    var high: UInt8? = nil
    var comment = false
    for c in text.utf8 {
      if comment {
        if c == UInt8(ascii: "\n") { comment = false }
        continue
      }
      let nibble: UInt8
      switch c {
      case UInt8(ascii: "#"): comment = true; continue
      case UInt8(ascii: " "), UInt8(ascii: "\n"), UInt8(ascii: "\t"), UInt8(ascii: "\r"): continue
      case UInt8(ascii: "0")...UInt8(ascii: "9"): nibble = c - UInt8(ascii: "0")
      case UInt8(ascii: "a")...UInt8(ascii: "f"): nibble = c - UInt8(ascii: "a") + 10
      case UInt8(ascii: "A")...UInt8(ascii: "F"): nibble = c - UInt8(ascii: "A") + 10
      default: return nil
      }
      if let h = high {
        out.append(h << 4 | nibble)
        high = nil
      } else {
        high = nibble
      }
    }
    return high == nil ? out : nil
  }

  public static func encode(_ bytes: [UInt8]) -> String {
    let digits = Array("0123456789abcdef".utf8)
    var out: [UInt8] = []
    out.reserveCapacity(bytes.count * 2)
    for b in bytes {
      out.append(digits[Int(b >> 4)])
      out.append(digits[Int(b & 0xF)])
    }
    return String(decoding: out, as: UTF8.self)
  }
}
