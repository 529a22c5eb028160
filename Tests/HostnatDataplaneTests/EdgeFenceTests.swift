import Foundation
import HostnatAddressing
@testable import HostnatDataplane
import HostnatPackets
import HostnatTestSupport
import Testing

/// An edge answering with `EchoServers`, three hosts on loopback (C owns nothing), and routes:
/// natA 1024..<1088 and 192.0.2.50 (1:1) to A, natA 2000..<2064 and 192.0.2.51 to B.
final class FenceRig {
  static let externalA = IPv4Address(192, 0, 2, 50)
  static let externalB = IPv4Address(192, 0, 2, 51)
  let hostA: UDPSocket
  let hostB: UDPSocket
  let hostC: UDPSocket
  let edgeSocket: UDPSocket
  let edge: EdgeDataplane<EchoServers>

  init(routed: Bool = true) throws {
    hostA = try bindLoopback()
    hostB = try bindLoopback()
    hostC = try bindLoopback()
    edgeSocket = try bindLoopback()
    edge = EdgeDataplane(socket: edgeSocket, servers: EchoServers())
    if routed {
      try edge.setRoutes(
        [
          EdgeRoute(natIP: natA, firstPort: 1024, count: 64, host: hostA.localAddress),
          EdgeRoute(natIP: natA, firstPort: 2000, count: 64, host: hostB.localAddress),
        ], externalIPs: [Self.externalA: hostA.localAddress, Self.externalB: hostB.localAddress])
    }
    edge.start()
  }

  deinit {
    edge.stop()
    closeAll(hostA, hostB, hostC, edgeSocket)
  }

  /// Sends `inner` from `host` and waits until the edge has taken it (its `received` count).
  func send(_ inner: [UInt8], from host: UDPSocket) throws {
    let before = edge.stats().received
    try host.send(Underlay.encapsulate(inner, vni: Underlay.internetVNI), to: edgeSocket.localAddress)
    #expect(eventually { edge.stats().received > before })
  }

  var served: Int { edge.withServers { $0.received } }

  /// Nothing reached any host (a short wait: only used after the edge took the packets).
  func nothingDelivered() throws -> Bool {
    try [hostA, hostB, hostC].allSatisfy { try receive($0, within: .milliseconds(100)).isEmpty }
  }
}

/// A later fragment of `packet` (offset 8 bytes, no transport header of its own).
func laterFragment(of packet: [UInt8]) -> [UInt8] {
  var p = packet
  p[6] = 0
  p[7] = 1
  return p
}

/// An ICMP error a host's NAT forwards: outer source and quoted destination are NAT IP:port.
func icmpError(from nat: IPv4Address, port: UInt16) -> [UInt8] {
  let received = PacketBuilder.udp(source: server, destination: nat, sourcePort: 53, destinationPort: port)
  return PacketBuilder.icmpError(source: nat, destination: server, type: 3, code: 3, quoting: received)
}

@Suite("Edge fence (R5) and wire ownership recorder", .serialized)
struct EdgeFenceTests {
  @Test("(a) a host sending from its own block is served and answered")
  func ownBlockIsServed() throws {
    let rig = try FenceRig()
    try rig.send(PacketBuilder.udp(source: natA, destination: server, sourcePort: 1030, destinationPort: 7), from: rig.hostA)
    let reply = try receive(rig.hostA)
    try #require(reply.count == 1)
    let p = try innerPacket(reply[0].bytes)
    #expect(p.destination == natA && udpPorts(p)?.1 == 1030)
    try rig.send(PacketBuilder.icmpEcho(source: natA, destination: server, identifier: 1040, sequence: 1), from: rig.hostA)
    let echo = try receive(rig.hostA)
    try #require(echo.count == 1)
    #expect(try innerPacket(echo[0].bytes).transport == .icmpEcho(type: 0, identifier: 1040, sequence: 1))
    // An ICMP error about its own mapping, and a later fragment on an IP it has a block on.
    try rig.send(icmpError(from: natA, port: 1030), from: rig.hostA)
    try rig.send(laterFragment(of: PacketBuilder.udp(source: natA, destination: server, sourcePort: 1030, destinationPort: 7)), from: rig.hostA)
    // B has a block on natA too: its later fragments from natA pass as well.
    try rig.send(laterFragment(of: PacketBuilder.udp(source: natA, destination: server, sourcePort: 2001, destinationPort: 7)), from: rig.hostB)
    #expect(rig.served == 5)
    let s = rig.edge.stats()
    #expect(s.droppedNotOwner == 0 && s.routed == 2 && s.malformed == 0)
    #expect(try receive(rig.hostB, within: .milliseconds(100)).isEmpty)
  }

