import HostnatAddressing
import HostnatInternet
import HostnatPackets
import HostnatWorkload
import Testing

@Suite struct LabTests {
  @Test func directRunAllFlowsSucceedWithoutLoss() throws {
    let lab = Lab(spec: .labDefault())
    let r = lab.finish(stopAt: 10 * second, end: 14 * second)
    #expect(lab.invalid == 0)
    #expect(lab.net.counters.malformed == 0)
    #expect(r.unexpectedPackets == 0 && r.malformedPackets == 0)
    #expect(r.drained)
    for f in r.flows {
      #expect(f.sent > 0, "\(f.id)")
      #expect(f.lost == 0 && f.late == 0 && f.corrupt == 0 && f.inFlight == 0, "\(f.id): \(f)")
      #expect(f.received == f.sent, "\(f.id)")
    }
    let udp = try r.one(.udpEcho)
    #expect((195...201).contains(udp.sent))  // 20 pps for 10 s
    #expect(udp.id == "udp-echo 203.0.113.10:7 from :40000")
    let tcp = try #require(try r.one(.tcpEcho).tcp)
    #expect(tcp.established == 1 && tcp.broken == 0 && tcp.reconnects == 0 && tcp.retransmits == 0)
    #expect(tcp.bytesEchoed == tcp.bytesSent && tcp.bytesSent > 5_000 && tcp.corruptBytes == 0)
    let churn = try #require(try r.one(.tcpChurn).churn)
    #expect(churn.attempted >= 48 && churn.succeeded == churn.attempted && churn.failed == 0)
    #expect(try r.one(.whoami).mappings == ["10.0.0.2:40003"])
    #expect(try r.one(.stun).mappings == ["10.0.0.2:40003"])
    // No NAT in the way: the probe's unsolicited datagrams arrive (the check can fail).
    let probe = try r.one(.filteringProbe)
    #expect(probe.unsolicited == 2 * probe.received)
    #expect(probe.unsolicitedFrom == ["203.0.113.30:10000", "203.0.113.99:9999"])
    // The server side agrees: every connection closed.
    #expect(lab.net.connectionCount == 0)
  }

  @Test func everyTenthPacketLostUDPCountsItTCPRecovers() throws {
    let lab = Lab(spec: .labDefault())
    lab.drop = { _, _, n in n % 10 == 0 }
    let r = lab.finish(stopAt: 10 * second, end: 16 * second)
    #expect(lab.dropped > 100)
    let udp = try r.one(.udpEcho)
    #expect(udp.lost > 10)
    #expect(udp.lost + udp.received == udp.sent && udp.inFlight == 0 && udp.corrupt == 0)
    let ping = try r.one(.ping)
    #expect(ping.lost + ping.received == ping.sent)
    let echo = try r.one(.tcpEcho)
    let tcp = try #require(echo.tcp)
    #expect(tcp.broken == 0 && tcp.established == 1)
    #expect(tcp.retransmits > 0)
    #expect(tcp.bytesEchoed == tcp.bytesSent && tcp.corruptBytes == 0)
    let churn = try #require(try r.one(.tcpChurn).churn)
    #expect(churn.succeeded + churn.failed == churn.attempted)
    #expect(churn.failed <= 2)
    #expect(r.totals.lost >= udp.lost)
  }

  @Test func twoSecondBlackoutIsChargedToTheFaultPhase() throws {
    let lab = Lab(spec: .labDefault())
    lab.drop = { _, now, _ in now > 4 * second && now <= 6 * second }
    lab.run(until: 4 * second)
    lab.vm.markPhase("fault", now: lab.now)
    lab.run(until: 6 * second)
    lab.vm.markPhase("after", now: lab.now)
    let r = lab.finish(stopAt: 12 * second, end: 18 * second)
    #expect(r.phases.map(\.name) == ["start", "fault", "after"])
    let start = r.phases[0], fault = r.phases[1], after = r.phases[2]
    #expect(start.lost == 0 && start.connectionsFailed == 0)
    #expect(fault.lost >= 50)  // 20+5+2+2+1 per second of datagrams, for 2 s
    #expect(fault.sent >= fault.lost)
    #expect(after.lost == 0 && after.connectionsFailed == 0, "\(after)")
    #expect(after.sent > 100)
    let tcp = try #require(try r.one(.tcpEcho).tcp)
    #expect(tcp.broken == 0 && tcp.established == 1 && tcp.retransmits >= 3)
    #expect(tcp.bytesEchoed == tcp.bytesSent)
    #expect(fault.tcpRetransmits > 0)
  }

  @Test func longOutageBreaksTheConnectionAndItReconnects() throws {
    var spec = WorkloadSpec(flows: [.tcpEcho(server: serverA, srcPort: 41_000, ratePerSec: 10)])
    spec.brokenAfter = 5 * second
    let lab = Lab(spec: spec)
    lab.drop = { _, now, _ in now > 2 * second && now <= 10 * second }
    let r = lab.finish(stopAt: 20 * second, end: 24 * second)
    let f = try r.one(.tcpEcho)
    let tcp = try #require(f.tcp)
    #expect(tcp.broken == 1)
    #expect(tcp.reconnects >= 1 && tcp.established == 2)
    #expect(f.lost > 0)  // writes stranded on the broken connection
    #expect(tcp.corruptBytes == 0)
    #expect(r.totals.tcpBroken == 1)
    // After reconnecting, the stream flowed again.
    #expect(f.received > 50)
  }

  @Test func natShimShowsEndpointIndependentMappingAndFiltering() throws {
    let nat = NATShim(filtering: true)
    let lab = Lab(spec: .labDefault(), nat: nat)
    let r = lab.finish(stopAt: 6 * second, end: 10 * second)
    let whoami = try r.one(.whoami)
    let stun = try r.one(.stun)
    #expect(whoami.mappings.count == 1)
    #expect(whoami.mappings == stun.mappings)
    #expect(whoami.latestMapping?.hasPrefix("198.51.100.1:") == true)
    #expect(whoami.latestMapping == stun.latestMapping)
    let probe = try r.one(.filteringProbe)
    #expect(probe.received > 0 && probe.unsolicited == 0)
    #expect(nat.filtered == 2 * probe.received)
    for f in r.flows { #expect(f.lost == 0 && f.corrupt == 0, "\(f.id)") }
    #expect(try r.one(.tcpChurn).churn?.failed == 0)
  }

  @Test func passThroughNatLetsUnsolicitedThrough() throws {
    let lab = Lab(spec: .labDefault(), nat: NATShim(filtering: false))
    let r = lab.finish(stopAt: 4 * second, end: 6 * second)
    let probe = try r.one(.filteringProbe)
    #expect(probe.unsolicited > 0)
    #expect(probe.unsolicitedFrom.contains("203.0.113.99:9999"))
  }
}
