/// An IPv4 address held as a host-order `UInt32` (so arithmetic and comparison are cheap);
/// `description` and `init?(_ text:)` use dotted-quad notation.
@frozen
public struct IPv4Address: Hashable, Sendable, Comparable, CustomStringConvertible {
  /// The address in host byte order: 10.0.0.1 is 0x0A00_0001.
  public var value: UInt32

  @inlinable
  public init(_ value: UInt32) { self.value = value }

  @inlinable
  public init(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) {
    value = UInt32(a) << 24 | UInt32(b) << 16 | UInt32(c) << 8 | UInt32(d)
  }

  /// Parses strict dotted-quad text ("192.0.2.1"): four decimal octets, no leading zeros beyond "0",
  /// no whitespace.
  public init?(_ text: some StringProtocol) {
    // Contiguous UTF-8 (every native String) skips the UTF-8 view's per-byte index checks: the
    // planner parses every NAT IP of a snapshot this way on start.
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
        // A leading zero followed by more digits would be read as octal by some parsers: refuse it.
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

  @inlinable
  public static func < (lhs: IPv4Address, rhs: IPv4Address) -> Bool { lhs.value < rhs.value }
}

/// An IPv4 prefix such as 10.0.0.0/24. The stored address is normalised to the network address.
///
/// Two ways in: `init?(_:)` clears host bits (packet paths and flags that take any address in a
/// range), `init?(strict:)` refuses them (subnet and alias ranges, where "10.0.0.1/24" is almost
/// always a typo).
@frozen
public struct IPv4CIDR: Hashable, Sendable, CustomStringConvertible {
  public let network: IPv4Address
  public let prefixLength: Int

  /// Creates a prefix; host bits of `address` are cleared. Returns nil when `prefixLength` is not 0...32.
  @inlinable
  public init?(_ address: IPv4Address, prefixLength: Int) {
    guard (0...32).contains(prefixLength) else { return nil }
    self.prefixLength = prefixLength
    self.network = IPv4Address(address.value & IPv4CIDR.mask(prefixLength))
  }

  /// Parses "a.b.c.d/n"; a bare address means /32.
  public init?(_ text: some StringProtocol) {
    let parts = text.split(separator: "/", omittingEmptySubsequences: false)
    guard parts.count == 1 || parts.count == 2, let address = IPv4Address(parts[0]) else { return nil }
    var length = 32
    if parts.count == 2 {
      guard !parts[1].isEmpty, parts[1].utf8.count <= 2, parts[1].utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }),
        let parsed = Int(parts[1])
      else { return nil }
      length = parsed
    }
    self.init(address, prefixLength: length)
  }

  /// Creates a prefix only when `address` has no host bits set and `prefixLength` is 0...32.
  @inlinable
  public init?(strict address: IPv4Address, prefixLength: Int) {
    guard (0...32).contains(prefixLength), address.value & ~IPv4CIDR.mask(prefixLength) == 0 else { return nil }
    self.prefixLength = prefixLength
    self.network = address
  }

  /// Parses "a.b.c.d/n" (a bare address means /32), refusing host bits.
  public init?(strict text: some StringProtocol) {
    guard let loose = IPv4CIDR(text), let original = IPv4Address(text.prefix(while: { $0 != "/" })),
      original == loose.network
    else { return nil }
    self = loose
  }

  /// The network mask of a prefix length 0...32 (0 for /0).
  @inlinable
  public static func mask(_ length: Int) -> UInt32 { length == 0 ? 0 : UInt32.max << UInt32(32 - length) }

  @inlinable
  public var mask: UInt32 { IPv4CIDR.mask(prefixLength) }

  /// First address of the prefix.
  @inlinable
  public var first: IPv4Address { network }

  /// Last address of the prefix (the broadcast address for prefixes shorter than /31).
  @inlinable
  public var last: IPv4Address { IPv4Address(network.value | ~mask) }

  /// Number of addresses covered (2^(32-n)), as a UInt64 so /0 fits.
  @inlinable
  public var size: UInt64 { UInt64(1) << UInt64(32 - prefixLength) }

  @inlinable
  public func contains(_ address: IPv4Address) -> Bool { address.value & mask == network.value }

  /// True when `other` lies wholly inside this prefix.
  @inlinable
  public func contains(_ other: IPv4CIDR) -> Bool {
    other.prefixLength >= prefixLength && contains(other.network)
  }

  /// True when the two prefixes share at least one address (one contains the other's network).
  @inlinable
  public func overlaps(_ other: IPv4CIDR) -> Bool {
    let shorter = min(prefixLength, other.prefixLength)
    let m = IPv4CIDR.mask(shorter)
    return network.value & m == other.network.value & m
  }

  public var description: String { "\(network)/\(prefixLength)" }
}
