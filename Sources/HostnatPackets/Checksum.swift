public import HostnatAddressing

/// The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
///
/// Sums are carried as `UInt64` one's-complement accumulators so many words can be added before a
/// single fold; `fold` reduces an accumulator to 16 bits with end-around carry.
public enum InternetChecksum {
  /// Adds the bytes (as big-endian 16-bit words, an odd trailing byte padded with zero) to `initial`.
  @inlinable
  public static func sum(_ bytes: UnsafeRawBufferPointer, initial: UInt64 = 0) -> UInt64 {
    var acc = initial
    var i = 0
    let n = bytes.count
    while i + 4 <= n {
      acc &+= UInt64(bytes.loadBE32(at: i))
      i &+= 4
    }
    if i + 2 <= n {
      acc &+= UInt64(bytes.loadBE16(at: i))
      i &+= 2
    }
    if i < n {
      acc &+= UInt64(bytes[i]) << 8
    }
    return acc
  }

  /// Sum of the TCP/UDP pseudo-header (RFC 793 / RFC 768): addresses, protocol, L4 length.
  @inlinable
  public static func pseudoHeaderSum(source: IPv4Address, destination: IPv4Address, protocol proto: UInt8, length: Int)
    -> UInt64
  {
    UInt64(source.value) &+ UInt64(destination.value) &+ UInt64(proto) &+ UInt64(UInt32(truncatingIfNeeded: length))
  }

  /// Folds an accumulator to 16 bits with end-around carry (never returns 0 for a non-zero input).
  @inlinable @inline(__always)
  public static func fold(_ value: UInt64) -> UInt16 {
    var s = (value & 0xFFFF_FFFF) &+ (value >> 32)
    s = (s & 0xFFFF) &+ (s >> 16)
    s = (s & 0xFFFF) &+ (s >> 16)
    s = (s & 0xFFFF) &+ (s >> 16)
    return UInt16(truncatingIfNeeded: s)
  }

  /// The checksum to store in a header: the complement of the folded sum.
  @inlinable
  public static func checksum(_ bytes: UnsafeRawBufferPointer, initial: UInt64 = 0) -> UInt16 {
    ~fold(sum(bytes, initial: initial))
  }

  /// RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m') for one 16-bit field changing from `old` to `new`.
  @inlinable @inline(__always)
  public static func update(_ checksum: UInt16, old: UInt16, new: UInt16) -> UInt16 {
    ~fold(UInt64(~checksum) &+ UInt64(~old) &+ UInt64(new))
  }

  /// RFC 1624 for a 32-bit field (an IPv4 address), as two 16-bit words.
  @inlinable @inline(__always)
  public static func update(_ checksum: UInt16, old: UInt32, new: UInt32) -> UInt16 {
    ~fold(
      UInt64(~checksum) &+ UInt64(~UInt16(truncatingIfNeeded: old >> 16)) &+ UInt64(~UInt16(truncatingIfNeeded: old))
        &+ UInt64(new >> 16) &+ UInt64(new & 0xFFFF))
  }

  /// RFC 1624 for an address and a port changing together (the TCP/UDP case: the address is in the
  /// pseudo-header, the port in the header).
  @inlinable @inline(__always)
  public static func update(
    _ checksum: UInt16, oldAddress: UInt32, newAddress: UInt32, oldPort: UInt16, newPort: UInt16
  ) -> UInt16 {
    ~fold(
      UInt64(~checksum) &+ UInt64(~UInt16(truncatingIfNeeded: oldAddress >> 16))
        &+ UInt64(~UInt16(truncatingIfNeeded: oldAddress)) &+ UInt64(~oldPort)
        &+ UInt64(newAddress >> 16) &+ UInt64(newAddress & 0xFFFF) &+ UInt64(newPort))
  }

  /// UDP over IPv4 uses 0 for "no checksum", so a computed 0 is sent as 0xFFFF (RFC 768).
  @inlinable @inline(__always)
  public static func udpWire(_ checksum: UInt16) -> UInt16 { checksum == 0 ? 0xFFFF : checksum }

  /// Convenience for arrays (tests, builders).
  public static func checksum(_ bytes: [UInt8], initial: UInt64 = 0) -> UInt16 {
    bytes.withUnsafeBytes { checksum($0, initial: initial) }
  }
}
