/// An IPv4 address as the planner sees it: a host-order `UInt32`, written "a.b.c.d".
///
/// HostnatPackets has its own address type; the planner keeps this small copy so that it stays a
/// module without dependencies.
public struct PlannerIPv4Address: Hashable, Comparable, Sendable, CustomStringConvertible {
  /// The address in host byte order: 10.0.0.1 is 0x0A00_0001.
  public var value: UInt32

  public init(_ value: UInt32) { self.value = value }

  /// Parses strict dotted-quad text: four decimal octets, no leading zeros, no whitespace.
  public init?(_ text: some StringProtocol) {
    // Contiguous UTF-8 (every native String) skips the UTF-8 view's per-byte index checks.
    if let parsed = text.utf8.withContiguousStorageIfAvailable({ Self.parse($0) }) {
      guard let parsed else { return nil }
      value = parsed
      return
    }
    guard let parsed = Self.parse(text.utf8) else { return nil }
    value = parsed
  }

  private static func parse(_ bytes: some Sequence<UInt8>) -> UInt32? {
    var octets = 0
    var current: UInt32 = 0
    var digits = 0
    var result: UInt32 = 0
    for byte in bytes {
      if byte == UInt8(ascii: ".") {
        guard digits > 0, octets < 3 else { return nil }
        result = result << 8 | current
        octets += 1
        current = 0
        digits = 0
      } else if byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") {
        // "010" reads as octal in some parsers: refuse rather than guess.
        if digits == 1, current == 0 { return nil }
        current = current * 10 + UInt32(byte - UInt8(ascii: "0"))
        digits += 1
        guard current <= 255 else { return nil }
      } else {
        return nil
      }
    }
    guard octets == 3, digits > 0 else { return nil }
    return result << 8 | current
  }

  public var description: String {
    "\(value >> 24).\(value >> 16 & 0xFF).\(value >> 8 & 0xFF).\(value & 0xFF)"
  }

  public static func < (lhs: Self, rhs: Self) -> Bool { lhs.value < rhs.value }
}

/// An IPv4 prefix such as 10.0.0.0/24.
///
/// Parsing is strict: host bits must be zero ("10.0.0.1/24" is rejected, because a subnet or alias
/// range written that way is almost always a typo). A bare address means /32.
public struct PlannerIPv4CIDR: Hashable, Sendable, CustomStringConvertible {
  public let network: PlannerIPv4Address
  public let prefixLength: Int

  /// Returns nil when `prefixLength` is not 0...32 or `address` has host bits set.
  public init?(_ address: PlannerIPv4Address, prefixLength: Int) {
    guard (0...32).contains(prefixLength), address.value & ~Self.mask(prefixLength) == 0 else { return nil }
    self.network = address
    self.prefixLength = prefixLength
  }

  public init?(_ text: some StringProtocol) {
    let parts = text.split(separator: "/", maxSplits: 2, omittingEmptySubsequences: false)
    guard parts.count == 1 || parts.count == 2, let address = PlannerIPv4Address(parts[0]) else { return nil }
    var length = 32
    if parts.count == 2 {
      let digits = parts[1].utf8
      guard !digits.isEmpty, digits.count <= 2, digits.allSatisfy({ $0 >= 48 && $0 <= 57 }),
        let parsed = Int(parts[1])
      else { return nil }
      length = parsed
    }
    self.init(address, prefixLength: length)
  }

  static func mask(_ length: Int) -> UInt32 {
    length == 0 ? 0 : UInt32.max << UInt32(32 - length)
  }

  public var first: UInt32 { network.value }
  public var last: UInt32 { network.value | ~Self.mask(prefixLength) }
  /// Number of addresses (2^(32 - prefixLength)).
  public var size: UInt64 { 1 << UInt64(32 - prefixLength) }

  public func contains(_ address: PlannerIPv4Address) -> Bool {
    address.value & Self.mask(prefixLength) == network.value
  }

  public func contains(_ other: PlannerIPv4CIDR) -> Bool {
    other.prefixLength >= prefixLength && contains(other.network)
  }

  /// Two prefixes overlap exactly when one contains the other.
  public func overlaps(_ other: PlannerIPv4CIDR) -> Bool {
    contains(other) || other.contains(self)
  }

  public var description: String { "\(network)/\(prefixLength)" }
}