  @Test("(b) a host sending from another host's block is dropped as NOT_OWNER; nobody gets a reply")
  func otherHostsBlockIsDropped() throws {
    let rig = try FenceRig()
    try rig.send(PacketBuilder.udp(source: natA, destination: server, sourcePort: 2010, destinationPort: 7), from: rig.hostA)
    try rig.send(PacketBuilder.icmpEcho(source: natA, destination: server, identifier: 2020, sequence: 1), from: rig.hostA)
    // An error about B's mapping sent by A, though A has a block on the same IP.
    try rig.send(icmpError(from: natA, port: 2010), from: rig.hostA)
    // C owns nothing at all, not even a block on natA.
    try rig.send(laterFragment(of: PacketBuilder.udp(source: natA, destination: server, sourcePort: 1030, destinationPort: 7)), from: rig.hostC)
    #expect(eventually { rig.edge.stats().droppedNotOwner == 4 })
    #expect(try rig.nothingDelivered())
    #expect(rig.served == 0)
    let s = rig.edge.stats()
    #expect(s.routed == 0 && s.droppedUnowned == 0 && s.sent == 0)
  }

  @Test("(c) an unrouted NAT IP:port is owned by nobody; an edge without routes forwards nothing")
  func unroutedSourceIsDropped() throws {
    let rig = try FenceRig()
    try rig.send(PacketBuilder.udp(source: natA, destination: server, sourcePort: 1500, destinationPort: 7), from: rig.hostA)
    try rig.send(PacketBuilder.udp(source: natB, destination: server, sourcePort: 1030, destinationPort: 7), from: rig.hostA)
    try rig.send(laterFragment(of: PacketBuilder.udp(source: natB, destination: server, sourcePort: 1030, destinationPort: 7)), from: rig.hostA)
    #expect(eventually { rig.edge.stats().droppedNotOwner == 3 })
    #expect(rig.served == 0)
    #expect(try rig.nothingDelivered())

    let bare = try FenceRig(routed: false)
    try bare.send(PacketBuilder.udp(source: natA, destination: server, sourcePort: 1030, destinationPort: 7), from: bare.hostA)
    try bare.send(PacketBuilder.udp(source: FenceRig.externalA, destination: server, sourcePort: 1030, destinationPort: 7), from: bare.hostA)
    #expect(eventually { bare.edge.stats().droppedNotOwner == 2 })
    #expect(bare.served == 0)
    #expect(try bare.nothingDelivered())
  }

  @Test("(d) a 1:1 external IP passes from its owner, any port; from another host it is dropped")
  func oneToOne() throws {
    let rig = try FenceRig()
    try rig.send(PacketBuilder.udp(source: FenceRig.externalA, destination: server, sourcePort: 40000, destinationPort: 7), from: rig.hostA)
    let reply = try receive(rig.hostA)
    try #require(reply.count == 1)
    #expect(try innerPacket(reply[0].bytes).destination == FenceRig.externalA)
    try rig.send(PacketBuilder.udp(source: FenceRig.externalB, destination: server, sourcePort: 40000, destinationPort: 7), from: rig.hostA)
    #expect(eventually { rig.edge.stats().droppedNotOwner == 1 })
    // A protocol without ports: only an address owned as a whole may send it.
    let gre: UInt8 = 47
    try rig.send(PacketBuilder.ipv4(source: FenceRig.externalA, destination: server, protocol: gre, payload: [0, 0, 8, 0]), from: rig.hostA)
    try rig.send(PacketBuilder.ipv4(source: natA, destination: server, protocol: gre, payload: [0, 0, 8, 0]), from: rig.hostA)
    #expect(eventually { rig.edge.stats().droppedNotOwner == 2 })
    #expect(rig.served == 2)
    #expect(try rig.nothingDelivered())
  }

  @Test("(e) hairpin from an owned source to another host's NAT IP:port still works")
  func hairpin() throws {
    let rig = try FenceRig()
    try rig.send(PacketBuilder.udp(source: natA, destination: natA, sourcePort: 1030, destinationPort: 2010), from: rig.hostA)
    let atB = try receive(rig.hostB)
    try #require(atB.count == 1)
    #expect(try innerPacket(atB[0].bytes).source == natA)
    // The reverse direction but from B's source, sent by A: dropped before the hairpin.
    try rig.send(PacketBuilder.udp(source: natA, destination: natA, sourcePort: 2011, destinationPort: 1030), from: rig.hostA)
    #expect(eventually { rig.edge.stats().droppedNotOwner == 1 })
    #expect(try rig.nothingDelivered())
    let s = rig.edge.stats()
    #expect(s.hairpinned == 1 && s.routed == 1 && rig.served == 0)
  }

