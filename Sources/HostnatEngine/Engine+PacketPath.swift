import HostnatAddressing
import HostnatPackets

extension NATEngine {
  /// Parsed 5-tuple of a packet, from the sender's point of view.
  struct Tuple {
    /// How the engine treats the packet: which of its fields play the ports.
    enum Kind: UInt8 {
      case tcp, udp
      /// An echo request or reply: the identifier plays the port (RFC 5508).
      case echo
      /// An ICMP error message: it belongs to the flow of the datagram it quotes.
      case icmpError
    }

    /// The IP protocol number, as flows and their indexes key on it.
    var proto: UInt8
    var kind: Kind
    /// Set for `.tcp` only.
    var tcpFlags: TCPFlags
    /// Set for `.echo` only (request or reply).
    var icmpType: UInt8
    /// Offset of the transport header (the IPv4 header's length).
    var l4: Int
    var src: UInt32
    var dst: UInt32
    /// The echo identifier for `.echo`; 0 for `.icmpError`.
    var srcPort: UInt16
    /// 0 for `.echo` and `.icmpError`.
    var dstPort: UInt16
  }

  /// What both directions do first: validate the IPv4 header, hand later fragments and ICMP errors
  /// to their own paths, classify the rest. Returns nil with `verdict` set when the packet is done.
  @inline(__always)
  func prologue(
    _ packet: UnsafeMutableRawBufferPointer, _ direction: Direction, now: UInt64, verdict: inout Verdict
  ) -> (IPv4PacketView, Tuple)? {
    guard let ip = try? IPv4PacketView(validating: packet) else {
      verdict = drop(.malformed, nil, now: now)
      return nil
    }
    if ip.isNonFirstFragment {
      verdict = laterFragment(ip, direction, now: now)
      return nil
    }
    var reason = DropReason.malformed
    guard let t = classify(ip, reason: &reason) else {
      verdict = drop(reason, nil, now: now)
      return nil
    }
    if t.kind == .icmpError {
      verdict = translateICMPError(ip, t, direction, now: now)
      return nil
    }
    return (ip, t)
  }

  /// Validates the headers the NAT reads. Returns nil and sets `reason` on failure.
  ///
  /// The transport fields are read at their offsets rather than through `TCPHeaderView`,
  /// `UDPHeaderView` and `ICMPMessageView`: their validating initializers (and `payload`) are not
  /// inlined across the module boundary, and the calls raised the engine benchmark's instruction
  /// count per packet measurably (cachegrind). The checks are the same as theirs (UDP's length
  /// only when unfragmented).
  @inline(__always)
  func classify(_ ip: IPv4PacketView, reason: inout DropReason) -> Tuple? {
    if ip.isNonFirstFragment {
      reason = .fragment
      return nil
    }
    let b = ip.bytes
    let l4 = ip.headerLength
    let l4Length = b.count &- l4
    var t = Tuple(
      proto: ip.protocolNumber, kind: .tcp, tcpFlags: [], icmpType: 0, l4: l4, src: ip.source.value,
      dst: ip.destination.value, srcPort: 0, dstPort: 0)
    switch t.proto {
    case IPProtocol.tcp:
      guard l4Length >= 20 else { break }
      let dataOffset = Int(b[l4 &+ 12] >> 4) &* 4
      guard dataOffset >= 20, dataOffset <= l4Length else { break }
      t.srcPort = b.loadBE16(at: l4)
      t.dstPort = b.loadBE16(at: l4 &+ 2)
      t.tcpFlags = TCPFlags(rawValue: b[l4 &+ 13])
      return t
    case IPProtocol.udp:
      guard l4Length >= 8 else { break }
      // A first fragment's UDP length counts bytes that later fragments carry.
      guard ip.moreFragments || Int(b.loadBE16(at: l4 &+ 4)) == l4Length else { break }
      t.kind = .udp
      t.srcPort = b.loadBE16(at: l4)
      t.dstPort = b.loadBE16(at: l4 &+ 2)
      return t
    case IPProtocol.icmp:
      guard l4Length >= 8 else { break }
      let type = b[l4]
      if ICMPType.isEcho(type) {
        t.kind = .echo
        t.icmpType = type
        t.srcPort = b.loadBE16(at: l4 &+ 4)
        return t
      }
      if ICMPType.isError(type) {
        t.kind = .icmpError
        return t
      }
      reason = .unsupportedProtocol
      return nil
    default:
      reason = .unsupportedProtocol
      return nil
    }
    reason = .malformed
    return nil
  }

  @inline(__always)
  func count(_ reason: DropReason) {
    switch reason {
    case .malformed: globalCounters.malformed &+= 1
    case .unsupportedProtocol: globalCounters.unsupportedProtocol &+= 1
    case .fragment: globalCounters.fragments &+= 1
    case .noNATConfigured: globalCounters.noNATConfigured &+= 1
    case .filteredInbound: globalCounters.filteredInbound &+= 1
    case .unmatchedICMPError: globalCounters.unmatchedICMPError &+= 1
    // Counted per VM (and by direction) where they happen.
    case .endpointIndependenceConflict, .outOfResources, .flowTableFull, .firewallDenied, .routedToNextHop: break
    }
  }

