public import HostnatAddressing

// Shared by the pure endpoint modules (HostnatInternet, HostnatWorkload): building whole packets
// in one reused buffer, so answering or generating a packet allocates nothing.

/// One reusable output buffer: replies are assembled in place (payload first, then headers and
/// checksums) and handed to `emit` as a slice, so answering a packet allocates nothing.
public final class PacketScratch {
  public static let ipHeader = 20
  public static let udpPayloadOffset = 28
  public static let tcpPayloadOffset = 40
  public static let icmpPayloadOffset = 28
  public static let capacity = 65_535

  public let buffer: UnsafeMutableRawBufferPointer

  public init() {
    buffer = .allocate(byteCount: PacketScratch.capacity, alignment: 8)
    buffer.initializeMemory(as: UInt8.self, repeating: 0)
  }

  deinit { buffer.deallocate() }

  /// Room for a payload starting at `offset`.
  public func area(at offset: Int) -> UnsafeMutableRawBufferPointer {
    UnsafeMutableRawBufferPointer(rebasing: buffer[offset...])
  }

  /// Copies `bytes` to `offset`; returns how many were copied (clipped to the buffer).
  @discardableResult
  public func copy(_ bytes: UnsafeRawBufferPointer, to offset: Int) -> Int {
    let n = min(bytes.count, PacketScratch.capacity - offset)
    if n > 0 {
      UnsafeMutableRawBufferPointer(rebasing: buffer[offset..<offset + n])
        .copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[0..<n]))
    }
    return n
  }

  public func copy(_ bytes: [UInt8], to offset: Int) -> Int { bytes.withUnsafeBytes { copy($0, to: offset) } }

  public func copy(_ text: StaticString, to offset: Int) -> Int {
    copy(UnsafeRawBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount), to: offset)
  }

  private func ipv4(source: IPv4Address, destination: IPv4Address, protocol proto: UInt8, total: Int) {
    buffer[0] = 0x45
    buffer[1] = 0
    buffer.storeBE16(UInt16(total), at: 2)
    buffer.storeBE16(0, at: 4)
    buffer[6] = 0x40  // DF: these hosts do path-MTU discovery like real ones
    buffer[7] = 0
    buffer[8] = 64
    buffer[9] = proto
    buffer.storeBE16(0, at: 10)
    buffer.storeBE32(source.value, at: 12)
    buffer.storeBE32(destination.value, at: 16)
    buffer.storeBE16(InternetChecksum.checksum(UnsafeRawBufferPointer(rebasing: buffer[0..<20])), at: 10)
  }

  public func udp(
    source: IPv4Address, destination: IPv4Address, sourcePort: UInt16, destinationPort: UInt16, payloadCount: Int
  ) -> UnsafeRawBufferPointer {
    let l4 = 8 + payloadCount
    let total = 20 + l4
    buffer.storeBE16(sourcePort, at: 20)
    buffer.storeBE16(destinationPort, at: 22)
    buffer.storeBE16(UInt16(l4), at: 24)
    buffer.storeBE16(0, at: 26)
    let pseudo = InternetChecksum.pseudoHeaderSum(
      source: source, destination: destination, protocol: IPProtocol.udp, length: l4)
    let sum = InternetChecksum.checksum(UnsafeRawBufferPointer(rebasing: buffer[20..<total]), initial: pseudo)
    buffer.storeBE16(InternetChecksum.udpWire(sum), at: 26)
    ipv4(source: source, destination: destination, protocol: IPProtocol.udp, total: total)
    return UnsafeRawBufferPointer(rebasing: buffer[0..<total])
  }

  public func tcp(
    source: IPv4Address, destination: IPv4Address, sourcePort: UInt16, destinationPort: UInt16,
    sequence: UInt32, acknowledgment: UInt32, flags: TCPFlags, window: UInt16, payloadCount: Int
  ) -> UnsafeRawBufferPointer {
    let l4 = 20 + payloadCount
    let total = 20 + l4
    buffer.storeBE16(sourcePort, at: 20)
    buffer.storeBE16(destinationPort, at: 22)
    buffer.storeBE32(sequence, at: 24)
    buffer.storeBE32(flags.contains(.ack) ? acknowledgment : 0, at: 28)
    buffer[32] = 0x50
    buffer[33] = flags.rawValue
    buffer.storeBE16(window, at: 34)
    buffer.storeBE16(0, at: 36)
    buffer.storeBE16(0, at: 38)
    let pseudo = InternetChecksum.pseudoHeaderSum(
      source: source, destination: destination, protocol: IPProtocol.tcp, length: l4)
    buffer.storeBE16(
      InternetChecksum.checksum(UnsafeRawBufferPointer(rebasing: buffer[20..<total]), initial: pseudo), at: 36)
    ipv4(source: source, destination: destination, protocol: IPProtocol.tcp, total: total)
    return UnsafeRawBufferPointer(rebasing: buffer[0..<total])
  }

  /// ICMP message: type, code, the 4 "rest of header" bytes, then `payloadCount` bytes already at
  /// `icmpPayloadOffset`.
  public func icmp(
    source: IPv4Address, destination: IPv4Address, type: UInt8, code: UInt8, rest: UInt32, payloadCount: Int
  ) -> UnsafeRawBufferPointer {
    let total = 28 + payloadCount
    buffer[20] = type
    buffer[21] = code
    buffer.storeBE16(0, at: 22)
    buffer.storeBE32(rest, at: 24)
    buffer.storeBE16(InternetChecksum.checksum(UnsafeRawBufferPointer(rebasing: buffer[20..<total])), at: 22)
    ipv4(source: source, destination: destination, protocol: IPProtocol.icmp, total: total)
    return UnsafeRawBufferPointer(rebasing: buffer[0..<total])
  }
}

