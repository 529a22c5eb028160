import HostnatAddressing
import HostnatPackets

// VPC policy: firewall, routes, Private Google Access (the tables are in Policy.swift).
extension NATEngine {
  /// How long the stateless paths' connection tracker remembers a connection: the gateway's idle
  /// timeouts (TCP as established: the tracker reads no flags).
  @inline(__always)
  func trackTimeout(_ vm: CompiledVM, _ proto: UInt8) -> UInt64 {
    proto == IPProtocol.tcp ? vm.tcpEstablished : proto == IPProtocol.udp ? vm.udpTimeout : vm.icmpTimeout
  }

  /// What the VPC decides for an outbound packet before NAT (`egressPolicy`).
  enum EgressDecision {
    /// Not the VPC's to decide: go on with 1:1 NAT or Cloud NAT.
    case proceed
    /// Counted and logged already; the packet is dropped.
    case dropped(DropReason)
    /// Private Google Access: forward the packet unchanged.
    case privateGoogleAccess
    /// The destination is inside the VPC: forward unchanged through the fabric.
    case inVPC
  }

  /// Egress firewall, routes and Private Google Access, in the order the VPC applies them, for an
  /// outbound packet with no NAT flow (a new connection, or any packet of the stateless 1:1 and PGA
  /// paths, whose firewall state lives in `connTrack`). `oneToOne` and `natVM` are the source's 1:1
  /// VM and NAT-range VM (or -1), as `createFlow` found them.
  @inline(never)
  func egressPolicy(_ t: Tuple, oneToOne: Int, natVM: Int, now: UInt64) -> EgressDecision {
    let vmIndex = oneToOne >= 0 ? oneToOne : config.vm(internal: t.src, natVM: natVM)
    guard vmIndex >= 0 else { return .proceed }
    let vm = config.vms[vmIndex]
    guard vm.network >= 0 else { return .proceed }
    let p = config.policies
    let net = p.networks[vm.network]
    // Subnet routes are the most specific: a destination inside the VPC never uses NAT, 1:1 or PGA.
    let inVPC = p.isInternal(net, t.dst)
    // A primary IP with an external IP reaches Google through that IP, not through PGA.
    let pga = !inVPC && vm.privateGoogleAccess && oneToOne < 0 && p.isGoogleAPI(net, t.dst)
    let stateless = oneToOne >= 0 || pga || inVPC
    // Echo requests carry their identifier in srcPort and 0 in dstPort: the same key as the reply.
    // nil: a NAT flow will keep the state, the tracker is not consulted.
    var track: ConnTrackTable.Lookup?
    var expiry: UInt64 = 0
    if stateless {
      expiry = now &+ trackTimeout(vm, t.proto)
      track = connTrack.refresh(t.proto, t.src, t.srcPort, t.dst, t.dstPort, now: now, expiresAt: expiry)
    }
    if track?.isTracked != true {
      let rule = p.firewall(net, tags: vm.tags, ingress: false, remote: t.dst, proto: t.proto, port: t.dstPort)
      if rule >= 0 && !p.rules[rule].allow {
        globalCounters.firewallDeniedEgress &+= 1
        firewallDenied(
          vmIndex, rule: rule, insideIP: t.src, insidePort: t.srcPort, remoteIP: t.dst, remotePort: t.dstPort, natIP: 0,
          proto: t.proto, now: now)
        return .dropped(.firewallDenied)
      }
    }
    if !inVPC && !p.routesToInternet(net, t.dst) {
      return .dropped(vmDrop(.routedToNextHop, vmIndex, t, natIP: 0, natPort: 0, now: now))
    }
    if case .untracked(let set) = track {
      connTrack.insert(at: set, t.proto, t.src, t.srcPort, t.dst, t.dstPort, expiresAt: expiry)
    }
    if inVPC {
      config.counters[vmIndex].vpcPackets &+= 1
      globalCounters.vpcOut &+= 1
      return .inVPC
    }
    guard pga else { return .proceed }
    config.counters[vmIndex].privateGoogleAccessPackets &+= 1
    globalCounters.privateGoogleAccessOut &+= 1
    return .privateGoogleAccess
  }

  /// An echo reply from a VM. NAT never lets echo requests in, so only two pings can have asked
  /// for it: one from inside the VPC (the reply goes back through the fabric) and one to the VM's
  /// 1:1 external IP (the reply leaves from that IP), each as the egress rules allow.
  @inline(never)
  func outboundEchoReply(_ ip: IPv4PacketView, _ t: Tuple, now: UInt64) -> Verdict {
    guard t.icmpType == ICMPType.echoReply else { return drop(.unsupportedProtocol, t, now: now) }
    let oneToOne = config.primaryCount > 0 ? config.oneToOneVM(primary: t.src) : -1
    if config.hasPolicies {
      let natVM = config.natVM(for: t.src)
      let vmIndex = oneToOne >= 0 ? oneToOne : config.vm(internal: t.src, natVM: natVM)
      let network = vmIndex >= 0 ? config.vms[vmIndex].network : -1
      if oneToOne >= 0 || (network >= 0 && config.policies.isInternal(config.policies.networks[network], t.dst)) {
        switch egressPolicy(t, oneToOne: oneToOne, natVM: natVM, now: now) {
        case .inVPC:
          if ip.moreFragments { firstFragment(ip, t, .outbound, newIP: t.src, inVPC: true, now: now) }
          return .forwardInVPC
        case .dropped(let reason): return .drop(reason)
        case .proceed, .privateGoogleAccess: break
        }
      }
    }
    guard oneToOne >= 0 else { return drop(.unsupportedProtocol, t, now: now) }
    let verdict = oneToOneOut(ip, t, vm: oneToOne)
    if ip.moreFragments { firstFragment(ip, t, .outbound, newIP: ip.source.value, now: now) }
    return verdict
  }