  @Test("(f) the recorder sees both senders of one NAT IP:port; the checker flags the overlap, not a disjoint handover")
  func recorderSeesBothSenders() throws {
    let rig = try FenceRig()
    let a = rig.hostA.localAddress.description
    let b = rig.hostB.localAddress.description
    // Off by default: nothing recorded.
    try rig.send(PacketBuilder.udp(source: natA, destination: server, sourcePort: 1029, destinationPort: 7), from: rig.hostA)
    #expect(!rig.edge.isRecordingOwnership && rig.edge.ownershipRecord().entries.isEmpty)

    rig.edge.setOwnershipRecording(true, mergeGap: .milliseconds(100))
    #expect(rig.edge.isRecordingOwnership)
    // A and B interleaved on A's 1030: B is dropped by the fence but recorded.
    for host in [rig.hostA, rig.hostB, rig.hostA] {
      try rig.send(PacketBuilder.udp(source: natA, destination: server, sourcePort: 1030, destinationPort: 7), from: host)
    }
    // On 1031: A, then B well after A's last packet plus the merge gap.
    try rig.send(PacketBuilder.udp(source: natA, destination: server, sourcePort: 1031, destinationPort: 7), from: rig.hostA)
    Thread.sleep(forTimeInterval: 0.3)
    try rig.send(PacketBuilder.udp(source: natA, destination: server, sourcePort: 1031, destinationPort: 7), from: rig.hostB)
    // A later fragment has no port: counted, not keyed.
    try rig.send(laterFragment(of: PacketBuilder.udp(source: natA, destination: server, sourcePort: 1030, destinationPort: 7)), from: rig.hostA)

    let log = rig.edge.ownershipRecord()
    #expect(log.entries.map(\.port) == [1030, 1031])
    #expect(log.entries.allSatisfy { $0.natIP == "203.0.113.10" })
    #expect(log.overflow == 0 && log.unkeyed == 1 && log.mergeGapMs == 100)
    let shared = try #require(log.entries.first { $0.port == 1030 })
    #expect(shared.senders == [a, b].sorted())
    let useA = try #require(shared.uses.first { $0.sender == a })
    let useB = try #require(shared.uses.first { $0.sender == b })
    #expect(useA.passedFence && useA.packets == 2 && !useB.passedFence && useB.packets == 1)
    #expect(useA.firstMs <= useB.firstMs && useB.lastMs <= useA.lastMs)
    #expect(useA.firstMs >= log.startedUnixMs && log.startedUnixMs > 1_600_000_000_000)
    let handover = try #require(log.entries.first { $0.port == 1031 })
    #expect(handover.uses.map(\.sender) == [a, b])
    #expect(handover.uses[1].firstMs - handover.uses[0].lastMs >= 200)

    let overlaps = log.overlaps()
    #expect(overlaps.count == 1)
    #expect(overlaps.first.map { ($0.port, $0.senderA, $0.senderB, $0.exact) } ?? (0, "", "", false) == (1030, a, b, true))
    #expect(log.overlaps(passedOnly: true).isEmpty, "the fence kept B off the wire")
    let summaries = log.senderSummaries()
    #expect(summaries.map(\.sender) == [a, b].sorted())
    #expect(summaries.first { $0.sender == b }.map { ($0.keys, $0.packetsPassed, $0.packetsDropped) } ?? (0, 9, 9) == (2, 0, 2))
    #expect(log.sharedEntries.count == 2)

    // The log survives JSON (the edge writes it, the lab reads it).
    let decoded = try JSONDecoder().decode(WireOwnershipLog.self, from: JSONEncoder().encode(log))
    #expect(decoded == log)

    // Stopped: the log is kept and no longer grows; started again: a fresh log.
    rig.edge.setOwnershipRecording(false)
    try rig.send(PacketBuilder.udp(source: natA, destination: server, sourcePort: 1032, destinationPort: 7), from: rig.hostA)
    #expect(rig.edge.ownershipRecord() == log)
    rig.edge.setOwnershipRecording(true)
    #expect(rig.edge.ownershipRecord().entries.isEmpty)
    #expect(rig.edge.stats().ownershipRecorderOverflow == 0)
  }

