import HostnatAddressing
import HostnatPackets

extension NATEngine {
  /// Translates one Internet → VM packet in place (only if it answers a flow: address-and-port-
  /// dependent filtering; a filtered packet creates no state).
  public func translateInbound(_ packet: UnsafeMutableRawBufferPointer, now: UInt64) -> Verdict {
    var done = Verdict.forward
    guard let (ip, t) = prologue(packet, .inbound, now: now, verdict: &done) else { return done }
    // An echo reply's identifier is the NAT's; requests to a NAT IP are not answered here.
    if t.kind == .echo && t.icmpType != ICMPType.echoReply { return inboundMissFirstFragment(ip, t, now: now) }
    let localPort = t.kind == .echo ? t.srcPort : t.dstPort
    let remotePort = t.kind == .echo ? 0 : t.srcPort
    let slot = table.findOutside(proto: t.proto, natIP: t.dst, natPort: localPort, remoteIP: t.src, remotePort: remotePort)
    guard slot >= 0, isLive(slot, now: now) else { return inboundMissFirstFragment(ip, t, now: now) }
    let flows = table.flows
    let f = flows[slot]
    if t.proto == IPProtocol.tcp {
      var state = f.tcpState
      state.inbound(t.tcpFlags)
      flows[slot].tcpState = state
      flows[slot].expiresAt = now &+ state.timeout(config.vms[Int(f.vmIndex)])
    }
    return rewriteThroughFlow(ip, t, f, .inbound, now: now)
  }

  /// An inbound packet matching no flow: 1:1 NAT or filtered; a first fragment that goes through
  /// leads its datagram's later fragments.
  @inline(never)
  func inboundMissFirstFragment(_ ip: IPv4PacketView, _ t: Tuple, now: UInt64) -> Verdict {
    let verdict = inboundMiss(ip, t, now: now)
    if ip.moreFragments, case .forward = verdict { firstFragment(ip, t, .inbound, newIP: ip.destination.value, now: now) }
    return verdict
  }

  @inline(never)
  func inboundMiss(_ ip: IPv4PacketView, _ t: Tuple, now: UInt64) -> Verdict {
    if config.externalCount > 0 {
      let vm = config.oneToOneVM(external: t.dst)
      if vm >= 0 {
        var tt = t
        if t.kind == .echo { tt.dstPort = t.srcPort }
        let primary = config.vms[vm].primaryIP
        if config.vms[vm].network >= 0, !ingressAllowed(vm, t, insideIP: primary, natIP: t.dst, now: now) {
          return .drop(.firewallDenied)
        }
        Self.rewriteDestination(ip, tt, to: primary, port: tt.dstPort)
        globalCounters.oneToOneIn &+= 1
        return .forward
      }
    }
    if config.hasPolicies, let verdict = privateGoogleAccessIn(t, now: now) { return verdict }
    return drop(.filteredInbound, t, now: now)
  }
}