  /// A packet another host sent through the VPC fabric to one of this host's VMs: untranslated,
  /// accepted when its source is inside the destination VM's network (its subnets or its peers')
  /// and the VM's ingress rules allow it (stateful: replies to the VM's own connections pass).
  /// Anything else is counted and dropped; the packet is never rewritten.
  public func deliverInVPC(_ packet: UnsafeMutableRawBufferPointer, now: UInt64) -> Verdict {
    guard let ip = try? IPv4PacketView(validating: packet) else { return drop(.malformed, nil, now: now) }
    if ip.isNonFirstFragment { return laterFragment(ip, .inbound, fromFabric: true, now: now) }
    var reason = DropReason.malformed
    guard let t = classify(ip, reason: &reason) else { return drop(reason, nil, now: now) }
    guard config.hasPolicies else { return drop(.filteredInbound, t, now: now) }
    let vmIndex = config.vm(internal: t.dst)
    guard vmIndex >= 0, config.vms[vmIndex].network >= 0,
      config.policies.isInternal(config.policies.networks[config.vms[vmIndex].network], t.src)
    else { return drop(.filteredInbound, t, now: now) }
    // ICMP errors about VPC traffic carry no flow of their own: the VM's network accepted the
    // source, and the VM's stack matches the quote itself.
    if t.kind != .icmpError {
      // A reply's identifier sits in srcPort (classify), the tracker's inside-port for echo.
      guard ingressAllowed(vmIndex, t, insideIP: t.dst, natIP: 0, now: now) else { return .drop(.firewallDenied) }
    }
    if ip.moreFragments { firstFragment(ip, t, .inbound, newIP: t.dst, inVPC: true, now: now) }
    config.counters[vmIndex].vpcPackets &+= 1
    globalCounters.vpcIn &+= 1
    return .forward
  }

  /// Stateful ingress check of an inbound packet on a stateless path, once its destination is known
  /// to be VM `vmIndex`'s `insideIP`: a tracked connection passes, otherwise the ingress rules decide
  /// (implied: deny) and an allowed packet starts tracking its connection.
  func ingressAllowed(_ vmIndex: Int, _ t: Tuple, insideIP: UInt32, natIP: UInt32, now: UInt64) -> Bool {
    let vm = config.vms[vmIndex]
    let p = config.policies
    let echo = t.kind == .echo
    let insidePort = echo ? t.srcPort : t.dstPort
    let remotePort = echo ? 0 : t.srcPort
    let expiry = now &+ trackTimeout(vm, t.proto)
    guard case .untracked(let set) = connTrack.refresh(t.proto, insideIP, insidePort, t.src, remotePort, now: now, expiresAt: expiry)
    else { return true }
    let rule = p.firewall(p.networks[vm.network], tags: vm.tags, ingress: true, remote: t.src, proto: t.proto, port: t.dstPort)
    if rule >= 0 && p.rules[rule].allow {
      connTrack.insert(at: set, t.proto, insideIP, insidePort, t.src, remotePort, expiresAt: expiry)
      return true
    }
    globalCounters.firewallDeniedIngress &+= 1
    firewallDenied(
      vmIndex, rule: rule, insideIP: insideIP, insidePort: insidePort, remoteIP: t.src, remotePort: remotePort, natIP: natIP,
      proto: t.proto, now: now)
    return false
  }

  /// Counts a firewall drop for the VM and logs it when the denying rule logs (implied rules never do).
  func firewallDenied(
    _ vmIndex: Int, rule: Int, insideIP: UInt32, insidePort: UInt16, remoteIP: UInt32, remotePort: UInt16, natIP: UInt32,
    proto: UInt8, now: UInt64
  ) {
    config.counters[vmIndex].droppedFirewall &+= 1
    if rule >= 0, config.policies.rules[rule].logging, let sink = logSink {
      sink.append(
        LogRecord(
          timestamp: now, insideIP: IPv4Address(insideIP), remoteIP: IPv4Address(remoteIP), natIP: IPv4Address(natIP),
          insidePort: insidePort, remotePort: remotePort, natPort: natIP == 0 ? 0 : insidePort, protocolNumber: proto,
          status: .dropped, reason: .firewallDenied, vmIndex: UInt16(truncatingIfNeeded: vmIndex)))
    }
  }

  /// An inbound packet from the Google APIs ranges to the internal IP of a VM using Private Google
  /// Access: forwarded unchanged when the ingress side allows it; nil when PGA does not apply.
  @inline(never)
  func privateGoogleAccessIn(_ t: Tuple, now: UInt64) -> Verdict? {
    let vmIndex = config.vm(internal: t.dst)
    guard vmIndex >= 0 else { return nil }
    let vm = config.vms[vmIndex]
    guard vm.network >= 0, vm.privateGoogleAccess, !(vm.hasExternalIP && t.dst == vm.primaryIP),
      config.policies.isGoogleAPI(config.policies.networks[vm.network], t.src)
    else { return nil }
    guard ingressAllowed(vmIndex, t, insideIP: t.dst, natIP: 0, now: now) else { return .drop(.firewallDenied) }
    config.counters[vmIndex].privateGoogleAccessPackets &+= 1
    globalCounters.privateGoogleAccessIn &+= 1
    return .forward
  }
}
