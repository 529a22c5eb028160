import HostnatAddressing
import Foundation
import HostnatInternet
import HostnatPackets
import HostnatWorkload
import HostnatTestSupport
import Testing

@Suite struct WorkloadTests {
  func collect(_ body: ((UnsafeRawBufferPointer) -> Void) -> Void) -> [[UInt8]] {
    var out: [[UInt8]] = []
    body { out.append(Array($0)) }
    return out
  }

  @Test func labDefaultPortsAreDistinctExceptTheSharedMappingPort() {
    let spec = WorkloadSpec.labDefault()
    #expect(Set(spec.flows.map(\.kind)) == Set(FlowSpec.Kind.allCases))
    let ported = spec.flows.filter { $0.kind != .tcpChurn && $0.kind != .ping }
    let whoami = spec.flows.first { $0.kind == .whoami }!
    let stun = spec.flows.first { $0.kind == .stun }!
    #expect(whoami.sourcePort == stun.sourcePort && whoami.server != stun.server)
    #expect(Set(ported.map(\.sourcePort)).count == ported.count - 1)
    #expect(Set(spec.flows.map(\.id)).count == spec.flows.count)
  }

  @Test func burstIsCappedAfterAPause() {
    let vm = Workload(
      name: "b", ip: vmIP, spec: WorkloadSpec(flows: [.udpEcho(server: serverA, srcPort: 1, ratePerSec: 100)]), seed: 1)
    let first = collect { vm.tick(now: 0, emit: $0) }
    #expect(first.count <= 1)
    let burst = collect { vm.tick(now: 10 * second, emit: $0) }
    #expect(burst.count == 8)
    // The backlog is skipped, not sent later.
    let next = collect { vm.tick(now: 10 * second + 5 * ms, emit: $0) }
    #expect(next.isEmpty)
    let then = collect { vm.tick(now: 10 * second + 10 * ms, emit: $0) }
    #expect(then.count == 1)
  }

  @Test func lateReplyCountsLateNotReceivedAndDuplicateIsCounted() throws {
    let vm = Workload(
      name: "l", ip: vmIP, spec: WorkloadSpec(flows: [.udpEcho(server: serverA, srcPort: 1, ratePerSec: 1)]), seed: 1)
    let net = InternetServers(servers: InternetServers.labDefault)
    var sent: [[UInt8]] = []
    var t: UInt64 = 0
    while sent.isEmpty, t < 2 * second {
      sent = collect { vm.tick(now: t, emit: $0) }
      t += ms
    }
    try #require(sent.count == 1)
    let replies = collect { emit in sent[0].withUnsafeBytes { net.receive($0, now: t, emit: emit) } }
    try #require(replies.count == 1)
    _ = collect { vm.tick(now: t + 1_500 * ms, emit: $0) }  // loss timeout passes
    for _ in 0..<2 { replies[0].withUnsafeBytes { vm.receive($0, now: t + 1_600 * ms) { _ in } } }
    let f = try #require(vm.report(now: t + 1_600 * ms).flows.first)
    #expect(f.lost == 1 && f.late == 1 && f.received == 0 && f.duplicate == 1)
  }