/// SplitMix64: deterministic, seedable, good enough for ISNs and jitter.
public struct SplitMix64: RandomNumberGenerator {
  public var state: UInt64
  public init(seed: UInt64) { state = seed }
  public mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }
}

/// TCP sequence-space comparisons (RFC 9293 §3.4: modulo 2^32).
@inlinable public func seqLT(_ a: UInt32, _ b: UInt32) -> Bool { Int32(bitPattern: a &- b) < 0 }
@inlinable public func seqLE(_ a: UInt32, _ b: UInt32) -> Bool { Int32(bitPattern: a &- b) <= 0 }
@inlinable public func seqGT(_ a: UInt32, _ b: UInt32) -> Bool { Int32(bitPattern: a &- b) > 0 }
@inlinable public func seqGE(_ a: UInt32, _ b: UInt32) -> Bool { Int32(bitPattern: a &- b) >= 0 }

/// Appends the decimal text of `value` to `area` at `offset`; returns the new offset.
public func writeDecimal(_ value: UInt32, into area: UnsafeMutableRawBufferPointer, at offset: Int) -> Int {
  var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
  var n = 0
  var v = value
  withUnsafeMutableBytes(of: &digits) { d in
    repeat {
      d[n] = UInt8(ascii: "0") + UInt8(v % 10)
      v /= 10
      n += 1
    } while v > 0
  }
  var o = offset
  withUnsafeBytes(of: &digits) { d in
    for i in stride(from: n - 1, through: 0, by: -1) {
      area[o] = d[i]
      o += 1
    }
  }
  return o
}

/// Writes "a.b.c.d:port" to `area` at `offset`; returns the new offset (at most 21 bytes written).
public func writeEndpoint(_ address: IPv4Address, _ port: UInt16, into area: UnsafeMutableRawBufferPointer, at offset: Int)
  -> Int
{
  var o = offset
  for shift in stride(from: 24, through: 0, by: -8) {
    o = writeDecimal(address.value >> UInt32(shift) & 0xFF, into: area, at: o)
    area[o] = shift == 0 ? UInt8(ascii: ":") : UInt8(ascii: ".")
    o += 1
  }
  return writeDecimal(UInt32(port), into: area, at: o)
}