  @Test("recorder bounds: same-sender uses merge when a key is full, distinct senders are dropped and counted, keys are capped")
  func recorderBounds() {
    let a = SocketAddress(ip: loopback, port: 1)
    let b = SocketAddress(ip: loopback, port: 2)
    let c = SocketAddress(ip: loopback, port: 3)
    var r = WireOwnershipRecorder(mergeGap: 10, maxKeys: 2, maxUsesPerKey: 2, loopNow: 0, wallNow: 0)
    let ip = natA.value
    // Within the gap: one use; beyond it: a new one.
    #expect(r.record(ip: ip, port: 1, sender: a, passed: true, now: 100) == 0)
    #expect(r.record(ip: ip, port: 1, sender: a, passed: true, now: 110) == 0)
    #expect(r.record(ip: ip, port: 1, sender: a, passed: true, now: 200) == 0)
    #expect(r.keys[UInt64(ip) << 16 | 1]?.uses.map { [$0.first, $0.last, $0.packets] } == [[100, 110, 2], [200, 200, 1]])
    // Full: a's two uses fold into one (marked merged) to make room for b.
    #expect(r.record(ip: ip, port: 1, sender: b, passed: false, now: 300) == 0)
    let merged = r.keys[UInt64(ip) << 16 | 1]?.uses
    #expect(merged?.map(\.sender) == [a, b] && merged?[0].first == 100 && merged?[0].last == 200 && merged?[0].merged == 1)
    // Full of distinct senders: the oldest (a, 3 packets) is dropped and counted.
    #expect(r.record(ip: ip, port: 1, sender: c, passed: true, now: 400) == 3)
    #expect(r.keys[UInt64(ip) << 16 | 1]?.uses.map(\.sender) == [b, c])
    #expect(r.record(ip: ip, port: 2, sender: a, passed: true, now: 500) == 0)
    #expect(r.record(ip: ip, port: 3, sender: a, passed: true, now: 500) == 1, "key limit")
    #expect(r.overflow == 4 && r.keys.count == 2)
    let log = r.log()
    #expect(log.overflow == 4 && log.entries.map(\.port) == [1, 2])

    // A sender's own open use is extended across another's packet, so alternating senders overlap.
    var alternating = WireOwnershipRecorder(mergeGap: 10, maxKeys: 8, maxUsesPerKey: 8, loopNow: 0, wallNow: 0)
    for (sender, now) in [(a, UInt64(0)), (b, 3), (a, 6)] {
      #expect(alternating.record(ip: ip, port: 1, sender: sender, passed: true, now: now) == 0)
    }
    #expect(alternating.keys[UInt64(ip) << 16 | 1]?.uses.map { [$0.first, $0.last, $0.packets] } == [[0, 6, 2], [3, 3, 1]])
    // A different fence outcome for the same sender is a use of its own.
    #expect(alternating.record(ip: ip, port: 1, sender: a, passed: false, now: 7) == 0)
    #expect(alternating.keys[UInt64(ip) << 16 | 1]?.uses.count == 3)
  }

  @Test("source keys mirror the return path's routing ports")
  func sourceKeys() {
    func key(_ packet: [UInt8]) -> InnerPacket.SourceKey {
      var p = packet
      return p.withUnsafeMutableBytes { InnerPacket.sourceKey($0) }
    }
    #expect(key(PacketBuilder.udp(source: natA, destination: server, sourcePort: 1030, destinationPort: 7)) == .port(1030))
    #expect(key(PacketBuilder.tcp(source: natA, destination: server, sourcePort: 1031, destinationPort: 80, flags: .syn)) == .port(1031))
    #expect(key(PacketBuilder.icmpEcho(source: natA, destination: server, identifier: 1040, sequence: 1)) == .port(1040))
    #expect(key(icmpError(from: natA, port: 1050)) == .port(1050))
    let echoReply = PacketBuilder.icmpEcho(source: server, destination: natA, type: ICMPType.echoReply, identifier: 1060, sequence: 1)
    #expect(key(PacketBuilder.icmpError(source: natA, destination: server, type: 11, code: 0, quoting: echoReply)) == .port(1060))
    #expect(key(laterFragment(of: PacketBuilder.udp(source: natA, destination: server, sourcePort: 1030, destinationPort: 7))) == .laterFragment)
    #expect(key(PacketBuilder.ipv4(source: natA, destination: server, protocol: 47, payload: [0, 0, 8, 0])) == .portless)
    var badLength = PacketBuilder.udp(source: natA, destination: server, sourcePort: 1030, destinationPort: 7)
    badLength[3] = 255
    #expect(key(badLength) == .malformed)
  }