  @Test func corruptEchoIsCounted() throws {
    let vm = Workload(
      name: "c", ip: vmIP, spec: WorkloadSpec(flows: [.udpEcho(server: serverA, srcPort: 1, ratePerSec: 1)]), seed: 1)
    var sent: [[UInt8]] = []
    var t: UInt64 = 0
    while sent.isEmpty, t < 2 * second {
      sent = collect { vm.tick(now: t, emit: $0) }
      t += ms
    }
    let parsed = try PacketParser.parse(try #require(sent.first))
    var payload = Array(sent[0][(parsed.headerLength + 8)...])
    payload[20] ^= 0xFF
    let reply = PacketBuilder.udp(source: serverA, destination: vmIP, sourcePort: 7, destinationPort: 1, payload: payload)
    reply.withUnsafeBytes { vm.receive($0, now: t) { _ in } }
    let f = try #require(vm.report(now: t).flows.first)
    #expect(f.corrupt == 1 && f.received == 0 && f.inFlight == 1)
  }

  @Test func strangersAndGarbageAreCountedNeverCrash() {
    let vm = Workload(name: "u", ip: vmIP, spec: .labDefault(), seed: 3)
    let other = PacketBuilder.udp(source: serverA, destination: ip("10.0.0.3"), sourcePort: 7, destinationPort: 40_000)
    let noFlow = PacketBuilder.udp(source: serverA, destination: vmIP, sourcePort: 7, destinationPort: 33_333)
    for p in [other, noFlow] { p.withUnsafeBytes { vm.receive($0, now: 0) { _ in } } }
    var rng = SeededRNG(seed: 99)
    var emitted = 0
    for i in 0..<2_000 {
      var bytes = (0..<Int.random(in: 0...60, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
      if i % 2 == 0, bytes.count > 20 { bytes[0] = 0x45 }
      bytes.withUnsafeBytes { vm.receive($0, now: 0) { _ in emitted += 1 } }
    }
    let r = vm.report(now: 0)
    #expect(r.unexpectedPackets == 2)
    #expect(r.malformedPackets >= 1_900)
    #expect(emitted == 0)
  }

  @Test func stopQuiescesAndDrains() {
    let lab = Lab(spec: .labDefault())
    lab.run(until: 3 * second)
    lab.vm.stop(now: lab.now)
    lab.run(until: 8 * second)
    #expect(lab.vm.drained)
    let before = lab.upCount
    lab.run(until: 10 * second)
    #expect(lab.upCount == before)
    #expect(lab.vm.report(now: lab.now).stopped)
  }

  @Test func specAndReportAreCodable() throws {
    let spec = WorkloadSpec.labDefault()
    let data = try JSONEncoder().encode(spec)
    #expect(try JSONDecoder().decode(WorkloadSpec.self, from: data) == spec)
    let minimal = Data(#"{"flows":[{"kind":"ping","server":"203.0.113.10","ratePerSecond":5}]}"#.utf8)
    let decoded = try JSONDecoder().decode(WorkloadSpec.self, from: minimal)
    #expect(decoded.flows.first?.kind == .ping && decoded.lossTimeout == 1_000_000_000)
    let bad = Data(#"{"flows":[{"kind":"ping","server":"10.0.0","ratePerSecond":5}]}"#.utf8)
    #expect(throws: DecodingError.self) { try JSONDecoder().decode(WorkloadSpec.self, from: bad) }

    let lab = Lab(spec: spec)
    lab.run(until: 2 * second)
    lab.vm.markPhase("x", now: lab.now)
    lab.run(until: 3 * second)
    let report = lab.vm.report(now: lab.now)
    let back = try JSONDecoder().decode(WorkloadReport.self, from: try JSONEncoder().encode(report))
    #expect(back == report)
    #expect(report.phases.count == 2 && report.phases[0].endedAt == 2 * second)
  }

  @Test func deterministicForASeed() {
    func run(_ seed: UInt64) -> WorkloadReport {
      let lab = Lab(spec: .labDefault(), seed: seed)
      lab.drop = { _, _, n in n % 7 == 0 }
      lab.run(until: 3 * second)
      return lab.vm.report(now: lab.now)
    }
    #expect(run(5) == run(5))
  }

  @Test func icmpErrorsAreChargedToTheFlow() throws {
    // 203.0.113.30 has no UDP echo: every datagram draws a port unreachable and counts lost.
    let lab = Lab(spec: WorkloadSpec(flows: [.udpEcho(server: serverC, srcPort: 1_234, ratePerSec: 10)]))
    let r = lab.finish(stopAt: 2 * second, end: 4 * second)
    let f = try #require(r.flows.first)
    #expect(f.sent >= 19 && f.icmpErrors == f.sent && f.lost == f.sent && f.received == 0)
    #expect(r.unexpectedPackets == 0)
  }
}
