public import HostnatAddressing
public import HostnatPackets

/// A VM's traffic generator and judge: it sends each flow's packets on schedule from `tick`, checks
/// the replies handed to `receive`, and reports what was lost, late, broken or remapped.
/// Deterministic for a given seed and sequence of calls.
public final class Workload: PacketEndpoint {
  public let name: String
  /// The VM's address: the source of everything it sends, the only destination it accepts.
  public var ip: IPv4Address
  public let spec: WorkloadSpec
  let scratch = PacketScratch()
  var rng: SplitMix64
  var flows: [Flow] = []
  var phases: [PhaseReport] = [PhaseReport(name: "start", startedAt: 0)]
  var currentPhase: Int { phases.count - 1 }
  /// No new traffic is created once set (see `stop(now:)`).
  public private(set) var stopped = false
  var started = false
  var unexpected = 0
  var malformed = 0

  public init(name: String, ip: IPv4Address, spec: WorkloadSpec, seed: UInt64) {
    self.name = name
    self.ip = ip
    self.spec = spec
    rng = SplitMix64(seed: seed)
    for (i, flow) in spec.flows.enumerated() {
      switch flow.kind {
      case .tcpEcho: flows.append(TCPEchoFlow(spec: flow, index: i, workload: self))
      case .tcpChurn: flows.append(TCPChurnFlow(spec: flow, index: i, workload: self))
      default: flows.append(DatagramFlow(spec: flow, index: i, workload: self))
      }
    }
  }

  public func tick(now: UInt64, emit: (UnsafeRawBufferPointer) -> Void) {
    if !started {
      started = true
      phases[0].startedAt = now
      // Spread the flows' first sends over one interval so they do not all fire together.
      for flow in flows { flow.start(now: now, jitter: rng.next()) }
    }
    for flow in flows { flow.tick(now: now, emit: emit) }
  }

  public func receive(_ packet: UnsafeRawBufferPointer, now: UInt64, emit: (UnsafeRawBufferPointer) -> Void) {
    let buffer = UnsafeMutableRawBufferPointer(mutating: packet)
    guard let view = try? IPv4PacketView(validating: buffer), view.headerChecksumIsValid, !view.isNonFirstFragment,
      !view.moreFragments
    else {
      malformed += 1
      return
    }
    guard view.destination == ip else {
      unexpected += 1
      return
    }
    var inbound: Inbound
    switch view.protocolNumber {
    case IPProtocol.udp:
      guard let udp = try? UDPHeaderView(validating: view.payload), udp.checksumIsValid(pseudoHeaderSum: view.pseudoHeaderSum)
      else {
        malformed += 1
        return
      }
      inbound = Inbound(
        proto: IPProtocol.udp, remote: view.source, remotePort: udp.sourcePort, localPort: udp.destinationPort,
        payload: UnsafeRawBufferPointer(rebasing: udp.bytes[8...]))
    case IPProtocol.tcp:
      guard let tcp = try? TCPHeaderView(validating: view.payload), tcp.checksumIsValid(pseudoHeaderSum: view.pseudoHeaderSum)
      else {
        malformed += 1
        return
      }
      let payload = UnsafeRawBufferPointer(rebasing: tcp.bytes[tcp.headerLength...])
      inbound = Inbound(
        proto: IPProtocol.tcp, remote: view.source, remotePort: tcp.sourcePort, localPort: tcp.destinationPort,
        payload: payload,
        segment: InboundSegment(
          sequence: tcp.sequenceNumber, acknowledgment: tcp.acknowledgmentNumber, flags: tcp.flags, window: tcp.window,
          payload: payload))
    case IPProtocol.icmp:
      guard let icmp = try? ICMPMessageView(validating: view.payload), icmp.checksumIsValid else {
        malformed += 1
        return
      }
      if icmp.type == ICMPType.echoReply {
        inbound = Inbound(
          proto: IPProtocol.icmp, remote: view.source, remotePort: 0, localPort: icmp.identifier,
          payload: UnsafeRawBufferPointer(rebasing: icmp.bytes[8...]), icmpSequence: icmp.sequence)
      } else if ICMPType.isError(icmp.type), let quote = try? QuotedDatagramView(validating: icmp.quoted),
        quote.source == ip
      {
        // An error about one of our packets (port unreachable, TTL exceeded): charge it to the flow.
        let flow = flows.first {
          $0.matches(
            proto: quote.protocolNumber, localPort: quote.sourcePortOrIdentifier, remote: quote.destination,
            remotePort: quote.destinationPort)
        }
        if let flow { flow.icmpErrors += 1 } else { unexpected += 1 }
        return
      } else {
        unexpected += 1
        return
      }
    default:
      unexpected += 1
      return
    }
    let flow =
      flows.first {
        $0.matches(proto: inbound.proto, localPort: inbound.localPort, remote: inbound.remote, remotePort: inbound.remotePort)
      } ?? flows.first { $0.claims(proto: inbound.proto, localPort: inbound.localPort) }
    guard let flow else {
      unexpected += 1
      return
    }
    flow.receive(inbound, now: now, emit: emit)
  }

  /// Starts a new reporting window called `name` (the previous one ends now).
  public func markPhase(_ name: String, now: UInt64) {
    phases[currentPhase].endedAt = now
    phases.append(PhaseReport(name: name, startedAt: now))
  }

  /// Stops creating traffic: no new datagrams or connections; the echo connection closes once its
  /// data is back. Outstanding requests still resolve (reply or loss timeout).
  public func stop(now: UInt64) {
    stopped = true
  }

  /// Nothing outstanding: every request answered or timed out, every connection finished.
  public var drained: Bool { flows.allSatisfy(\.drained) }

  public func report(now: UInt64) -> WorkloadReport {
    let flowReports = flows.map { $0.report(now: now) }
    var totals = WorkloadTotals()
    for r in flowReports {
      totals.sent += r.sent
      totals.received += r.received
      totals.lost += r.lost
      totals.late += r.late
      totals.corrupt += r.corrupt
      totals.inFlight += r.inFlight
      totals.unsolicited += r.unsolicited
      totals.tcpBroken += r.tcp?.broken ?? 0
      totals.tcpRetransmits += (r.tcp?.retransmits ?? 0) + (r.churn?.retransmits ?? 0)
      totals.churnFailed += r.churn?.failed ?? 0
    }
    return WorkloadReport(
      vm: name, ip: ip.description, now: now, stopped: stopped, drained: drained, flows: flowReports, phases: phases,
      unexpectedPackets: unexpected, malformedPackets: malformed, totals: totals)
  }
}
