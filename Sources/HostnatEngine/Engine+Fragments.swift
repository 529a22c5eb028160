import HostnatAddressing
import HostnatPackets

// Fragments (RFC 4787 REQ-14, without reassembly).
extension NATEngine {
  @inline(never)
  func firstFragment(_ ip: IPv4PacketView, _ t: Tuple, _ direction: Direction, newIP: UInt32, inVPC: Bool = false, now: UInt64) {
    fragmentTable.remember(
      src: t.src, dst: t.dst, id: ip.identification, proto: t.proto, inbound: direction == .inbound, newIP: newIP,
      inVPC: inVPC, now: now)
  }

  /// A non-first fragment: it carries no ports, so it takes the address its first fragment was
  /// given (source outbound, destination inbound); without one it is dropped.
  /// `fromFabric`: the fragment came through the VPC fabric (`deliverInVPC`), so only a datagram
  /// whose first fragment came that way too may pass; from the Internet, only one that did not.
  @inline(never)
  func laterFragment(_ ip: IPv4PacketView, _ direction: Direction, fromFabric: Bool = false, now: UInt64) -> Verdict {
    let inbound = direction == .inbound
    guard
      let (newIP, inVPC) = fragmentTable.lookup(
        src: ip.source.value, dst: ip.destination.value, id: ip.identification, proto: ip.protocolNumber, inbound: inbound,
        now: now),
      !inbound || inVPC == fromFabric
    else { return drop(.fragment, nil, now: now) }
    if inVPC {
      if inbound { globalCounters.vpcIn &+= 1 } else { globalCounters.vpcOut &+= 1 }
      return inbound ? .forward : .forwardInVPC
    }
    if inbound {
      ip.rewriteDestination(IPv4Address(newIP))
      globalCounters.translatedIn &+= 1
    } else {
      ip.rewriteSource(IPv4Address(newIP))
      globalCounters.translatedOut &+= 1
    }
    return .forward
  }
}
