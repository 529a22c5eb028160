public import HostnatAddressing
import HostnatPackets

/// Path MTU on the way into a TUN device: what a router does with a packet too big for the next
/// link. Pure functions over caller-owned buffers (no allocation), so the bridge calls them per
/// packet and tests check their bytes.
///
/// MTUs hostnat uses in namespaces mode:
/// - the Geneve underlay costs `underlayOverhead` = 36 bytes (outer IPv4 20 + UDP 8 + Geneve 8,
///   no options), so on a 1500-byte physical network an inner packet may be at most 1464 bytes;
/// - a VM's interface gets `vmMTU` = 1400: 64 bytes below 1464, room for Geneve options (up to
///   252 bytes are allowed, a few dozen are usual) or an IPv6 underlay (20 bytes more) without ever
///   fragmenting the outer packet (Google Cloud's own VM default, 1460, leaves less);
/// - the Internet side keeps Ethernet's `internetMTU` = 1500, so real servers there send packets
///   a VM cannot take and path MTU discovery has something to discover.
public enum PathMTU {
  public static let underlayOverhead = 20 + 8 + Geneve.baseHeaderLength
  public static let vmMTU = 1400
  public static let internetMTU = 1500
  /// RFC 1812 §4.3.2.3: an ICMP error is at most 576 bytes (header, ICMP header and the quote).
  public static let maxErrorLength = 576
  /// Smallest MTU IPv4 allows (RFC 791): a 60-byte header plus 8 bytes of data.
  public static let minimumMTU = 68

  /// Writes into `out` an ICMP Destination Unreachable, code 4 "fragmentation needed and DF set"
  /// (RFC 792) with the next-hop MTU in bytes 6–7 of the ICMP header (RFC 1191), from `source` to
  /// the sender of `packet`, quoting as much of `packet` as keeps the error within 576 bytes (as
  /// Linux does). TTL 64, TOS 0xC0 (internetwork control, RFC 1812 §4.3.2.5), DF clear.
  ///
  /// Returns the error's length, or nil when no error may be sent (RFC 1122 §3.2.2, RFC 1812
  /// §4.3.2.7): `packet` is not IPv4, is an ICMP error itself, is a non-first fragment, comes from
  /// an address that is not a unicast host (0/8, 127/8, multicast, class E, broadcast), goes to a
  /// multicast or broadcast address, or `out` is shorter than the error.
  public static func fragmentationNeeded(
    quoting packet: UnsafeRawBufferPointer, nextHopMTU: Int, source: IPv4Address, into out: UnsafeMutableRawBufferPointer
  ) -> Int? {
    guard let ip = try? IPv4PacketView(validating: UnsafeMutableRawBufferPointer(mutating: packet)) else { return nil }
    guard !ip.isNonFirstFragment, isUnicastHost(ip.source), !isMulticastOrBroadcast(ip.destination) else { return nil }
    if ip.protocolNumber == IPProtocol.icmp {
      let payload = ip.payload
      guard payload.count >= 1, !ICMPType.isError(payload[0]) else { return nil }
    }
    let quoted = min(ip.totalLength, maxErrorLength - 28)
    let total = 28 + quoted
    guard out.count >= total else { return nil }
    UnsafeMutableRawBufferPointer(rebasing: out[28..<total]).copyMemory(from: UnsafeRawBufferPointer(rebasing: packet[0..<quoted]))
    out[20] = ICMPType.destinationUnreachable
    out[21] = 4
    out.storeBE16(0, at: 22)
    out.storeBE16(0, at: 24)  // unused
    out.storeBE16(UInt16(clamping: nextHopMTU), at: 26)
    out.storeBE16(InternetChecksum.checksum(UnsafeRawBufferPointer(rebasing: out[20..<total])), at: 22)
    writeIPv4Header(
      into: out, total: total, tos: 0xC0, identification: 0, flagsAndOffset: 0, ttl: 64, protocol: IPProtocol.icmp,
      source: source.value, destination: ip.source.value)
    return total
  }

  /// Splits `packet` into IPv4 fragments of at most `mtu` bytes (RFC 791), each built in `scratch`
  /// (at least `mtu` bytes) and handed to `emit` while valid. Fragments of a fragment keep its
  /// offset and its more-fragments flag on the last piece. Returns how many were emitted, or nil
  /// when the packet may not or cannot be split here: DF set, not IPv4, IP options present (only
  /// 20-byte headers are split), or an MTU under 28.
  public static func fragment(
    _ packet: UnsafeRawBufferPointer, mtu: Int, scratch: UnsafeMutableRawBufferPointer,
    emit: (UnsafeRawBufferPointer) -> Void
  ) -> Int? {
    guard let ip = try? IPv4PacketView(validating: UnsafeMutableRawBufferPointer(mutating: packet)),
      !ip.dontFragment, ip.headerLength == 20, mtu >= 28, scratch.count >= mtu
    else { return nil }
    let payload = ip.totalLength - 20
    let chunk = (mtu - 20) & ~7
    let baseOffset = ip.fragmentOffset
    let lastHasMore = ip.moreFragments
    var position = 0
    var count = 0
    repeat {
      let length = min(chunk, payload - position)
      let isLast = position + length >= payload
      let total = 20 + length
      UnsafeMutableRawBufferPointer(rebasing: scratch[0..<20]).copyMemory(from: UnsafeRawBufferPointer(rebasing: packet[0..<20]))
      UnsafeMutableRawBufferPointer(rebasing: scratch[20..<total])
        .copyMemory(from: UnsafeRawBufferPointer(rebasing: packet[(20 + position)..<(20 + position + length)]))
      let more: UInt16 = (!isLast || lastHasMore) ? 0x2000 : 0
      let offsetField = UInt16((baseOffset + position) / 8) & 0x1FFF
      scratch.storeBE16(UInt16(total), at: 2)
      scratch.storeBE16(more | offsetField, at: 6)
      scratch.storeBE16(0, at: 10)
      scratch.storeBE16(InternetChecksum.checksum(UnsafeRawBufferPointer(rebasing: scratch[0..<20])), at: 10)
      emit(UnsafeRawBufferPointer(rebasing: scratch[0..<total]))
      count += 1
      position += length
    } while position < payload
    return count
  }

  static func writeIPv4Header(
    into out: UnsafeMutableRawBufferPointer, total: Int, tos: UInt8, identification: UInt16, flagsAndOffset: UInt16,
    ttl: UInt8, protocol proto: UInt8, source: UInt32, destination: UInt32
  ) {
    out[0] = 0x45
    out[1] = tos
    out.storeBE16(UInt16(total), at: 2)
    out.storeBE16(identification, at: 4)
    out.storeBE16(flagsAndOffset, at: 6)
    out[8] = ttl
    out[9] = proto
    out.storeBE16(0, at: 10)
    out.storeBE32(source, at: 12)
    out.storeBE32(destination, at: 16)
    out.storeBE16(InternetChecksum.checksum(UnsafeRawBufferPointer(rebasing: out[0..<20])), at: 10)
  }

  /// A source an ICMP error may be sent to: not 0/8, 127/8, multicast 224/4, class E 240/4 or the
  /// limited broadcast.
  static func isUnicastHost(_ address: IPv4Address) -> Bool {
    let first = address.value >> 24
    return first != 0 && first != 127 && first < 224
  }

  static func isMulticastOrBroadcast(_ address: IPv4Address) -> Bool {
    address.value >> 28 == 0xE || address.value == 0xFFFF_FFFF
  }
}
