import HostnatAddressing
import HostnatPackets

extension NATEngine {
  /// Translates one VM → Internet packet in place.
  public func translateOutbound(_ packet: UnsafeMutableRawBufferPointer, now: UInt64) -> Verdict {
    var done = Verdict.forward
    guard let (ip, t) = prologue(packet, .outbound, now: now, verdict: &done) else { return done }
    // A VM answers pings only from inside the VPC: an echo reply never creates a NAT flow.
    if t.kind == .echo && t.icmpType != ICMPType.echoRequest { return outboundEchoReply(ip, t, now: now) }

    var slot = table.findInside(proto: t.proto, insideIP: t.src, insidePort: t.srcPort, remoteIP: t.dst, remotePort: t.dstPort)
    if slot >= 0 && !isLive(slot, now: now) { slot = -1 }
    if slot < 0 {
      let oneToOne = config.primaryCount > 0 ? config.oneToOneVM(primary: t.src) : -1
      switch createFlow(t, oneToOne: oneToOne, now: now) {
      case .created(let created):
        slot = created
      case .dropped(let reason):
        return .drop(reason)
      case .oneToOne:
        let verdict = oneToOneOut(ip, t, vm: oneToOne)
        if ip.moreFragments { firstFragment(ip, t, .outbound, newIP: ip.source.value, now: now) }
        return verdict
      case .privateGoogleAccess:
        if ip.moreFragments { firstFragment(ip, t, .outbound, newIP: t.src, now: now) }
        return .forward
      case .inVPC:
        if ip.moreFragments { firstFragment(ip, t, .outbound, newIP: t.src, inVPC: true, now: now) }
        return .forwardInVPC
      }
    }
    let flows = table.flows
    var f = flows[slot]
    let vm = config.vms[Int(f.vmIndex)]
    if t.proto == IPProtocol.tcp { f.tcpState.outbound(t.tcpFlags) }
    f.expiresAt = now &+ flowTimeout(f, vm)
    flows[slot].tcpState = f.tcpState
    flows[slot].expiresAt = f.expiresAt
    return rewriteThroughFlow(ip, t, f, .outbound, now: now)
  }

  @inline(never)
  func oneToOneOut(_ ip: IPv4PacketView, _ t: Tuple, vm vmIndex: Int) -> Verdict {
    let vm = config.vms[vmIndex]
    Self.rewriteSource(ip, t, to: vm.externalIP, port: t.srcPort)
    globalCounters.oneToOneOut &+= 1
    return .forward
  }
}
