import HostnatAddressing
import HostnatPackets

// The edge fence (R5): a host's outbound packet reaches the Internet only when the host owns its
// source by the routes the edge holds. Ownership is looked up the way return traffic is routed,
// mirrored to the source side, so "who may send from X" and "who receives for X" never disagree.

extension InnerPacket {
  /// What identifies an outbound packet's source to the fence.
  enum SourceKey: Equatable {
    /// The NAT "port" the engine put in the host's block.
    case port(UInt16)
    /// A later fragment: no transport header, only the IP can be checked.
    case laterFragment
    /// No port the NAT translates (other protocols, ICMP other than echo and errors about
    /// TCP/UDP/echo): only an address owned as a whole (1:1, Private Google Access) may send it.
    case portless
    /// Not a valid IPv4 header.
    case malformed
  }

  /// The source-side twin of `routingPort`: TCP/UDP source port; ICMP echo identifier (the engine
  /// maps query ids into the block like ports, and the edge routes echo replies by it); for an
  /// ICMP error the host sends, the quoted datagram's destination port (or quoted echo
  /// identifier). That quoted port is the exact key: the engine forwards only errors matching one
  /// of its flows and rewrites both the outer source and the quote's destination to that flow's
  /// NAT IP:port, which lies in the sending host's block; checking only the IP would let a host
  /// send errors about another host's mappings on a shared NAT IP.
  static func sourceKey(_ p: UnsafeMutableRawBufferPointer) -> SourceKey {
    guard let ip = try? IPv4PacketView(validating: p) else { return .malformed }
    if ip.isNonFirstFragment { return .laterFragment }
    let l4 = ip.payload
    switch ip.protocolNumber {
    case IPProtocol.tcp, IPProtocol.udp:
      return l4.count >= 2 ? .port(l4.loadBE16(at: 0)) : .portless
    case IPProtocol.icmp:
      guard let icmp = try? ICMPMessageView(validating: l4) else { return .portless }
      if ICMPType.isEcho(icmp.type) { return .port(icmp.identifier) }
      guard ICMPType.isError(icmp.type), let quote = try? QuotedDatagramView(validating: icmp.quoted) else { return .portless }
      switch quote.protocolNumber {
      case IPProtocol.tcp, IPProtocol.udp:
        return .port(quote.destinationPort)
      case IPProtocol.icmp where ICMPType.isEcho(quote.icmpType):
        return .port(quote.sourcePortOrIdentifier)
      default:
        return .portless
      }
    default:
      return .portless
    }
  }
}

extension RouteTable {
  /// Whether `sender` owns `source` for a packet with `key`. An empty table owns nothing, so an
  /// edge without routes forwards nothing from agents.
  @inline(__always)
  func owns(source: UInt32, _ key: InnerPacket.SourceKey, sender: SocketAddress) -> Bool {
    switch key {
    case .port(let port):
      let h = lookup(ip: source, port: port)
      return h >= 0 && hosts[h] == sender
    case .laterFragment:
      return ownsAnyRoute(on: source, sender: sender)
    case .portless:
      guard !external.isEmpty, let h = external[source] else { return false }
      return hosts[h] == sender
    case .malformed:
      return false
    }
  }

  /// Whether `sender` owns `ip` as a whole or any block on it. Later fragments are rare: a scan of
  /// the IP's owners (one per host with a block there) is enough.
  func ownsAnyRoute(on ip: UInt32, sender: SocketAddress) -> Bool {
    if !external.isEmpty, let h = external[ip] { return hosts[h] == sender }
    var i = Self.lastKey(atOrBelow: UInt64(ip) << 32 | 0xFFFF_FFFF, in: ipOwners)
    while i >= 0, ipOwners[i] >> 32 == UInt64(ip) {
      if hosts[Int(ipOwners[i] & 0xFFFF_FFFF)] == sender { return true }
      i -= 1
    }
    return false
  }
}