  @Test("stats decode without the fence counters (older status files)")
  func statsDecoding() throws {
    let old = try JSONDecoder().decode(EdgeDataplaneStats.self, from: Data(#"{"received":5}"#.utf8))
    #expect(old.received == 5 && old.droppedNotOwner == 0 && old.ownershipRecorderOverflow == 0)
    var stats = EdgeDataplaneStats()
    stats.droppedNotOwner = 3
    stats.ownershipRecorderOverflow = 4
    #expect(try JSONDecoder().decode(EdgeDataplaneStats.self, from: JSONEncoder().encode(stats)) == stats)
  }
}

/// The checker on hand-built logs: every case's expected overlaps, as (sender A, sender B, ms).
@Suite("Wire ownership checker")
struct WireOwnershipCheckerTests {
  struct Case: Sendable, CustomTestStringConvertible {
    var name: String
    var entries: [WireOwnershipLog.Entry]
    var tolerance: Int64 = 0
    var passedOnly = false
    var expected: [String]
    var testDescription: String { name }
  }

  static func use(_ sender: String, _ first: Int64, _ last: Int64, passed: Bool = true) -> WireOwnershipLog.Use {
    WireOwnershipLog.Use(sender: sender, firstMs: first, lastMs: last, packets: 1, passedFence: passed)
  }

  static func entry(_ port: UInt16 = 1030, _ uses: WireOwnershipLog.Use...) -> WireOwnershipLog.Entry {
    WireOwnershipLog.Entry(natIP: "203.0.113.10", port: port, uses: uses)
  }

  static let cases: [Case] = [
    Case(name: "empty log", entries: [], expected: []),
    Case(name: "one sender", entries: [entry(1030, use("A", 0, 10))], expected: []),
    Case(name: "touching intervals count", entries: [entry(1030, use("A", 0, 10), use("B", 10, 20))], expected: ["A B 0"]),
    Case(name: "touching accepted with tolerance 1", entries: [entry(1030, use("A", 0, 10), use("B", 10, 20))], tolerance: 1, expected: []),
    Case(name: "identical intervals", entries: [entry(1030, use("A", 5, 9), use("B", 5, 9))], expected: ["A B 4"]),
    Case(name: "same sender twice is no overlap", entries: [entry(1030, use("A", 0, 10), use("A", 5, 15))], expected: []),
    Case(name: "disjoint", entries: [entry(1030, use("A", 0, 10), use("B", 11, 20))], expected: []),
    Case(name: "near miss with negative tolerance", entries: [entry(1030, use("A", 0, 10), use("B", 11, 20))], tolerance: -1, expected: ["A B -1"]),
    Case(name: "nested", entries: [entry(1030, use("A", 0, 100), use("B", 10, 20))], expected: ["A B 10"]),
    Case(name: "overlap shorter than tolerance accepted", entries: [entry(1030, use("A", 0, 100), use("B", 10, 20))], tolerance: 11, expected: []),
    Case(
      name: "three senders, B and C apart", entries: [entry(1030, use("A", 0, 10), use("B", 5, 6), use("C", 8, 30))],
      expected: ["A B 1", "A C 2"]),
    Case(name: "unsorted uses", entries: [entry(1030, use("B", 5, 6), use("A", 0, 10))], expected: ["A B 1"]),
    Case(name: "different ports never overlap", entries: [entry(1030, use("A", 0, 10)), entry(1031, use("B", 0, 10))], expected: []),
    Case(name: "a dropped attempt counts by default", entries: [entry(1030, use("A", 0, 10), use("B", 5, 6, passed: false))], expected: ["A B 1"]),
    Case(
      name: "passedOnly ignores what the fence dropped", entries: [entry(1030, use("A", 0, 10), use("B", 5, 6, passed: false))],
      passedOnly: true, expected: []),
    Case(
      name: "passedOnly keeps what went on the wire", entries: [entry(1030, use("A", 0, 10), use("B", 5, 6))], passedOnly: true,
      expected: ["A B 1"]),
  ]

  @Test(arguments: cases)
  func overlaps(_ c: Case) {
    let log = WireOwnershipLog(startedUnixMs: 0, entries: c.entries)
    let found = log.overlaps(tolerance: c.tolerance, passedOnly: c.passedOnly)
    #expect(found.map { "\($0.senderA) \($0.senderB) \($0.overlapMs)" } == c.expected)
    #expect(found.allSatisfy { $0.natIP == "203.0.113.10" && $0.port == 1030 && $0.exact })
  }

  @Test func mergedUsesAreMarkedInexact() {
    var widened = Self.use("A", 0, 100)
    widened.merged = 2
    let found = WireOwnershipLog(startedUnixMs: 0, entries: [Self.entry(1030, widened, Self.use("B", 50, 60))]).overlaps()
    #expect(found.count == 1 && found.first?.exact == false)
  }
}