  func drop(_ reason: DropReason, _ t: Tuple?, now: UInt64) -> Verdict {
    count(reason)
    if config.logUnattributedDrops, let sink = logSink, let t {
      sink.append(
        LogRecord(
          timestamp: now, insideIP: IPv4Address(t.src), remoteIP: IPv4Address(t.dst), natIP: IPv4Address(0),
          insidePort: t.srcPort, remotePort: t.dstPort, natPort: 0, protocolNumber: t.proto, status: .dropped,
          reason: reason, vmIndex: nil))
    }
    return .drop(reason)
  }

  /// Which way a packet crosses the NAT.
  enum Direction {
    /// VM → Internet (or into the VPC fabric).
    case outbound
    /// Internet (or the VPC fabric) → VM.
    case inbound
  }

  /// The end both directions share once the flow is found and its state updated: the NAT side's
  /// address and port become the flow's, a first fragment leads its datagram, the packet is counted.
  @inline(__always)
  func rewriteThroughFlow(_ ip: IPv4PacketView, _ t: Tuple, _ f: FlowSlot, _ direction: Direction, now: UInt64) -> Verdict {
    switch direction {
    case .outbound:
      Self.rewriteSource(ip, t, to: f.natIP, port: f.natPort)
      if ip.moreFragments { firstFragment(ip, t, .outbound, newIP: f.natIP, now: now) }
      globalCounters.translatedOut &+= 1
    case .inbound:
      var toVM = t
      // An echo reply's identifier, the flow's NAT port, is in srcPort (`classify`).
      if t.kind == .echo { toVM.dstPort = t.srcPort }
      Self.rewriteDestination(ip, toVM, to: f.insideIP, port: f.insidePort)
      if ip.moreFragments { firstFragment(ip, t, .inbound, newIP: f.insideIP, now: now) }
      globalCounters.translatedIn &+= 1
    }
    countVMPacket(f.vmIndex, bytes: ip.totalLength, direction)
    return .forward
  }

  /// Counts a translated packet of a flow of VM `vmIndex`.
  @inline(__always)
  func countVMPacket(_ vmIndex: UInt16, bytes: Int, _ direction: Direction) {
    let c = config.counters.baseAddress! + Int(vmIndex)
    switch direction {
    case .outbound:
      c.pointee.packetsOut &+= 1
      c.pointee.bytesOut &+= UInt64(bytes)
    case .inbound:
      c.pointee.packetsIn &+= 1
      c.pointee.bytesIn &+= UInt64(bytes)
    }
  }

  /// Which end of a packet a rewrite replaces.
  enum Side { case source, destination }

  /// Rewrites the sender's address and port (outbound) with incremental checksum updates.
  @inline(__always)
  static func rewriteSource(_ ip: IPv4PacketView, _ t: Tuple, to newIP: UInt32, port newPort: UInt16) {
    rewriteAddress(ip, .source, old: t.src, new: newIP)
    rewriteL4(ip.bytes, t, .source, oldIP: t.src, newIP: newIP, oldPort: t.srcPort, newPort: newPort)
  }

  /// Rewrites the receiver's address and port (inbound).
  @inline(__always)
  static func rewriteDestination(_ ip: IPv4PacketView, _ t: Tuple, to newIP: UInt32, port newPort: UInt16) {
    rewriteAddress(ip, .destination, old: t.dst, new: newIP)
    rewriteL4(ip.bytes, t, .destination, oldIP: t.dst, newIP: newIP, oldPort: t.dstPort, newPort: newPort)
  }

  /// `IPv4PacketView.rewriteSource`/`rewriteDestination` with the old address known: those are not
  /// inlined across the module boundary, and a call per packet shows in the benchmark.
  @inline(__always)
  static func rewriteAddress(_ ip: IPv4PacketView, _ side: Side, old: UInt32, new: UInt32) {
    ip.headerChecksum = InternetChecksum.update(ip.headerChecksum, old: old, new: new)
    if side == .source { ip.source = IPv4Address(new) } else { ip.destination = IPv4Address(new) }
  }

  /// The transport half of a rewrite, at the offsets `classify` checked (see there why not
  /// through the header views). Checksums are updated incrementally (RFC 1624), never recomputed.
  @inline(__always)
  static func rewriteL4(
    _ b: UnsafeMutableRawBufferPointer, _ t: Tuple, _ side: Side, oldIP: UInt32, newIP: UInt32, oldPort: UInt16,
    newPort: UInt16
  ) {
    let l4 = t.l4
    let portOffset = side == .source ? l4 : l4 &+ 2
    switch t.kind {
    case .tcp:
      let c = b.loadBE16(at: l4 &+ 16)
      b.storeBE16(
        InternetChecksum.update(c, oldAddress: oldIP, newAddress: newIP, oldPort: oldPort, newPort: newPort), at: l4 &+ 16)
      b.storeBE16(newPort, at: portOffset)
    case .udp:
      // 0: the sender computed no checksum (RFC 768), and none is made up here.
      let c = b.loadBE16(at: l4 &+ 6)
      if c != 0 {
        b.storeBE16(
          InternetChecksum.udpWire(
            InternetChecksum.update(c, oldAddress: oldIP, newAddress: newIP, oldPort: oldPort, newPort: newPort)),
          at: l4 &+ 6)
      }
      b.storeBE16(newPort, at: portOffset)
    case .echo, .icmpError:
      // ICMP echo: the identifier is the "port"; the ICMP checksum has no pseudo-header.
      b.storeBE16(InternetChecksum.update(b.loadBE16(at: l4 &+ 2), old: oldPort, new: newPort), at: l4 &+ 2)
      b.storeBE16(newPort, at: l4 &+ 4)
    }
  }
}
