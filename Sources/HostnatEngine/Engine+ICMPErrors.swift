import HostnatAddressing
import HostnatPackets

// ICMP errors (RFC 5508 REQ-3..6).
extension NATEngine {
  /// An ICMP error about a packet of a flow, translated like the flow but never refreshing or
  /// ending it. The quoted datagram is the packet the error is about, so it travelled the other
  /// way: inbound, the error answers a packet we sent and the quote's source is NAT IP:port (outer
  /// destination and quoted source go back to the VM's endpoint); outbound, the VM answers a
  /// packet it received and the quote's destination is its endpoint (outer source and quoted
  /// destination become NAT IP:port).
  @inline(never)
  func translateICMPError(_ ip: IPv4PacketView, _ t: Tuple, _ direction: Direction, now: UInt64) -> Verdict {
    guard let icmp = try? ICMPMessageView(validating: ip.payload),
      let quote = try? QuotedDatagramView(validating: icmp.quoted)
    else { return drop(.malformed, t, now: now) }
    let inbound = direction == .inbound
    let proto = quote.protocolNumber
    // Our end of the quoted datagram (its source inbound, its destination outbound) and theirs.
    let quoteSource = quote.source.value
    let quoteDestination = quote.destination.value
    let localIP = inbound ? quoteSource : quoteDestination
    let remoteIP = inbound ? quoteDestination : quoteSource
    let localPort: UInt16
    let remotePort: UInt16
    switch proto {
    case IPProtocol.tcp, IPProtocol.udp:
      let sourcePort = quote.sourcePortOrIdentifier
      let destinationPort = quote.destinationPort
      localPort = inbound ? sourcePort : destinationPort
      remotePort = inbound ? destinationPort : sourcePort
    // A quoted echo is a request we sent (inbound) or a reply the VM sent (outbound).
    case IPProtocol.icmp where quote.icmpType == (inbound ? ICMPType.echoRequest : ICMPType.echoReply):
      localPort = quote.sourcePortOrIdentifier
      remotePort = 0
    default:
      return drop(.unmatchedICMPError, t, now: now)
    }
    guard localIP == (inbound ? t.dst : t.src) else { return drop(.unmatchedICMPError, t, now: now) }
    let slot =
      inbound
      ? table.findOutside(proto: proto, natIP: localIP, natPort: localPort, remoteIP: remoteIP, remotePort: remotePort)
      : table.findInside(proto: proto, insideIP: localIP, insidePort: localPort, remoteIP: remoteIP, remotePort: remotePort)
    guard slot >= 0, table.flows[slot].expiresAt > now else { return drop(.unmatchedICMPError, t, now: now) }
    let f = table.flows[slot]
    if inbound {
      ip.rewriteDestination(IPv4Address(f.insideIP))
      Self.rewriteQuoted(quote, .source, newIP: f.insideIP, newPort: f.insidePort)
    } else {
      ip.rewriteSource(IPv4Address(f.natIP))
      Self.rewriteQuoted(quote, .destination, newIP: f.natIP, newPort: f.natPort)
    }
    icmp.checksum = icmp.computeChecksum()
    globalCounters.icmpErrorsTranslated &+= 1
    // A flow not yet re-checked against the config in force may belong to another VM now.
    if f.generation == table.generation { countVMPacket(f.vmIndex, bytes: ip.totalLength, direction) }
    return .forward
  }

  /// Rewrites one endpoint of a quoted datagram, keeping its IP header checksum and (when the quote
  /// holds it) its transport checksum consistent, so the VM/remote can match the error.
  static func rewriteQuoted(_ q: QuotedDatagramView, _ side: Side, newIP: UInt32, newPort: UInt16) {
    let oldIP: UInt32
    switch side {
    case .source:
      oldIP = q.source.value
      q.source = IPv4Address(newIP)
    case .destination:
      oldIP = q.destination.value
      q.destination = IPv4Address(newIP)
    }
    q.headerChecksum = InternetChecksum.update(q.headerChecksum, old: oldIP, new: newIP)
    // Only 8 transport bytes are sure to be quoted: ports (or the echo identifier) and, for UDP,
    // the checksum; a TCP checksum is fixed only when the quote reaches it.
    let l4 = q.transport
    switch q.protocolNumber {
    case IPProtocol.tcp, IPProtocol.udp:
      let portOffset = side == .source ? 0 : 2
      let oldPort = l4.loadBE16(at: portOffset)
      l4.storeBE16(newPort, at: portOffset)
      let isUDP = q.protocolNumber == IPProtocol.udp
      let checksumOffset = isUDP ? 6 : 16
      guard l4.count >= checksumOffset &+ 2 else { return }
      let c = l4.loadBE16(at: checksumOffset)
      if isUDP && c == 0 { return }
      var updated = InternetChecksum.update(c, oldAddress: oldIP, newAddress: newIP, oldPort: oldPort, newPort: newPort)
      if isUDP { updated = InternetChecksum.udpWire(updated) }
      l4.storeBE16(updated, at: checksumOffset)
    default:
      let oldID = l4.loadBE16(at: 4)
      l4.storeBE16(newPort, at: 4)
      l4.storeBE16(InternetChecksum.update(l4.loadBE16(at: 2), old: oldID, new: newPort), at: 2)
    }
  }
}
